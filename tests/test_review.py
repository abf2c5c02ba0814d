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
    CURVES,
    ReviewError,
    change_cell,
    check_earlier_review,
    class_rows,
    mermaid_chart,
    pair_rows,
    slug,
    write_plots,
)

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"
TINY_SPEC = {
    "data": {"values": [{"step": 0, "loss": 1.0, "rev": "main"}]},
    "mark": "line",
    "encoding": {"x": {"field": "step", "type": "quantitative"}},
}


def assert_image(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes().startswith(PNG), path


# Mermaid's xychart-beta grammar, for the statements the review writes (mermaid.js.org/syntax/
# xyChart): a title, a categorical x-axis, a y-axis title, then line and bar series.
TEXT = r'"[^"\n]+"'
NUMBER = r"-?(\d+(\.\d*)?|\.\d+)"
XYCHART = {
    "title": re.compile(rf"    title {TEXT}"),
    "x-axis": re.compile(rf"    x-axis( {TEXT})? \[(?P<categories>{TEXT}(, {TEXT})*)\]"),
    "y-axis": re.compile(rf"    y-axis {TEXT}( {NUMBER} --> {NUMBER})?"),
    "series": re.compile(rf"    (line|bar) \[(?P<values>{NUMBER}(, {NUMBER})*)\]"),
}


def mermaid_blocks(markdown: str) -> list[list[str]]:
    return [block.splitlines() for block in re.findall(r"```mermaid\n(.*?)```", markdown, re.S)]


def parse_xychart(lines: list[str]) -> tuple[list[str], list[list[float]]]:
    """The categories and series of a Mermaid xychart-beta block; AssertionError where a line
    breaks the grammar or a series has more values than there are categories."""
    assert lines[0] == "xychart-beta", lines
    title, x_axis, y_axis, *series = lines[1:]
    assert XYCHART["title"].fullmatch(title), title
    assert XYCHART["y-axis"].fullmatch(y_axis), y_axis
    axis = XYCHART["x-axis"].fullmatch(x_axis)
    assert axis, x_axis
    categories = re.findall(r'"([^"]+)"', axis["categories"])
    values = []
    for line in series:
        match = XYCHART["series"].fullmatch(line)
        assert match, line
        values.append([float(value) for value in match["values"].split(", ")])
        assert 0 < len(values[-1]) <= len(categories), line
    assert values, lines
    return categories, values


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


def test_charts_follow_mermaids_xychart_grammar() -> None:
    [block] = mermaid_blocks(
        "\n".join(
            mermaid_chart(
                "F1 per class",
                ["T-shirt/top", "Bag"],
                "F1",
                [("bar", [0.81234, 0.9]), ("line", [0.8, 0.95])],
            )
        )
    )
    assert parse_xychart(block) == (["T-shirt/top", "Bag"], [[0.8123, 0.9], [0.8, 0.95]])
    # A double quote in a branch's name would end Mermaid's text: it becomes a single one.
    [quoted] = mermaid_blocks("\n".join(mermaid_chart('on "a"', ['b"c'], "F1", [("bar", [1])])))
    assert parse_xychart(quoted) == (["b'c"], [[1.0]]) and quoted[1] == "    title \"on 'a'\""
    header, title, x_axis, y_axis = block[:4]
    for broken in (
        [title, '    x-axis ["T-shirt/top", "Bag"', y_axis, "    bar [0.1]"],  # unclosed list
        [title, x_axis, y_axis, "    line [0.1, nan]"],  # not a number
        [title, x_axis, y_axis, "    bar []"],  # an empty series
        [title, x_axis, y_axis, "    bar [0.1, 0.2, 0.3]"],  # more values than categories
        [x_axis, y_axis, "    bar [0.1]"],  # no title
    ):
        with pytest.raises(AssertionError):
            parse_xychart([header, *broken])


def test_vega_plots_are_drawn_beside_the_image_files_dvc_wrote(tmp_path: Path) -> None:
    (tmp_path / "main_plots_a.png").write_bytes(PNG)
    plots = {
        "data": {
            "Loss": [{"type": "vega", "revisions": ["workspace", "main"], "content": TINY_SPEC}]
        }
    }

    assert write_plots(plots, "workspace", tmp_path) == 2
    assert_image(tmp_path / "01-loss.png")


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
        write_plots(plots, "workspace", tmp_path)
    del plots["errors"][1]  # missing in the base only: a new plot
    assert write_plots(plots, "workspace", tmp_path) == 1


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


def read_series(repository: Path, revision: str, path: str) -> list[float]:
    lines = git("show", f"{revision}:{path}", cwd=repository).splitlines()[1:]
    return [round(float(line.split("\t")[-1]), 4) for line in lines]


@pytest.mark.slow
def test_review_charts_the_curves_and_f1_per_class_old_against_new(
    experiment: Path, report: str
) -> None:
    charts = [parse_xychart(block) for block in mermaid_blocks(report)]
    assert len(charts) == len(CURVES) + 1
    for (epochs, lines), path in zip(charts, CURVES.values(), strict=False):
        assert lines == [read_series(experiment, revision, path) for revision in ("main", "HEAD")]
        assert epochs == ["1", "2"]
    classes, (bars, line) = charts[-1]
    old, new = (read_at(experiment, revision, CLASSES_FILE) for revision in ("main", "HEAD"))
    assert classes == [record["class"] for record in new]
    assert bars == [record["f1"] for record in new] and line == [record["f1"] for record in old]
    assert 'title "F1 per class: workspace (bars), main (line)"' in report


@pytest.mark.slow
def test_review_draws_every_declared_plot_for_the_artifact(experiment: Path, report: str) -> None:
    images = experiment / "review" / "images"
    files = sorted(path.name for path in images.iterdir())
    stages = yaml.safe_load((experiment / "dvc.yaml").read_text())["stages"]
    for stage in stages.values():
        for path in (next(iter(entry)) for entry in stage.get("plots") or []):
            if path.endswith(".png"):  # an image plot, old and new
                flat = path.replace("/", "_")
                assert f"main_{flat}" in files and f"workspace_{flat}" in files, path
    for path in images.iterdir():
        assert_image(path)
    assert report.endswith(
        f"Every plot of `dvc plots diff`, old and new ({len(files)} files): `images/` beside "
        "this report.\n"
    )


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
