"""Whether a retrain reproduces the committed metrics within a tolerance.

``python -m tools.retrain --tolerance 0.01`` (``make check-retrain``), after the pipeline ran
again in the workspace, reads ``dvc metrics diff HEAD --json`` and exits 1 naming every metric
that moved by more than the tolerance. Training is not bit-for-bit reproducible across CPUs, so
a retrain elsewhere is checked against a stated tolerance, not byte for byte.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from typing import Any

from fmnist.cli import run_stage
from fmnist.errors import PipelineError
from tools.dvc_cli import run_dvc_json

log = logging.getLogger("check-retrain")

METRICS_FILE = "metrics/evaluate.json"
BASE = "HEAD"


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def out_of_tolerance(diff: Mapping[str, Mapping[str, Any]], tolerance: float) -> list[str]:
    """One line per metric of a ``dvc metrics diff --json`` document beyond ``tolerance``.

    A metric that one side lacks, or that is not a number there, is always beyond it.
    """
    lines = []
    for path, metrics in diff.items():
        for name, values in metrics.items():
            old, new = values.get("old"), values.get("new")
            if old == new:  # the same number, or the same text (dtype)
                continue
            if not (is_number(old) and is_number(new)):
                lines.append(f"{path}: {name}: committed {old}, retrained {new}")
            elif abs(new - old) > tolerance:
                lines.append(
                    f"{path}: {name}: committed {old}, retrained {new} "
                    f"(moved {abs(new - old):.4g}, more than {tolerance:g})"
                )
    return lines


def tolerance_value(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not within [0, 1)")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tolerance", type=tolerance_value, default=0.01, help="largest absolute change (0.01)"
    )
    args = parser.parse_args()
    diff = run_dvc_json("metrics", "diff", BASE, "--all", "--json", "--targets", METRICS_FILE)
    if not diff:
        raise PipelineError(f"{METRICS_FILE}: no metrics in the workspace or at {BASE}")
    beyond = out_of_tolerance(diff, args.tolerance)
    if beyond:
        raise PipelineError("\n".join(["the retrain moved metrics beyond the tolerance:", *beyond]))
    count = sum(len(metrics) for metrics in diff.values())
    log.info("all %d metrics within %g of %s", count, args.tolerance, BASE)


if __name__ == "__main__":
    run_stage("check-retrain", main)
