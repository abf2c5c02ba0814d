"""The review of an experiment against a base: DVC's own comparison, plus what it lacks.

``python -m tools.review --base main`` (``make review``) compares the workspace, or
``--revision REV``, with ``--base REV`` and writes ``review/report.md``, the pull-request
comment, and every plot of ``dvc plots diff`` as image files in ``review/images/``, which the
workflow uploads as an artifact. The comment holds ``dvc params diff --md`` and ``dvc metrics
diff --md``, the validation curves and F1 per class, old against new, as Mermaid charts that
GitHub draws itself (nothing is hosted anywhere), and tables of the per-class metrics and the
most confused pairs: numbers DVC puts on no change inside plot data (docs/reviewing.md).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dvc.api
import vl_convert
from dvc.exceptions import PathMissingError

from fmnist.cli import run_stage
from fmnist.errors import PipelineError
from fmnist.files import atomic_directory
from fmnist.report import HISTORY_SERIES, markdown_table
from tools import dvc_cli

log = logging.getLogger("review")

WORKSPACE = "workspace"  # the name dvc gives the working tree among revisions
# The evaluate stage's plot data, as dvc.yaml declares it.
CLASSES_FILE = "plots/classes.json"
CONFUSED_PAIRS_FILE = "plots/confused_pairs.json"
CLASS_METRICS = ("precision", "recall", "f1")
# The validation curves of the train stage's dvclive directory, as dvc.yaml declares it.
CURVES = {
    "Validation loss": f"metrics/train/{HISTORY_SERIES['val_loss']}",
    "Validation accuracy": f"metrics/train/{HISTORY_SERIES['val_accuracy']}",
}
FIGURES_ARTIFACT = "review-figures"  # the workflow's name for review/images/
REPORT_FILE = "report.md"
IMAGES_DIRECTORY = "images"
PNG_SCALE = 2  # pixels per Vega unit: sharp on high-density screens
NOTHING = "—"


class ReviewError(PipelineError):
    """dvc could not compare the revisions, or a plot is missing or cannot be drawn."""


def run_dvc(arguments: Sequence[str], repository: Path) -> str:
    """What ``dvc <arguments>`` prints in ``repository``; ReviewError if it fails."""
    return dvc_cli.run_dvc(*arguments, cwd=repository, error=ReviewError)


def diff_table(command: str, revisions: Sequence[str], repository: Path) -> str:
    """``dvc params diff --md`` or ``dvc metrics diff --md``; empty when nothing changed."""
    table = run_dvc([command, "diff", *revisions, "--md"], repository).strip()
    return table if len(table.splitlines()) > 2 else ""  # dvc prints a bare header then


# --- what DVC lacks: changes inside plot data, tabulated -------------------------------------


def read_records(path: str, revision: str | None, repository: Path) -> list[dict] | None:
    """The records of a JSON plot file at ``revision`` (None: the workspace); None if absent."""
    try:
        return json.loads(dvc.api.read(path, repo=str(repository), rev=revision))
    except PathMissingError:
        return None


def change_cell(old: float | None, new: float) -> str:
    """``0.8340 → 0.8000``, or the new value alone where it did not change or is new."""
    if old is None or round(old, 4) == round(new, 4):
        return f"{new:.4f}"
    return f"{old:.4f} → {new:.4f}"


def class_rows(old: list[Mapping] | None, new: list[Mapping]) -> list[list[str]]:
    """A row per class of ``new``, in its order: the class, then each of CLASS_METRICS."""
    before = {record["class"]: record for record in old or []}
    rows = []
    for record in new:
        was = before.get(record["class"], {})
        cells = [change_cell(was.get(metric), record[metric]) for metric in CLASS_METRICS]
        rows.append([record["class"], *cells])
    return rows


def pair_rows(old: list[Mapping] | None, new: list[Mapping]) -> list[list[str]]:
    """A row per confused pair: its old and new count and the change.

    The new revision's pairs come first, most confused first, then those only in the base. A
    pair missing on one side was below that side's cut, not absent: its count is unknown.
    """
    before = {record["pair"]: record["count"] for record in old or []}
    after = {record["pair"]: record["count"] for record in new}
    rows = []
    for pair in [*after, *(pair for pair in before if pair not in after)]:
        was, now = before.get(pair), after.get(pair)
        change = NOTHING if was is None or now is None else f"{now - was:+,}"
        counts = [NOTHING if count is None else f"{count:,}" for count in (was, now)]
        rows.append([pair, *counts, change])
    return rows


def plot_data_sections(
    base: str, revision: str | None, repository: Path
) -> tuple[list[str], tuple[list | None, list]]:
    """Markdown for the per-class metrics and the confused pairs, old against new, and the
    per-class records of both revisions. ``dvc plots diff`` puts no number on their changes.
    """
    tables = (
        (CLASSES_FILE, "Per class", ["class", *CLASS_METRICS], class_rows),
        (CONFUSED_PAIRS_FILE, "Most confused pairs", ["pair", "old", "new", "change"], pair_rows),
    )
    lines, read = [], []
    for path, title, header, rows in tables:
        new = read_records(path, revision, repository)
        if new is None:
            raise ReviewError(f"{path} is missing in {revision or WORKSPACE}")
        old = read_records(path, base, repository)
        read.append((old, new))
        note = f" ({path} is not in {base}: new values only)" if old is None else ""
        lines += [
            f"### {title}{note}",
            "",
            *markdown_table(header, rows(old, new), right=range(1, len(header))),
            "",
        ]
    return lines, read[0]


# --- charts that GitHub draws in the comment ------------------------------------------------


def mermaid_chart(title: str, categories: Sequence[object], axis: str, series: list) -> list[str]:
    """A Mermaid ``xychart-beta`` block: ``series`` is (``line`` or ``bar``, values) pairs. A
    double quote, which would end Mermaid's text (a branch may hold one), becomes a single one."""
    title, *labels = ('"' + str(text).replace('"', "'") + '"' for text in (title, *categories))
    data = [
        f"    {kind} [{', '.join(f'{value:.4f}' for value in values)}]" for kind, values in series
    ]
    axes = [f"    x-axis [{', '.join(labels)}]", f'    y-axis "{axis}"']
    return ["```mermaid", "xychart-beta", f"    title {title}", *axes, *data, "```", ""]


