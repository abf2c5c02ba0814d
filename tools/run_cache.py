"""Push the outputs that DVC's run-cache records, so that another machine can restore them.

``python -m tools.run_cache`` (part of ``make push``) after ``dvc push --run-cache``.

Why this exists: ``dvc push --run-cache`` sends the run-cache's records (``.dvc/cache/runs``)
but only the outputs of the revisions it pushes, and never a stage's ``cache: false`` outputs
(metrics, plot data), which the run-cache keeps in the local cache all the same. On another
machine ``dvc exp run --pull`` then finds a record but not its outputs, and trains again. This
pushes every object that the local records name, collected and sent by DVC itself
(``StageCache.get_used_objs``, ``DataCloud.push``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from dvc.repo import Repo

from fmnist.cli import run_stage
from fmnist.errors import PipelineError

log = logging.getLogger("run-cache")


def push_run_outputs(repo: Repo, remote: str | None = None) -> tuple[int, int, int]:
    """Push the outputs of every run-cache record of ``repo``.

    Returns the number of records, of objects pushed and of objects that failed.
    """
    runs = Path(repo.stage_cache.cache_dir)
    records = [(entry.parent.name, entry.name) for entry in sorted(runs.glob("*/*/*"))]
    pushed = failed = 0
    for odb, objects in repo.stage_cache.get_used_objs(records).items():
        result = repo.cloud.push(objects, remote=remote, odb=odb)
        pushed += len(result.transferred)
        failed += len(result.failed)
    return len(records), pushed, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-r", "--remote", help="DVC remote (default: the default remote)")
    args = parser.parse_args()
    logging.getLogger("botocore").setLevel(logging.WARNING)  # "Found credentials in ..."
    with Repo() as repo:
        records, pushed, failed = push_run_outputs(repo, args.remote)
    if failed:
        raise PipelineError(f"{failed} objects of run-cache outputs failed to push; run it again")
    log.info("outputs of %d run-cache records: %d objects pushed", records, pushed)


if __name__ == "__main__":
    run_stage("run-cache", main)
