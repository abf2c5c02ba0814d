"""Whether dvc.lock is current: ``dvc status --json``, less the data that is merely absent.

``python -m tools.staleness`` (``make check-lock``) needs no data: it prints one line per change
to a stage's params, code, command or committed results that dvc.lock lacks, and exits 1.

``python -m tools.staleness --pulled`` (``make check-pushed``, after ``dvc pull --allow-missing``)
also fails for every output that is still absent: the author ran the pipeline but did not push
that result to the DVC remote.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from fmnist.cli import run_stage
from fmnist.errors import PipelineError
from fmnist.params import read_yaml_file
from tools.dvc_cli import run_dvc_json

# `dvc status` counts absent data (not pulled, not run) as a change, so on a fresh clone every
# stage looks stale; `dvc repro --allow-missing --dry` skips it but says not what changed.
ABSENT = ("deleted", "not in cache")


def find_changes(status: dict[str, list[Any]], lock: dict[str, Any]) -> list[str]:
    """One line per change in a ``dvc status --json`` document that is not just absent data.

    ``lock`` is dvc.lock's content: a stage it lacks never ran. Like ``--allow-missing``, an
    absent input still counts when dvc.lock records another hash for it as an output.
    """
    locked = lock.get("stages") or {}
    written = {  # each output's hash, as recorded by the stage that writes it
        out["path"]: out.get("md5") for stage in locked.values() for out in stage.get("outs", [])
    }
    changes = []
    for stage, entries in status.items():
        if stage not in locked:
            changes.append(f"{stage}: not in dvc.lock, never run")
            continue
        behind = {  # inputs whose writing stage ran again after this one
            dep["path"]
            for dep in locked[stage].get("deps", [])
            if written.get(dep["path"], dep.get("md5")) != dep.get("md5")
        }
        for entry in entries:
            if isinstance(entry, str):  # "changed command", "always changed"
                changes.append(f"{stage}: {entry}")
                continue
            for section, paths in entry.items():
                for path, state in paths.items():
                    if isinstance(state, dict):  # a params file: its changed keys
                        changes += [f"{stage}: {path}: {key} {how}" for key, how in state.items()]
                    elif state not in ABSENT:
                        changes.append(f"{stage}: {path} {state}")
                    elif section == "changed deps" and path in behind:
                        changes.append(f"{stage}: {path} modified upstream since {stage} ran")
    return changes


def absent_outputs(status: dict[str, list[Any]]) -> list[str]:
    """``stage: path`` of each output that ``dvc status --json`` finds absent from the workspace.

    DVC's own report of objects missing from a remote names their hashes, not the outputs.
    """
    return [
        f"{stage}: {path}"
        for stage, entries in status.items()
        for entry in entries
        if isinstance(entry, dict)
        for path, state in (entry.get("changed outs") or {}).items()
        if state in ABSENT
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pulled",
        action="store_true",
        help="after `dvc pull`: also fail for every output that is absent (never pushed)",
    )
    args = parser.parse_args()
    status = run_dvc_json("status", "--json") or {}
    lock_path = Path("dvc.lock")
    lock = read_yaml_file(lock_path) if lock_path.is_file() else None
    changes = find_changes(status, lock or {})
    if changes:
        lines = [f"dvc.lock is stale: {change}" for change in changes]
        fix = "run `dvc repro` and commit dvc.lock with its results"
        raise PipelineError("\n".join([*lines, fix]))
    absent = absent_outputs(status) if args.pulled else []
    if absent:
        lines = [f"not on the DVC remote: {output}" for output in absent]
        fix = "the author pushes them: `dvc push` in the checkout that ran `dvc repro`"
        raise PipelineError("\n".join([*lines, fix]))
    logging.getLogger("check-lock").info(
        "dvc.lock is current" + (" and every output is pulled" if args.pulled else "")
    )


if __name__ == "__main__":
    run_stage("check-lock", main)
