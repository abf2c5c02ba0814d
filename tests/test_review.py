"""The experiment review: params, metrics and plots of a branch against its base."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import copy_workspace, dvc, git, run, run_block, shell_blocks, stages_run
from tools.review import (
    CLASS_METRICS,
    CLASSES_FILE,
    CONFUSED_PAIRS_FILE,
    ReviewError,
    change_cell,
    check_earlier_review,
    class_rows,
    pair_rows,
    plot_sections,
    slug,
)

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
SIGNATURES = {".png": b"\x89PNG\r\n\x1a\n", ".svg": b"<svg"}
TINY_SPEC = {
    "data": {"values": [{"step": 0, "loss": 1.0, "rev": "main"}]},
    "mark": "line",
    "encoding": {"x": {"field": "step", "type": "quantitative"}},
}


def assert_image(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes().startswith(SIGNATURES[path.suffix]), path


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of every markdown table row, stripped of dvc's padding."""
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in markdown.splitlines()
        if line.startswith("|")
    ]


# --- what DVC lacks, on in-memory data --------------------------------------------------------


def test_the_files_read_are_the_ones_dvc_yaml_declares() -> None:
    stages = yaml.safe_load((REPOSITORY_ROOT / "dvc.yaml").read_text())["stages"]
    plots = [next(iter(entry)) for entry in stages["evaluate"]["plots"]]
    assert CLASSES_FILE in plots
    assert CONFUSED_PAIRS_FILE in plots


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [(0.834, 0.8, "0.8340 → 0.8000"), (0.8, 0.80001, "0.8000"), (None, 0.8, "0.8000")],
)
def test_change_cell_shows_old_and_new_only_where_they_differ(
    old: float | None, new: float, expected: str
) -> None:
    assert change_cell(old, new) == expected


def test_per_class_metrics_are_folded_by_class() -> None:
    old = [{"class": "Shirt", "precision": 0.6, "recall": 0.7, "f1": 0.65}]
    new = [
        {"class": "Shirt", "precision": 0.5, "recall": 0.7, "f1": 0.6},
        {"class": "Bag", "precision": 0.9, "recall": 0.9, "f1": 0.9},
    ]
    assert class_rows(old, new) == [
        ["Shirt", "0.6000 → 0.5000", "0.7000", "0.6500 → 0.6000"],
        ["Bag", "0.9000", "0.9000", "0.9000"],
    ]
    assert CLASS_METRICS == ("precision", "recall", "f1")


def test_confused_pairs_show_old_and_new_counts() -> None:
    old = [{"pair": "Shirt as Coat", "count": 120}, {"pair": "Coat as Shirt", "count": 80}]
    new = [{"pair": "Shirt as T-shirt/top", "count": 1500}, {"pair": "Shirt as Coat", "count": 90}]
    assert pair_rows(old, new) == [
        ["Shirt as T-shirt/top", "—", "1,500", "—"],
        ["Shirt as Coat", "120", "90", "-30"],
        ["Coat as Shirt", "80", "—", "—"],
    ]
    assert pair_rows(None, new[1:]) == [["Shirt as Coat", "—", "90", "—"]]


def test_slug_names_image_files() -> None:
    assert slug("Confusion matrix") == "confusion-matrix"
    assert slug("Per-class F1 (test set)") == "per-class-f1-test-set"


