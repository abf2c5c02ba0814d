"""The review of an experiment: what its params, metrics and plots changed against a base.

``python -m fmnist.review --base main`` (``make review``) compares the workspace, or
``--revision REV``, with ``--base REV`` through ``dvc params diff``, ``dvc metrics diff`` and
``dvc plots diff`` and writes ``review/report.md``: the changed params, the changed metrics
with old, new and change columns (per-class metrics in a table of their own), and each plot
rendered to an image with vl-convert (no browser), image plots old and new side by side.
A declared plot whose file is missing in the reviewed revision is an error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import vl_convert

from fmnist import CLASS_NAMES
from fmnist.cli import run_stage
from fmnist.errors import PipelineError
from fmnist.files import atomic_directory

log = logging.getLogger("review")

WORKSPACE = "workspace"  # the name dvc gives the working tree among revisions
PER_CLASS_PREFIX = "per_class."
PER_CLASS_METRICS = ("precision", "recall", "f1")  # in this order; others after, by name
IMAGE_FORMATS = ("png", "svg")
IMAGE_SUFFIXES = (".png", ".svg", ".jpg", ".jpeg", ".gif")
REPORT_FILE = "report.md"
IMAGES_DIRECTORY = "images"
NOTHING = "—"
PNG_SCALE = 2  # pixels per Vega unit: sharp on high-density screens


class ReviewError(PipelineError):
    """dvc could not compare the revisions, a plot could not be rendered or is missing."""


@dataclass(frozen=True)
class Row:
    """One changed value: a param (no change column) or a metric."""

    name: str
    old: Any
    new: Any
    change: Any = None


@dataclass(frozen=True)
class MetricsTable:
    """The changed metrics of one metrics file; per-class ones apart, keyed by class."""

    path: str
    rows: list[Row]
    per_class: list[tuple[str, Row]] = field(default_factory=list)


@dataclass(frozen=True)
class Plot:
    """A plot rendered to image files (paths relative to the report) for the markdown."""

    name: str
    changed: bool
    images: dict[str, str]  # "old", "new" or "both" -> path
    note: str = ""


# --- running dvc ------------------------------------------------------------------------------


def dvc_error_message(stderr: str, returncode: int) -> str:
    """The line of dvc's output that says what went wrong."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR:")]
    if errors:
        return errors[0]
    return lines[-1] if lines else f"exit status {returncode}"


def run_dvc(arguments: list[str], repository: Path) -> Any:
    """Run ``dvc <arguments>`` with this interpreter's dvc; return its parsed JSON output."""
    command = [sys.executable, "-m", "dvc", *arguments]
    shown = " ".join(["dvc", *arguments])
    try:
        result = subprocess.run(command, cwd=repository, capture_output=True, text=True)
    except OSError as error:
        raise ReviewError(f"cannot run `{shown}`: {error.strerror}") from error
    if result.returncode != 0:
        raise ReviewError(
            f"`{shown}` failed: {dvc_error_message(result.stderr, result.returncode)}"
        )
    try:
        return json.loads(result.stdout or "{}")
    except json.JSONDecodeError as error:
        raise ReviewError(f"`{shown}` did not print JSON: {error}") from error


def describe_revision(revision: str, repository: Path) -> str:
    """``main (1a2b3c4)`` for a git revision; the workspace as it is."""
    if revision == WORKSPACE:
        return f"`{WORKSPACE}`"
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", f"{revision}^{{commit}}"],
            cwd=repository,
            capture_output=True,
            text=True,
        )
    except OSError:
        return f"`{revision}`"  # dvc has read the revision already; the commit is a nicety
    commit = result.stdout.strip()
    return f"`{revision}` ({commit})" if result.returncode == 0 and commit else f"`{revision}`"


# --- tables -----------------------------------------------------------------------------------


