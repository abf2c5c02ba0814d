"""Run the study's experiments as named DVC experiments and tabulate their results.

``experiments.yaml`` names each experiment, the params it sets on top of params.yaml, and what
the study reported for it. ``python -m fmnist.study run`` queues them with
``dvc exp run --queue -n NAME -S key=value ...``, runs the queue and waits for it;
``python -m fmnist.study table`` rewrites the README's results table from ``dvc exp show --json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from fmnist.cli import run_stage
from fmnist.errors import PipelineError
from fmnist.files import write_text

log = logging.getLogger("study")

EXPERIMENTS_FILE = Path("experiments.yaml")
TABLE_START = "<!-- study-table:start -->"
TABLE_END = "<!-- study-table:end -->"
POLL_SECONDS = 5.0


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    params: dict[str, object]
    reported: str = ""
    """What the study reported for this setting, as text (for example "76.8% test")."""
    note: str = ""
    """Why the measured figure differs from the reported one, where that is known."""


def load_experiments(path: str | os.PathLike[str] = EXPERIMENTS_FILE) -> list[Experiment]:
    """The experiments of ``path``, in file order; shared settings come from YAML anchors."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise PipelineError(f"{path}: cannot read: {error}") from None
    experiments = []
    for name, entry in (document.get("experiments") or {}).items():
        try:
            experiments.append(Experiment(name=name, **entry))
        except TypeError as error:
            raise PipelineError(f"{path}: experiment {name}: {error}") from None
    return experiments


def set_arguments(params: dict[str, object]) -> list[str]:
    """``-S key=value`` arguments; values are written as YAML so lists and booleans survive."""
    arguments = []
    for key, value in params.items():
        text = yaml.safe_dump(value, default_flow_style=True, width=1_000).strip()
        text = text.removesuffix("\n...").removesuffix("...").strip()
        arguments += ["-S", f"{key}={text}"]
    return arguments


def queue_command(experiment: Experiment) -> list[str]:
    return [
        "dvc",
        "exp",
        "run",
        "--queue",
        "-n",
        experiment.name,
        *set_arguments(experiment.params),
    ]


