"""``dvc repro`` that also fails when DVC reported a failed cache transfer (``make repro``).

Why this exists: when the disk that holds the DVC cache fills up, DVC logs ``ERROR: failed to
transfer ...`` for a stage's outputs, records the stage as run and can still exit 0. The outputs
are then in the workspace but not in the cache, so neither ``dvc push`` nor ``dvc checkout`` can
bring them back. DVC's output passes through as it comes; when it has ended, a failed transfer
makes this exit 1 with one line saying how to recover.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

from fmnist.cli import run_stage
from fmnist.errors import PipelineError
from tools.dvc_cli import stream_dvc

TRANSFER_FAILED = "failed to transfer"


def failed_transfers(lines: Iterable[str]) -> list[str]:
    """DVC's error lines about objects it could not copy into the cache (or a remote)."""
    return [line.strip() for line in lines if "ERROR" in line and TRANSFER_FAILED in line]


def run_checked(arguments: Sequence[str]) -> int:
    """Run ``dvc ARGUMENTS``, passing its output through; DVC's exit status, or PipelineError
    after a failed transfer that DVC itself let pass.
    """
    status, stderr_lines = stream_dvc(*arguments)
    if status != 0:
        return status
    errors = failed_transfers(stderr_lines)
    if errors:
        raise PipelineError(
            f"dvc {' '.join(arguments)} exited 0 but could not store {len(errors)} object(s) in "
            f"the DVC cache (first: {errors[0][:200]}); free space where `dvc cache dir` points, "
            "then run `dvc commit -f` to store the outputs"
        )
    return 0


def main() -> None:
    status = run_checked(["repro", *sys.argv[1:]])
    if status:
        sys.exit(status)


if __name__ == "__main__":
    run_stage("repro", main)
