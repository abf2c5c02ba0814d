"""The experiment review: params, metrics and plots of a branch against its base."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from bench.workspace import copy_workspace, set_params, stages_run
from fmnist.review import (
    MetricsTable,
    Plot,
    ReviewError,
    Row,
    format_change,
    format_number,
    metric_cells,
    metrics_tables,
    params_rows,
    render_plots,
    render_review,
    review_directory,
    slug,
)
from tests.helpers import dvc, git, run

SIGNATURES = {".png": b"\x89PNG\r\n\x1a\n", ".svg": b"<svg"}
TINY_SPEC = {
    "data": {"values": [{"step": 0, "loss": 1.0, "rev": "main"}]},
    "mark": "line",
    "encoding": {"x": {"field": "step", "type": "quantitative"}},
}


def assert_image(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes().startswith(SIGNATURES[path.suffix]), path


# --- formatting and tables, on in-memory data -------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.88984, "0.8898"), (30, "30"), (12345, "12,345"), (0.0000123, "1.23e-05"), (None, "—")],
)
def test_format_number_rounds_for_reading(value: object, expected: str) -> None:
    assert format_number(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(-0.03980000000000006, "-0.0398"), (0.012, "+0.0120"), (2, "+2"), (0, "0"), (None, "—")],
)
def test_format_change_shows_the_sign(value: object, expected: str) -> None:
    assert format_change(value) == expected


def test_slug_names_image_files() -> None:
    assert slug("Confusion matrix") == "confusion-matrix"
    assert slug("plots/report/curves.png") == "plots-report-curves"


def test_per_class_metrics_are_named_by_class() -> None:
    diff = {
        "metrics/evaluate.json": {
            "accuracy": {"old": 0.8898, "new": 0.85, "diff": -0.0398},
            "per_class.T-shirt/top.recall": {"old": 0.834, "new": 0.8, "diff": -0.034},
        }
    }
    [table] = metrics_tables(diff)
    assert table.rows == [Row("accuracy", 0.8898, 0.85, -0.0398)]
    assert table.per_class == [("T-shirt/top", Row("recall", 0.834, 0.8, -0.034))]


def test_markdown_has_old_new_and_change_columns() -> None:
    params = params_rows({"params.yaml": {"train.hidden_units": {"old": [16], "new": [32, 16]}}})
    metrics = [
        MetricsTable(
            "metrics/evaluate.json",
            [Row("accuracy", 0.8898, 0.85, -0.0398)],
            [("Shirt", Row("f1", 0.7096, 0.65, -0.0596))],
        )
    ]
    plots = [
        Plot("Loss", True, {"both": "images/loss.png"}),
        Plot("plots/a.png", True, {"old": "images/a-old.png", "new": "images/a-new.png"}),
        Plot("plots/b.png", False, {"both": "images/b.png"}),
    ]
    markdown = render_review("`main`", "`workspace`", params, metrics, plots)
    assert "| train.hidden_units | [16] | [32, 16] |" in markdown
    assert "| metric | old | new | change |" in markdown
    assert "| accuracy | 0.8898 | 0.8500 | -0.0398 |" in markdown
    assert "| Shirt | f1 | 0.7096 | 0.6500 | -0.0596 |" in markdown
    assert "| ![old](images/a-old.png) | ![new](images/a-new.png) |" in markdown
    assert "![Loss](images/loss.png)" in markdown
    assert "Unchanged: [plots/b.png](images/b.png)." in markdown


def test_nothing_changed_says_so() -> None:
    markdown = render_review("`main`", "`workspace`", [], [], [])
    assert "No param changed." in markdown
    assert "No metric changed." in markdown
    assert "No plot changed." in markdown


def test_a_plot_missing_in_the_reviewed_revision_is_an_error(tmp_path: Path) -> None:
    plots = {
        "errors": [
            {"name": "Loss", "rev": "workspace", "source": "plots/loss.tsv", "type": "x"},
        ],
        "data": {"Loss": [{"type": "vega", "revisions": ["main"], "content": TINY_SPEC}]},
    }
    with pytest.raises(
        ReviewError, match=re.escape("'Loss' is declared in dvc.yaml but plots/loss.tsv")
    ):
        render_plots(plots, "main", "workspace", tmp_path / "images", "png")


def test_plots_are_rendered_and_image_plots_put_side_by_side(tmp_path: Path) -> None:
    old, new = tmp_path / "old.png", tmp_path / "new.png"
    old.write_bytes(SIGNATURES[".png"] + b"old")
    new.write_bytes(SIGNATURES[".png"] + b"new")
    plots = {
        "data": {
            "Loss": [{"type": "vega", "revisions": ["workspace", "main"], "content": TINY_SPEC}],
            "plots/a.png": [
                {"type": "image", "revisions": ["workspace"], "url": str(new)},
                {"type": "image", "revisions": ["main"], "url": str(old)},
            ],
        }
    }
    loss, image = render_plots(plots, "main", "workspace", tmp_path / "images", "svg")
    assert loss == Plot("Loss", True, {"both": "images/loss.svg"})
    sides = {"old": "images/plots-a-old.png", "new": "images/plots-a-new.png"}
    assert image == Plot("plots/a.png", True, sides)
    for name in ("loss.svg", "plots-a-old.png", "plots-a-new.png"):
        assert_image(tmp_path / "images" / name)


def test_an_earlier_review_is_replaced_but_nothing_else(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ReviewError, match=re.escape("notes.txt")), review_directory(out):
        pass
    (out / "notes.txt").unlink()
    (out / "report.md").write_text("old review")
    with review_directory(out):
        pass
    assert not (out / "report.md").exists()


# --- end to end: a branch with train.activation=sigmoid against main ---------------------------


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory, baseline_repository: Path) -> Path:
    """The baseline repository with a branch that ran and committed a sigmoid activation."""
    repository = copy_workspace(baseline_repository, tmp_path_factory.mktemp("review") / "repo")
    git("checkout", "-q", "-b", "sigmoid", cwd=repository)
    set_params(repository, {"train.activation": "sigmoid"})
    assert stages_run(dvc("repro", cwd=repository).stdout) == {"train", "evaluate", "report"}
    git("add", "-A", cwd=repository)
    git("commit", "-q", "-m", "sigmoid", cwd=repository)
    return repository


@pytest.fixture(scope="module")
def report(experiment: Path) -> str:
    """The review of the workspace (the branch as committed) against main."""
    run([sys.executable, "-m", "fmnist.review", "--base", "main"], experiment)
    assert "review/" in (experiment / ".gitignore").read_text()
    return (experiment / "review" / "report.md").read_text()


@pytest.mark.slow
def test_review_shows_the_changed_param(report: str) -> None:
    assert "| train.activation | relu | sigmoid |" in report
    assert "epochs" not in report.split("### Metrics")[0]  # unchanged params stay out


@pytest.mark.slow
def test_review_shows_old_new_and_change_of_the_metrics(experiment: Path, report: str) -> None:
    diff = json.loads(dvc("metrics", "diff", "main", "--json", cwd=experiment).stdout)
    changes = diff["metrics/evaluate.json"]

    def cells(key: str) -> str:
        change = changes[key]
        return " | ".join(metric_cells(Row(key, change["old"], change["new"], change["diff"])))

    assert f"| accuracy | {cells('accuracy')} |" in report
    assert re.match(r"0\.\d{4}$", format_number(changes["accuracy"]["new"]))
    for key in [key for key in changes if key.startswith("per_class.")]:
        name, metric = key.removeprefix("per_class.").rsplit(".", 1)
        assert f"| {name} | {metric} | {cells(key)} |" in report


@pytest.mark.slow
def test_review_renders_every_declared_plot(experiment: Path, report: str) -> None:
    declared = yaml.safe_load((experiment / "dvc.yaml").read_text())["plots"]
    names = [next(iter(plot)) if isinstance(plot, dict) else plot for plot in declared]
    links = re.findall(r"\]\((images/[^)]+)\)", report)
    for name in names:
        assert f"{name}]" in report or f"**{name}**" in report, name
    assert len(links) >= len(names)
    for link in links:
        assert_image(experiment / "review" / link)
    # The training curves and the confusion matrix changed: shown, not just linked.
    for name in ("Loss", "Accuracy", "Confusion matrix"):
        assert f"**{name}**" in report
    assert "| ![old](images/plots-report-confusion-old.png) |" in report


@pytest.mark.slow
def test_review_of_a_missing_plot_fails_with_one_line(experiment: Path, report: str) -> None:
    (experiment / "plots/samples.png").unlink()
    try:
        result = run(
            [sys.executable, "-m", "fmnist.review", "--out", "other"], experiment, check=False
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
        [sys.executable, "-m", "fmnist.review", "--base", "no-such-branch"], experiment, check=False
    )
    assert result.returncode == 1
    assert "unknown Git revision 'no-such-branch'" in result.stderr
    assert "Traceback" not in result.stderr