def format_value(value: Any) -> str:
    """A param value as written in params.yaml: text as is, lists and mappings as JSON."""
    if value is None:
        return NOTHING
    if isinstance(value, str):
        return value
    return json.dumps(value)


def format_number(value: Any) -> str:
    """A metric rounded for reading: four decimals, thousands separators, tiny ones as 1.2e-05."""
    if value is None:
        return NOTHING
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.1f}"
    if abs(value) < 0.001:
        return f"{value:.2e}"
    return f"{value:.4f}"


def format_change(value: Any) -> str:
    """A metric's change with its sign; a change too small for four decimals in e-notation."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return NOTHING
    if value == 0:
        return "0"
    if isinstance(value, int):
        return f"{value:+,}"
    if abs(value) < 0.00005:
        return f"{value:+.1e}"
    return f"{value:+.4f}"


def params_rows(diff: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[Row]:
    """``dvc params diff --json`` as rows; keys of files other than params.yaml are prefixed."""
    rows = []
    for file, changes in sorted(diff.items()):
        prefix = "" if file == "params.yaml" else f"{file}:"
        for key, change in sorted(changes.items()):
            rows.append(Row(f"{prefix}{key}", change.get("old"), change.get("new")))
    return rows


def metrics_tables(diff: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[MetricsTable]:
    """``dvc metrics diff --json`` as one table per file, per-class metrics named by class.

    dvc lists a file's changes in no stable order: rows are sorted by name, per-class ones by
    class label.
    """
    tables = []
    for path, changes in sorted(diff.items()):
        rows: list[Row] = []
        per_class: list[tuple[str, Row]] = []
        for key, change in changes.items():
            if not isinstance(change, Mapping):
                raise ReviewError(f"dvc metrics diff: {path}: {key}: {change}")
            row = Row(key, change.get("old"), change.get("new"), change.get("diff"))
            name, _, metric = key.removeprefix(PER_CLASS_PREFIX).rpartition(".")
            if key.startswith(PER_CLASS_PREFIX) and name:
                per_class.append((name, Row(metric, row.old, row.new, row.change)))
            else:
                rows.append(row)
        rows.sort(key=lambda row: row.name)
        per_class.sort(key=class_order)
        tables.append(MetricsTable(path, rows, per_class))
    return tables


def class_order(entry: tuple[str, Row]) -> tuple[int, str, int, str]:
    """Sort key of a per-class row: classes by label, then precision, recall, f1, the rest."""
    name, row = entry
    label = CLASS_NAMES.index(name) if name in CLASS_NAMES else len(CLASS_NAMES)
    metric = PER_CLASS_METRICS.index(row.name) if row.name in PER_CLASS_METRICS else 99
    return label, name, metric, row.name


def metric_cells(row: Row) -> list[str]:
    """The old, new and change cells of a metric's row."""
    return [format_number(row.old), format_number(row.new), format_change(row.change)]


