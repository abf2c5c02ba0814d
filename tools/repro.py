"""``make repro`` and ``make reset``: DVC's own commands, with what a first hour needs around them.

- ``repro``: params.yaml is checked before DVC removes any output; with a DVC remote configured,
  ``dvc repro --pull`` takes the team's pushed results instead of training them again; and a
  cache transfer that failed (a full disk) fails the command even where DVC exits 0.
- ``reset``: the last commit's params and results, from git and the DVC cache (or the remote),
  after ``dvc exp run``, ``dvc repro`` or a failed stage; one line says what to do where the
  cache holds none of them.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys

from fmnist.cli import run_stage
from fmnist.errors import PipelineError
from fmnist.params import load_params
from tools.dvc_cli import PARAMS_BEFORE, dvc_command, one_at_a_time, run_dvc, stream_dvc

log = logging.getLogger("repro")

# What `git checkout HEAD` restores: the committed params and the results kept in git.
COMMITTED_RESULTS = ("params.yaml", "dvc.lock", "metrics", "plots", "reports")


def has_remote() -> bool:
    """Whether a DVC remote is configured (in .dvc/config or .dvc/config.local)."""
    return bool(run_dvc("remote", "list").strip())


def repro(arguments: list[str]) -> None:
    load_params()
    pull = ["--pull"] if has_remote() else []
    status, stderr_lines = stream_dvc("repro", *pull, *arguments)
    if status != 0:
        sys.exit(status)
    failed = [
        line.strip() for line in stderr_lines if "ERROR" in line and "failed to transfer" in line
    ]
    if failed:
        raise PipelineError(
            f"dvc repro exited 0 but could not store {len(failed)} object(s) in the DVC cache "
            f"(first: {failed[0][:200]}); free space where `dvc cache dir` points, then run "
            "`dvc commit -f` to store the outputs"
        )


def reset() -> None:
    subprocess.run(["git", "checkout", "HEAD", "--", *COMMITTED_RESULTS], check=True)
    PARAMS_BEFORE.unlink(missing_ok=True)  # a killed `make exp`'s params are gone too
    checkout = subprocess.run(dvc_command("checkout", "--quiet"), capture_output=True, text=True)
    if checkout.returncode != 0 and has_remote():
        log.info("not all in the local DVC cache: pulling from the remote")
        checkout = subprocess.run(dvc_command("pull", "--quiet"), capture_output=True, text=True)
    if checkout.returncode != 0:
        raise PipelineError(
            "the last commit's data and model are in no DVC cache here: `dvc pull` them from "
            "the team's remote, or run `make repro` to train them on this machine"
        )
    log.info("params.yaml, dvc.lock and every result are the last commit's")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("repro", "reset"))
    args, rest = parser.parse_known_args()
    with one_at_a_time(f"make {args.command}"):
        if args.command == "repro":
            repro(rest)
        else:
            reset()


if __name__ == "__main__":
    run_stage(sys.argv[1] if sys.argv[1:] else "repro", main)