@pytest.mark.parametrize("image_format", ["png", "svg"])
def test_plots_are_drawn_and_image_plots_put_side_by_side(
    tmp_path: Path, image_format: str
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    files = {}
    for name in ("main_a.png", "workspace_a.png", "main_b.png", "workspace_b.png"):
        files[name] = images / name
        files[name].write_bytes(SIGNATURES[".png"] + name.encode())
    files["main_b.png"].write_bytes(files["workspace_b.png"].read_bytes())

    def image(name: str, revision: str) -> dict:
        return {"type": "image", "revisions": [revision], "url": str(files[name])}

    plots = {
        "data": {
            "Loss": [{"type": "vega", "revisions": ["workspace", "main"], "content": TINY_SPEC}],
            "plots/a.png": [image("workspace_a.png", "workspace"), image("main_a.png", "main")],
            "plots/b.png": [image("workspace_b.png", "workspace"), image("main_b.png", "main")],
            "plots/new.png": [image("workspace_b.png", "workspace")],
            "metrics/train/plots/metrics": [],
        }
    }
    markdown = "\n".join(plot_sections(plots, "main", "workspace", images, image_format))
    assert f"![Loss](images/01-loss.{image_format})" in markdown
    assert_image(images / f"01-loss.{image_format}")
    assert "| ![old](images/main_a.png) | ![new](images/workspace_a.png) |" in markdown
    assert "**plots/b.png** (unchanged)\n\n![plots/b.png](images/workspace_b.png)" in markdown
    assert "**plots/new.png** (not in the base)" in markdown
    assert "metrics/train/plots/metrics" not in markdown


def test_a_plot_missing_in_the_reviewed_revision_is_an_error(tmp_path: Path) -> None:
    plots = {
        "errors": [
            {"name": "Loss", "rev": "main", "source": "plots/old.tsv", "type": "x"},
            {"name": "Loss", "rev": "workspace", "source": "plots/loss.tsv", "type": "x"},
        ],
        "data": {"Loss": [{"type": "vega", "revisions": ["main"], "content": TINY_SPEC}]},
    }
    message = "plot 'Loss' is declared in dvc.yaml but plots/loss.tsv is missing in workspace"
    with pytest.raises(ReviewError, match=f"^{re.escape(message)}$"):
        plot_sections(plots, "main", "workspace", tmp_path, "png")
    del plots["errors"][1]  # missing in the base only: a new plot
    assert plot_sections(plots, "main", "workspace", tmp_path, "png")[0] == "**Loss**"


def test_an_earlier_review_may_be_replaced_but_nothing_else(tmp_path: Path) -> None:
    out = tmp_path / "out"
    check_earlier_review(out)
    out.mkdir()
    (out / "report.md").write_text("old review")
    (out / "images").mkdir()
    check_earlier_review(out)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ReviewError, match=re.escape("not a review (notes.txt)")):
        check_earlier_review(out)


# --- end to end: a branch with train.activation=sigmoid against main ---------------------------


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory, baseline_repository: Path) -> Path:
    """The baseline repository after docs/reviewing.md's block: a branch that ran and committed
    a sigmoid activation, and its review against main."""
    repository = copy_workspace(baseline_repository, tmp_path_factory.mktemp("review") / "repo")
    ((_, block),) = shell_blocks("docs/reviewing.md")
    assert stages_run(run_block(block, repository).stdout) == {"train", "evaluate", "report"}
    return repository


@pytest.fixture(scope="module")
def report(experiment: Path) -> str:
    """The review of the workspace (the branch as committed) against main."""
    assert "review/" in (experiment / ".gitignore").read_text()
    return (experiment / "review" / "report.md").read_text()


def read_at(repository: Path, revision: str, path: str) -> list[dict]:
    return json.loads(git("show", f"{revision}:{path}", cwd=repository))


@pytest.mark.slow
def test_review_shows_the_changed_param(report: str) -> None:
    params = table_rows(report.split("### Metrics")[0])
    assert params[0] == ["Path", "Param", "main", "workspace"]
    assert params[2:] == [["params.yaml", "train.activation", "relu", "sigmoid"]]