def _dvc(*arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "dvc", *arguments]
    result = subprocess.run(command, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise PipelineError(
            f"`dvc {' '.join(arguments)}` failed:\n{(result.stderr or result.stdout).strip()}"
        )
    return result


def queue_states() -> dict[str, str]:
    """The status of each task that ``dvc queue status`` lists, by experiment name."""
    states = {}
    for line in _dvc("queue", "status").stdout.splitlines():
        words = line.split()
        for state in ("Queued", "Running", "Success", "Failed"):
            if state in words and len(words) >= 2:
                states[words[1]] = state
    return states


def run_experiments(experiments: list[Experiment], jobs: int, timeout: float) -> None:
    """Queue the experiments, run them ``jobs`` at a time and wait until all have ended."""
    existing = {run["name"] for run in _all_runs(_dvc("exp", "show", "--json", "-A").stdout)}
    stale = [experiment.name for experiment in experiments if experiment.name in existing]
    if stale:
        log.info("removing earlier runs of %s", ", ".join(stale))
        _dvc("exp", "remove", *stale)
    for experiment in experiments:
        log.info("queueing %s: %s", experiment.name, experiment.title)
        _dvc(*queue_command(experiment)[1:])
    # The queue's worker runs on in the background: it must not hold pipes that we wait on.
    started_queue = subprocess.run(
        [sys.executable, "-m", "dvc", "queue", "start", "-j", str(jobs)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if started_queue.returncode != 0:
        raise PipelineError(f"`dvc queue start -j {jobs}` failed; see `dvc queue status`")
    names = {experiment.name for experiment in experiments}
    started = time.monotonic()
    reported: dict[str, str] = {}
    while True:
        states = {name: state for name, state in queue_states().items() if name in names}
        for name, state in sorted(states.items()):
            if reported.get(name) != state:
                log.info("%s: %s", name, state.lower())
                reported[name] = state
        if states and all(state in ("Success", "Failed") for state in states.values()):
            break
        if time.monotonic() - started > timeout:
            raise PipelineError(f"the queue did not finish within {timeout:.0f} s: {states}")
        time.sleep(POLL_SECONDS)
    failed = sorted(name for name, state in states.items() if state == "Failed")
    if failed:
        raise PipelineError(f"experiments failed: {', '.join(failed)} (see `dvc queue logs NAME`)")
    log.info("all %d experiments succeeded in %.0f s", len(names), time.monotonic() - started)


def _all_runs(show_json: str) -> list[dict]:
    """Every experiment run in ``dvc exp show --json`` output, newest data per run."""
    runs = []
    for entry in json.loads(show_json):
        for run in entry.get("experiments") or []:
            revision = run["revs"][0]
            if revision.get("data"):
                runs.append({"name": run.get("name") or revision.get("name"), **revision["data"]})
    return runs


def latest_results(show_json: str) -> dict[str, dict]:
    """The most recent run of each experiment name: its params and metrics."""
    latest: dict[str, dict] = {}
    for run in _all_runs(show_json):
        if run["name"] not in latest or run["timestamp"] > latest[run["name"]]["timestamp"]:
            latest[run["name"]] = run
    return latest


def _metric(run: dict, path: str, key: str) -> float | None:
    try:
        return float(run["metrics"][path]["data"][key])
    except (KeyError, TypeError, ValueError):
        return None


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def render_table(experiments: list[Experiment], results: dict[str, dict]) -> str:
    """The README table: each experiment, the study's figure, the measured ones, the command."""
    lines = [
        "| experiment | study reported | measured test | measured val | command |",
        "|---|---|---:|---:|---|",
    ]
    for experiment in experiments:
        run = results.get(experiment.name)
        test = _metric(run, "metrics/evaluate.json", "accuracy") if run else None
        val = _metric(run, "metrics/train.json", "val_accuracy") if run else None
        reported = experiment.reported or "not reported"
        lines.append(
            f"| {experiment.title} | {reported} | {_percent(test)} | {_percent(val)} "
            f"| `python -m fmnist.study run {experiment.name}` |"
        )
    notes = [f"- **{e.title}**: {e.note}" for e in experiments if e.note]
    return "\n".join(lines + (["", *notes] if notes else []))


def update_readme(readme: Path, table: str) -> None:
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), re.DOTALL)
    if not pattern.search(text):
        raise PipelineError(f"{readme}: no {TABLE_START} ... {TABLE_END} markers to replace")
    replacement = f"{TABLE_START}\n{table}\n{TABLE_END}"
    write_text(readme, pattern.sub(lambda _: replacement, text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=EXPERIMENTS_FILE, help="experiments YAML")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="queue and run experiments, wait for them")
    run.add_argument("names", nargs="*", help="experiments to run (default: all)")
    run.add_argument("--jobs", type=int, default=1, help="experiments run at once")
    run.add_argument("--timeout", type=float, default=3 * 3600, help="seconds to wait at most")
    run.add_argument("--dry-run", action="store_true", help="print the dvc commands only")
    table = commands.add_parser("table", help="print the results table or update the README")
    table.add_argument("--readme", type=Path, help="rewrite the table between its markers")
    args = parser.parse_args()

    experiments = load_experiments(args.file)
    if args.command == "run":
        unknown = sorted(set(args.names) - {experiment.name for experiment in experiments})
        if unknown:
            known = ", ".join(experiment.name for experiment in experiments)
            raise PipelineError(f"unknown experiments {', '.join(unknown)} (known: {known})")
        chosen = [e for e in experiments if not args.names or e.name in args.names]
        if args.dry_run:
            for experiment in chosen:
                print(shlex.join(queue_command(experiment)))
            return
        run_experiments(chosen, args.jobs, args.timeout)
    else:
        results = latest_results(_dvc("exp", "show", "--json", "-A").stdout)
        rendered = render_table(experiments, results)
        if args.readme:
            update_readme(args.readme, rendered)
            log.info("updated the table in %s", args.readme)
        else:
            print(rendered)


if __name__ == "__main__":
    run_stage("study", main)