def read_series(path: str, revision: str | None, repository: Path) -> list[float] | None:
    """The values of a dvclive TSV series at ``revision`` (None: the workspace); None if absent."""
    try:
        text = dvc.api.read(path, repo=str(repository), rev=revision)
    except PathMissingError:
        return None
    return [float(row[-1]) for row in list(csv.reader(io.StringIO(text), delimiter="\t"))[1:]]


def chart_sections(
    base: str, revision: str | None, repository: Path, classes: tuple[list | None, list]
) -> list[str]:
    """The validation curves per epoch and F1 per class, base then ``revision``, as charts."""
    new = revision or WORKSPACE
    lines = ["### Curves and F1 per class", ""]
    for title, path in CURVES.items():
        series = [
            values
            for values in (read_series(path, rev, repository) for rev in (base, revision))
            if values
        ]
        epochs = range(1, max(map(len, series), default=0) + 1)
        named = f"{title} per epoch: {base} first, {new} second" if len(series) == 2 else title
        lines += mermaid_chart(named, epochs, title.split()[-1], [("line", v) for v in series])
    old, records = classes
    before = {record["class"]: record["f1"] for record in old or []}
    bars = [("bar", [record["f1"] for record in records])]
    if all(record["class"] in before for record in records):
        bars.append(("line", [before[record["class"]] for record in records]))
    title = f"F1 per class: {new} (bars), {base} (line)"
    return lines + mermaid_chart(title, [record["class"] for record in records], "F1", bars)


# --- plots: DVC writes HTML for a browser; the review needs image files ------------------------