@pytest.mark.slow
def test_review_shows_old_new_and_change_of_the_metrics(experiment: Path, report: str) -> None:
    diff = json.loads(dvc("metrics", "diff", "main", "--json", cwd=experiment).stdout)
    rows = {(row[0], row[1]): row[2:] for row in table_rows(report.split("### Per class")[0])}
    assert "metrics/train/metrics.json" in diff
    for path, changes in diff.items():
        for key, change in changes.items():
            old, new, difference = (float(cell) for cell in rows[path, key])
            assert old == pytest.approx(change["old"], abs=1e-4)
            assert new == pytest.approx(change["new"], abs=1e-4)
            assert difference == pytest.approx(change["diff"], abs=1e-4)


@pytest.mark.slow
def test_review_folds_the_per_class_metrics_by_class(experiment: Path, report: str) -> None:
    old, new = (read_at(experiment, revision, CLASSES_FILE) for revision in ("main", "HEAD"))
    section = report.split("### Per class")[1].split("###")[0]
    assert table_rows(section)[2:] == class_rows(old, new)
    assert "→" in section  # a sigmoid network on two epochs changes some class


@pytest.mark.slow
def test_review_shows_the_confused_pairs_old_and_new(experiment: Path, report: str) -> None:
    old, new = (read_at(experiment, revision, CONFUSED_PAIRS_FILE) for revision in ("main", "HEAD"))
    section = report.split("### Most confused pairs")[1].split("###")[0]
    assert table_rows(section)[2:] == pair_rows(old, new)


@pytest.mark.slow
def test_review_draws_every_declared_plot(experiment: Path, report: str, tmp_path: Path) -> None:
    arguments = ["plots", "diff", "main", "--json", "--out", str(tmp_path)]
    plots = json.loads(dvc(*arguments, cwd=experiment).stdout)["data"]
    for name in (name for name, entries in plots.items() if entries):
        assert f"**{name}**" in report, name
    stages = yaml.safe_load((experiment / "dvc.yaml").read_text())["stages"]
    for stage in stages.values():
        for path in (next(iter(entry)) for entry in stage.get("plots") or []):
            assert f"**{path}" in report, path  # a directory: each of its files
    links = re.findall(r"\]\((images/[^)]+)\)", report)
    assert any(link.endswith("_plots_samples.png") for link in links)
    for link in links:
        assert_image(experiment / "review" / link)
    # The report's figures changed with the activation: shown old and new side by side.
    assert "**plots/report/confusion.png**\n\n| old | new |" in report
    assert "| ![old](images/main_plots_report_confusion.png) |" in report


@pytest.mark.slow
def test_review_of_a_revision_against_itself_shows_no_change(
    experiment: Path, tmp_path: Path
) -> None:
    command = [sys.executable, "-m", "tools.review", "--base", "main", "--revision", "main"]
    run([*command, "--out", str(tmp_path / "same"), "--format", "svg"], experiment)
    report = (tmp_path / "same" / "report.md").read_text()
    assert report.startswith("## Experiment review: main against main")
    assert "No param changed." in report
    assert "No metric changed." in report
    assert "→" not in report
    assert "**plots/report/confusion.png** (unchanged)" in report
    svg = sorted((tmp_path / "same" / "images").glob("*.svg"))
    assert svg
    for path in svg:
        assert_image(path)


@pytest.mark.slow
def test_review_of_a_missing_plot_fails_with_one_line(experiment: Path, report: str) -> None:
    (experiment / "plots/samples.png").unlink()
    try:
        result = run(
            [sys.executable, "-m", "tools.review", "--out", "other"], experiment, check=False
        )
    finally:
        git("checkout", "plots/samples.png", cwd=experiment)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "review: error: plot 'plots/samples.png' is declared in dvc.yaml but plots/samples.png "
        "is missing in workspace"
    )
    assert not (experiment / "other").exists()


@pytest.mark.slow
def test_review_of_an_unknown_base_fails_clearly(experiment: Path) -> None:
    result = run(
        [sys.executable, "-m", "tools.review", "--base", "no-such-branch"], experiment, check=False
    )
    assert result.returncode == 1
    assert "unknown Git revision 'no-such-branch'" in result.stderr
    assert "Traceback" not in result.stderr