def escape(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(header: list[str], rows: list[list[str]], numeric_from: int) -> list[str]:
    """A markdown table; columns from ``numeric_from`` on are right-aligned."""
    alignment = ["---" if index < numeric_from else "--:" for index in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(alignment) + "|"]
    lines += ["| " + " | ".join(escape(cell) for cell in row) + " |" for row in rows]
    return lines


# --- plots ------------------------------------------------------------------------------------


def slug(name: str) -> str:
    """A file name for a plot: ``Confusion matrix`` -> ``confusion-matrix``.

    An image plot's own suffix is dropped: ``plots/samples.png`` -> ``plots-samples``.
    """
    stem = name.removesuffix(Path(name).suffix) if Path(name).suffix in IMAGE_SUFFIXES else name
    return re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-") or "plot"


def rows_of(values: list[Mapping[str, Any]], revision: str) -> list[str]:
    """A revision's data points of a Vega-Lite plot, comparable between revisions."""
    return sorted(
        json.dumps({key: value for key, value in row.items() if key != "rev"}, sort_keys=True)
        for row in values
        if row.get("rev") == revision
    )


def render_vega_lite(name: str, spec: Mapping[str, Any], image_format: str) -> bytes:
    """A Vega-Lite spec as PNG or SVG bytes, rendered without a browser."""
    try:
        if image_format == "svg":
            return vl_convert.vegalite_to_svg(spec).encode()
        return vl_convert.vegalite_to_png(spec, scale=PNG_SCALE)
    except ValueError as error:
        raise ReviewError(f"cannot render plot {name!r}: {error}") from error


def missing_plots(errors: list[Mapping[str, Any]], revision: str) -> dict[str, str]:
    """Plot name -> a missing source file, for the errors of ``dvc plots diff`` in ``revision``."""
    return {
        str(error.get("name")): str(error.get("source") or error.get("msg"))
        for error in errors
        if error.get("rev") == revision
    }


def render_plots(
    plots: Mapping[str, Any], base: str, revision: str, images: Path, image_format: str
) -> list[Plot]:
    """Write every plot of ``dvc plots diff --json`` to ``images``, linked as ``images.name/..``.

    A plot with a missing file in ``revision`` raises ReviewError; one missing in ``base`` is
    a new plot and shown for ``revision`` alone.
    """
    errors = plots.get("errors") or []
    missing = missing_plots(errors, revision)
    if missing:
        raise ReviewError(
            "\n".join(
                f"plot {name!r} is declared in dvc.yaml but {source} is missing in {revision}"
                for name, source in missing.items()
            )
        )
    missing_in_base = missing_plots(errors, base)
    images.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    rendered = []
    for name, entries in (plots.get("data") or {}).items():
        stem = slug(name)
        while stem in taken:
            stem += "-"
        taken.add(stem)
        note = "new: not in the base" if name in missing_in_base else ""
        vega = [entry for entry in entries if entry.get("type") == "vega"]
        if vega:
            spec = vega[0]["content"]
            values = (spec.get("data") or {}).get("values") or []
            changed = rows_of(values, base) != rows_of(values, revision)
            path = images / f"{stem}.{image_format}"
            path.write_bytes(render_vega_lite(name, spec, image_format))
            rendered.append(Plot(name, changed, {"both": f"{images.name}/{path.name}"}, note))
            continue
        by_revision = {
            revision_name: Path(entry["url"]).read_bytes()
            for entry in entries
            if entry.get("type") == "image"
            for revision_name in entry.get("revisions") or []
        }
        if revision not in by_revision:
            raise ReviewError(f"plot {name!r}: dvc plots diff returned no image for {revision}")
        suffix = Path(name).suffix or ".png"
        changed = by_revision.get(base) != by_revision[revision]
        if changed and base in by_revision:
            files = {"old": f"{stem}-old{suffix}", "new": f"{stem}-new{suffix}"}
            (images / files["old"]).write_bytes(by_revision[base])
            (images / files["new"]).write_bytes(by_revision[revision])
        else:
            files = {"both" if not changed else "new": f"{stem}{suffix}"}
            (images / f"{stem}{suffix}").write_bytes(by_revision[revision])
        linked = {side: f"{images.name}/{file}" for side, file in files.items()}
        rendered.append(Plot(name, changed, linked, note))
    return rendered


# --- the report -------------------------------------------------------------------------------


def render_review(
    base: str,
    revision: str,
    params: list[Row],
    metrics: list[MetricsTable],
    plots: list[Plot],
) -> str:
    """The review as markdown; images are linked relative to the report."""
    lines = [f"## Experiment review: {revision} against {base}", ""]

    lines += ["### Params", ""]
    if params:
        rows = [[row.name, format_value(row.old), format_value(row.new)] for row in params]
        lines += markdown_table(["param", "old", "new"], rows, numeric_from=3)
    else:
        lines.append("No param changed.")
    lines.append("")

    lines += ["### Metrics", ""]
    if not metrics:
        lines += ["No metric changed.", ""]
    header = ["old", "new", "change"]
    for table in metrics:
        lines += [f"`{table.path}`", ""]
        if table.rows:
            rows = [[row.name, *metric_cells(row)] for row in table.rows]
            lines += [*markdown_table(["metric", *header], rows, numeric_from=1), ""]
        if table.per_class:
            classes = len({name for name, _ in table.per_class})
            rows = [[name, row.name, *metric_cells(row)] for name, row in table.per_class]
            lines += [
                "<details>",
                f"<summary>Per class ({len(rows)} values in {classes} classes)</summary>",
                "",
                *markdown_table(["class", "metric", *header], rows, numeric_from=2),
                "",
                "</details>",
                "",
            ]

    lines += ["### Plots", ""]
    changed = [plot for plot in plots if plot.changed]
    for plot in changed:
        title = f"**{plot.name}**" + (f" ({plot.note})" if plot.note else "")
        lines += [title, ""]
        if "old" in plot.images:
            lines += markdown_table(
                ["old", "new"],
                [[f"![old]({plot.images['old']})", f"![new]({plot.images['new']})"]],
                numeric_from=2,
            )
        else:
            image = next(iter(plot.images.values()))
            lines.append(f"![{plot.name}]({image})")
        lines.append("")
    if not changed:
        lines += ["No plot changed.", ""]
    unchanged = [plot for plot in plots if not plot.changed]
    if unchanged:
        links = ", ".join(f"[{plot.name}]({plot.images['both']})" for plot in unchanged)
        lines += [f"Unchanged: {links}.", ""]
    return "\n".join(lines)


@contextlib.contextmanager
def review_directory(out: Path) -> Iterator[Path]:
    """A staging directory that replaces ``out`` if the block succeeds; ``out`` must be missing
    or an earlier review, which is replaced whole, never a directory holding anything else.
    """
    if out.exists():
        ours = {REPORT_FILE, IMAGES_DIRECTORY}
        foreign = (
            sorted(path.name for path in out.iterdir() if path.name not in ours)
            if out.is_dir()
            else [out.name]
        )
        if foreign:
            raise ReviewError(
                f"{out} holds files that are not a review ({', '.join(foreign)}); "
                "choose another --out"
            )
    with atomic_directory(out) as built:
        yield built


def write_review(
    repository: Path, base: str, revision: str | None, out: Path, image_format: str = "png"
) -> Path:
    """Compare ``revision`` (None: the workspace) with ``base``; write the review to ``out``."""
    revisions = [base] if revision is None else [base, revision]
    new = revision or WORKSPACE
    params = params_rows(run_dvc(["params", "diff", *revisions, "--json"], repository))
    metrics = metrics_tables(run_dvc(["metrics", "diff", *revisions, "--json"], repository))
    log.info(
        "%d params and %d metrics changed",
        len(params),
        sum(len(table.rows) + len(table.per_class) for table in metrics),
    )
    with review_directory(out) as built:
        with tempfile.TemporaryDirectory(prefix="dvc-plots-") as scratch:
            plots_json = run_dvc(
                ["plots", "diff", *revisions, "--json", "--out", scratch], repository
            )
            plots = render_plots(plots_json, base, new, built / IMAGES_DIRECTORY, image_format)
        markdown = render_review(
            describe_revision(base, repository),
            describe_revision(new, repository),
            params,
            metrics,
            plots,
        )
        (built / REPORT_FILE).write_text(markdown, encoding="utf-8")
    log.info(
        "wrote %s with %d plots (%d changed)",
        out / REPORT_FILE,
        len(plots),
        sum(plot.changed for plot in plots),
    )
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
    parser.add_argument("--format", choices=IMAGE_FORMATS, default="png", help="plot images")
    args = parser.parse_args()
    write_review(Path.cwd(), args.base, args.revision, args.out, args.format)


if __name__ == "__main__":
    run_stage("review", main)
