"""Every use of DVC's Python API, where its command line has no equivalent. Each names what it
works around; tests/test_dvc_api.py fails when DVC changes under it.

``python -m tools.dvc_api push-run-cache`` (part of ``make push``) pushes the outputs that the
run-cache's records name.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from pathlib import Path

from fmnist.cli import run_stage
from fmnist.errors import PipelineError

log = logging.getLogger("run-cache")


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """Each combination of DVC's ``-S`` sweep syntax (``train.batch_size=64,128``), as
    ``key=value`` settings, in the order ``dvc exp run --queue`` queues them.

    DVC has no command that lists a sweep's combinations without queueing them.
    """
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import get_hydra_sweeps

    if not overrides:
        raise PipelineError("--sweep: no `key=value,value` expression given")
    try:
        sweeps = get_hydra_sweeps(to_path_overrides(overrides))
    except Exception as error:  # hydra's parser raises several kinds of its own
        reason = str(error).strip().splitlines()[0]
        raise PipelineError(f"--sweep {' '.join(overrides)[:200]!r}: {reason}") from None
    return [[setting for settings in sweep.values() for setting in settings] for sweep in sweeps]


def modify_params(path: Path, changes: Mapping[str, object]) -> None:
    """Set dotted keys (``train.epochs``) of the params file ``path`` with DVC's own YAML writer,
    as ``dvc exp run -S`` writes them: DVC has no command that edits params without running."""
    from dvc.utils.serialize import modify_yaml

    from tools.dvc_cli import set_dotted

    with modify_yaml(path) as params:
        for dotted_key, value in changes.items():
            set_dotted(params, dotted_key, value)


def push_run_outputs(remote: str | None = None) -> tuple[int, int, int]:
    """Push the outputs of every run-cache record; records, objects pushed, records skipped.

    ``dvc push --run-cache`` sends the records but not the outputs of runs that no pushed commit
    holds, nor ``cache: false`` outputs, so another machine finds a record it cannot restore
    (iterative/dvc#5749; DVC 3.27's index push stopped sending them). ``dvc gc`` keeps records
    whose outputs it removes (iterative/dvc#4634): those are skipped, since DVC cannot collect
    them.
    """
    from dvc.exceptions import CollectCacheError
    from dvc.repo import Repo

    pushed = skipped = 0
    with Repo() as repo:
        runs = Path(repo.stage_cache.cache_dir)
        records = [(entry.parent.name, entry.name) for entry in sorted(runs.glob("*/*/*"))]
        for record in records:
            try:
                used = repo.stage_cache.get_used_objs([record])
            except CollectCacheError:
                skipped += 1
                continue
            for odb, objects in used.items():
                result = repo.cloud.push(objects, remote=remote, odb=odb)
                if result.failed:
                    raise PipelineError(
                        f"{len(result.failed)} objects of run-cache outputs failed to push; "
                        "run it again"
                    )
                pushed += len(result.transferred)
    return len(records), pushed, skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["push-run-cache"])
    parser.add_argument("-r", "--remote", help="DVC remote (default: the default remote)")
    args = parser.parse_args()
    for name in ("botocore", "aiobotocore"):  # "Found credentials in ..." on every push
        logging.getLogger(name).setLevel(logging.WARNING)
    records, pushed, skipped = push_run_outputs(args.remote)
    if skipped:
        log.warning(
            "skipped %d of %d run-cache records whose outputs are no longer in the cache "
            "(removed by `dvc gc`)",
            skipped,
            records,
        )
    log.info("outputs of %d run-cache records: %d objects pushed", records - skipped, pushed)


if __name__ == "__main__":
    run_stage("run-cache", main)
