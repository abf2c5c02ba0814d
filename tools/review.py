"""The review of an experiment against a base: DVC's own comparison, plus what it lacks.

DVC compares params and metrics and overlays plots of two revisions, but it writes HTML for a
browser, and it puts no number on a change inside plot data (per-class metrics, confused
pairs). This module runs DVC's commands and adds only that.

``python -m tools.review --base main`` (``make review``) compares the workspace, or
``--revision REV``, with ``--base REV`` and writes ``review/report.md``, its images in
``review/images/``:

- the changed params and metrics, as ``dvc params diff --md`` and ``dvc metrics diff --md``
  print them;
- precision, recall and F1 per class, old -> new, and the counts of the most confused pairs;
- every plot of ``dvc plots diff --json``: Vega-Lite plots drawn as images, image plots old
  and new side by side.

A plot that dvc.yaml declares but whose file is missing in the reviewed revision is an error.
"""

from __future__ import annotations

import argparse
import json
import logging
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
from fmnist.report import markdown_table
from tools import dvc_cli

log = logging.getLogger("review")

WORKSPACE = "workspace"  # the name dvc gives the working tree among revisions
# The evaluate stage's plot data, as dvc.yaml declares it.
CLASSES_FILE = "plots/classes.json"
CONFUSED_PAIRS_FILE = "plots/confused_pairs.json"
CLASS_METRICS = ("precision", "recall", "f1")
REPORT_FILE = "report.md"
IMAGES_DIRECTORY = "images"
IMAGE_FORMATS = ("png", "svg")
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


def plot_data_sections(base: str, revision: str | None, repository: Path) -> list[str]:
    """Markdown for the per-class metrics and the confused pairs, old against new.

    ``dvc plots diff`` draws both files for both revisions but puts no number on a change.
    """
    tables = (
        (CLASSES_FILE, "Per class", ["class", *CLASS_METRICS], class_rows),
        (CONFUSED_PAIRS_FILE, "Most confused pairs", ["pair", "old", "new", "change"], pair_rows),
    )
    lines = []
    for path, title, header, rows in tables:
        new = read_records(path, revision, repository)
        if new is None:
            raise ReviewError(f"{path} is missing in {revision or WORKSPACE}")
        old = read_records(path, base, repository)
        note = f" ({path} is not in {base}: new values only)" if old is None else ""
        lines += [
            f"### {title}{note}",
            "",
            *markdown_table(header, rows(old, new), right=range(1, len(header))),
            "",
        ]
    return lines


# --- plots: DVC writes HTML for a browser; the review needs image files ------------------------


def slug(name: str) -> str:
    """A file name for a plot: ``Confusion matrix`` -> ``confusion-matrix``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "plot"


def render_vega_lite(name: str, spec: Mapping[str, Any], image_format: str) -> bytes:
    """A Vega-Lite spec as PNG or SVG bytes, drawn without a browser."""
    try:
        if image_format == "svg":
            return vl_convert.vegalite_to_svg(spec).encode()
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


def plot_sections(
    plots: Mapping[str, Any], base: str, revision: str, images: Path, image_format: str
) -> list[str]:
    """Markdown for ``dvc plots diff --json --out images``; Vega plots drawn into ``images``.

    Each Vega plot already holds both revisions; an image plot has a file per revision,
    which dvc wrote to ``images``.
    """
    errors = [error for error in plots.get("errors") or [] if error.get("rev") == revision]
    if errors:
        raise ReviewError("\n".join(describe_plot_error(error) for error in errors))
    data = plots.get("data") or {}
    vega = {
        name: entry["content"]
        for name, entries in data.items()
        for entry in entries
        if entry["type"] == "vega"
    }
    lines = []
    for number, (name, spec) in enumerate(vega.items(), start=1):
        path = images / f"{number:02d}-{slug(name)}.{image_format}"
        path.write_bytes(render_vega_lite(name, spec, image_format))
        lines += [f"**{name}**", "", f"![{name}]({images.name}/{path.name})", ""]
    for name, entries in data.items():
        files = {
            shown: Path(entry["url"])
            for entry in entries
            if entry["type"] == "image"
            for shown in entry["revisions"]
        }
        if not files:  # a Vega plot, or a directory plot that dvc lists without entries
            continue
        old, new = files.get(base), files.get(revision)
        if new is None:
            raise ReviewError(f"plot {name!r}: dvc plots diff returned no image for {revision}")
        if old is None or old.read_bytes() == new.read_bytes():
            note = "not in the base" if old is None else "unchanged"
            lines += [f"**{name}** ({note})", "", f"![{name}]({images.name}/{new.name})", ""]
            continue
        cells = " | ".join(
            f"![{side}]({images.name}/{file.name})" for side, file in (("old", old), ("new", new))
        )
        lines += [f"**{name}**", "", "| old | new |", "|---|---|", f"| {cells} |", ""]
    return lines


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


def write_review(
    repository: Path, base: str, revision: str | None, out: Path, image_format: str = "png"
) -> Path:
    """Compare ``revision`` (None: the workspace) with ``base``; write the review to ``out``."""
    check_earlier_review(out)
    revisions = [base] if revision is None else [base, revision]
    new = revision or WORKSPACE
    log.info("reviewing %s against %s", new, base)
    params = diff_table("params", revisions, repository)
    metrics = diff_table("metrics", revisions, repository)
    with atomic_directory(out) as built:
        images = built / IMAGES_DIRECTORY
        arguments = ["plots", "diff", *revisions, "--json", "--out", str(images.resolve())]
        plots = json.loads(run_dvc(arguments, repository) or "{}")
        images.mkdir(exist_ok=True)
        plot_lines = plot_sections(plots, base, new, images, image_format)
        lines = [f"## Experiment review: {new} against {base}", ""]
        lines += ["### Params", "", params or "No param changed.", ""]
        lines += ["### Metrics", "", metrics or "No metric changed.", ""]
        lines += plot_data_sections(base, revision, repository)
        lines += ["### Plots", "", *plot_lines]
        (built / REPORT_FILE).write_text("\n".join(lines), encoding="utf-8")
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
    parser.add_argument("--format", choices=IMAGE_FORMATS, default="png", help="plot images")
    args = parser.parse_args()
    write_review(Path.cwd(), args.base, args.revision, args.out, args.format)


if __name__ == "__main__":
    run_stage("review", main)