def slug(name: str) -> str:
    """A file name for a plot: ``Confusion matrix`` -> ``confusion-matrix``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "plot"


def render_vega_lite(name: str, spec: Mapping[str, Any]) -> bytes:
    """A Vega-Lite spec as PNG bytes, drawn without a browser."""
    try:
        return vl_convert.vegalite_to_png(spec, scale=PNG_SCALE)
    except ValueError as error:
        raise ReviewError(f"cannot render plot {name!r}: {error}") from error


def describe_plot_error(error: Mapping[str, Any]) -> str:
    """One line for an error of ``dvc plots diff --json`` in the reviewed revision."""
    if "name" not in error:  # the whole revision failed, not one plot
        return f"dvc plots diff: {error.get('msg')}"
    source = error.get("source") or error.get("msg")
    return (
        f"plot {error['name']!r} is declared in dvc.yaml but {source} is missing in {error['rev']}"
    )


def write_plots(plots: Mapping[str, Any], revision: str, images: Path) -> int:
    """Draw the Vega plots of ``dvc plots diff --json --out images`` (each holds both revisions)
    into ``images``, where dvc wrote the image plots' files; return how many files it holds."""
    errors = [error for error in plots.get("errors") or [] if error.get("rev") == revision]
    if errors:
        raise ReviewError("\n".join(describe_plot_error(error) for error in errors))
    vega = [
        (name, entry["content"])
        for name, entries in (plots.get("data") or {}).items()
        for entry in entries
        if entry["type"] == "vega"
    ]
    for number, (name, spec) in enumerate(vega, start=1):
        (images / f"{number:02d}-{slug(name)}.png").write_bytes(render_vega_lite(name, spec))
    return sum(1 for path in images.rglob("*") if path.is_file())


def figures_link() -> str:
    """Where the figures are: the workflow run's artifact on GitHub, else review/images/."""
    server, repository, run = (
        os.environ.get(name) for name in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    )
    if server and repository and run:
        url = f"{server}/{repository}/actions/runs/{run}"
        return f"the `{FIGURES_ARTIFACT}` artifact of [this workflow run]({url})"
    return f"`{IMAGES_DIRECTORY}/` beside this report"


# --- the review ------------------------------------------------------------------------------


def check_earlier_review(out: Path) -> None:
    """Refuse an ``out`` that holds anything but an earlier review, which is replaced whole."""
    if not out.exists():
        return
    ours = {REPORT_FILE, IMAGES_DIRECTORY}
    foreign = (
        sorted(path.name for path in out.iterdir() if path.name not in ours)
        if out.is_dir()
        else [out.name]
    )
    if foreign:
        raise ReviewError(
            f"{out} holds files that are not a review ({', '.join(foreign)}); choose another --out"
        )


def write_review(repository: Path, base: str, revision: str | None, out: Path) -> Path:
    """Compare ``revision`` (None: the workspace) with ``base``; write the review to ``out``."""
    check_earlier_review(out)
    revisions = [base] if revision is None else [base, revision]
    new = revision or WORKSPACE
    log.info("reviewing %s against %s", new, base)
    params = diff_table("params", revisions, repository)
    metrics = diff_table("metrics", revisions, repository)
    tables, classes = plot_data_sections(base, revision, repository)
    with atomic_directory(out) as built:
        images = built / IMAGES_DIRECTORY
        arguments = ["plots", "diff", *revisions, "--json", "--out", str(images.resolve())]
        plots = json.loads(run_dvc(arguments, repository) or "{}")
        images.mkdir(exist_ok=True)
        count = write_plots(plots, new, images)
        lines = [f"## Experiment review: {new} against {base}", ""]
        lines += ["### Params", "", params or "No param changed.", ""]
        lines += ["### Metrics", "", metrics or "No metric changed.", ""]
        lines += chart_sections(base, revision, repository, classes)
        lines += tables
        lines += [f"Every plot of `dvc plots diff`, old and new ({count} files): {figures_link()}."]
        (built / REPORT_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    log.info("wrote %s", out / REPORT_FILE)
    return out / REPORT_FILE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="main", help="the revision to compare with (main)")
    parser.add_argument(
        "--revision", default=None, help="the revision to review (default: the workspace)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("review"), help="the report's directory (review/)"
    )
    args = parser.parse_args()
    write_review(Path.cwd(), args.base, args.revision, args.out)


if __name__ == "__main__":
    run_stage("review", main)
