"""Run the study's experiments as named DVC experiments and tabulate their results.

``experiments.yaml`` names each experiment, the params it sets on top of params.yaml, and what
the study reported for it.

- ``python -m tools.study exp NAME`` runs one of them in the workspace, in the foreground
  (``dvc exp run -n NAME -S key=value ...``); its params and metrics stay in the workspace.
- ``python -m tools.study run [NAME ...]`` queues them (``dvc exp run --queue -n NAME ...``),
  starts DVC's queue workers (``dvc queue start``) and waits for the tasks, reading their states
  as ``dvc queue status`` does.
- ``python -m tools.study table`` rewrites the results table of docs/study.md from
  ``dvc exp show --json``.
- ``python -m tools.study plan [--sweep EXPR] [NAME ...]`` prints the names of the experiments
  as a JSON array, for a CI matrix that runs each one on its own machine (``exp NAME``) and
  pushes it (``dvc exp push origin NAME``): DVC's queue runs on one machine only. With
  ``--sweep``, one name per combination of DVC's sweep syntax (``train.batch_size=64,128``),
  numbered as ``dvc exp run --queue -n PREFIX`` numbers them; ``exp PREFIX-K --sweep EXPR``
  runs combination K.

``dvc exp run --run-all`` would wait too, but it waits without limit for each task's process
to start and for its result, so a task whose worker died keeps it waiting for ever; and it exits
0 when experiments failed. The wait here ends when the tasks have ended, or with an error naming
the tasks that are queued or running while no worker is alive to run them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from dvc.repo import Repo
from dvc.utils.cli_parse import to_path_overrides
from dvc.utils.hydra import get_hydra_sweeps

from fmnist.cli import run_stage
from fmnist.errors import PipelineError
from fmnist.files import write_text
from fmnist.params import read_yaml_file
from fmnist.report import format_percent, markdown_table
from tools.dvc_cli import dvc_command, get_dotted, run_dvc, set_arguments

log = logging.getLogger("study")

EXPERIMENTS_FILE = Path("experiments.yaml")
TIMES_FILE = Path("bench/accuracy.json")
TABLE_START = "<!-- study-table:start -->"
TABLE_END = "<!-- study-table:end -->"
TEST_ACCURACY = ("metrics/evaluate.json", "accuracy")
VALIDATION_ACCURACY = ("metrics/train/metrics.json", "eval.accuracy")
PENDING_STATES = ("Queued", "Running")
POLL_SECONDS = 5.0
# A worker takes a few seconds to start and answers status requests within one; this long
# without any answer while tasks wait means no worker is left to run them.
NO_WORKER_SECONDS = 30.0


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    params: dict[str, object]
    reported: str = ""
    """What the study reported for this setting, as text (for example "76.8% test")."""
    note: str = ""
    """Why the measured figure differs from the reported one, where that is known."""
    settings: tuple[str, ...] = ()
    """``key=value`` overrides as DVC's ``-S`` takes them, used instead of ``params``."""


def load_experiments(path: str | os.PathLike[str] = EXPERIMENTS_FILE) -> list[Experiment]:
    """The experiments of ``path``, in file order; shared settings come from YAML anchors."""
    path = Path(path)
    document = read_yaml_file(path)
    experiments = []
    for name, entry in (document.get("experiments") or {}).items():
        try:
            experiments.append(Experiment(name=name, **entry))
        except TypeError as error:
            raise PipelineError(f"{path}: experiment {name}: {error}") from None
    return experiments


def choose_experiments(experiments: list[Experiment], names: list[str]) -> list[Experiment]:
    """The experiments named ``names`` in file order, or all of them when ``names`` is empty."""
    known = [experiment.name for experiment in experiments]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise PipelineError(f"unknown experiments {', '.join(unknown)} (known: {', '.join(known)})")
    return [experiment for experiment in experiments if not names or experiment.name in names]


def run_command(experiment: Experiment, queue: bool = False) -> list[str]:
    """``dvc exp run`` for ``experiment``: in the workspace, or into the queue."""
    command = ["dvc", "exp", "run", "--queue"] if queue else ["dvc", "exp", "run"]
    if experiment.settings:
        overrides = [argument for setting in experiment.settings for argument in ("-S", setting)]
    else:
        overrides = set_arguments(experiment.params)
    return [*command, "-n", experiment.name, *overrides]


def sweep_experiments(expression: str, prefix: str) -> list[Experiment]:
    """One experiment per combination of ``expression``, DVC's ``-S`` sweep syntax (several
    separated by spaces), named and ordered as ``dvc exp run --queue -n PREFIX`` would.
    """
    overrides = shlex.split(expression)
    if not overrides:
        raise PipelineError("--sweep: no `key=value,value` expression given")
    try:
        sweeps = get_hydra_sweeps(to_path_overrides(overrides))
    except Exception as error:  # hydra's parser raises several kinds of its own
        reason = str(error).strip().splitlines()[0]
        raise PipelineError(f"--sweep {expression[:200]!r}: {reason}") from None
    experiments = []
    for index, sweep in enumerate(sweeps, start=1):
        settings = tuple(setting for path_settings in sweep.values() for setting in path_settings)
        name = f"{prefix}-{index}"
        experiments.append(Experiment(name, " ".join(settings), {}, settings=settings))
    return experiments


def remove_earlier_runs(names: list[str]) -> None:
    """Remove HEAD's experiments named ``names``: ``dvc exp run -n`` refuses a name in use."""
    taken = {run["name"] for run in _all_runs(run_dvc("exp", "show", "--json"))}
    earlier = [name for name in names if name in taken]
    if earlier:
        log.info("removing earlier runs of %s", ", ".join(earlier))
        run_dvc("exp", "remove", *earlier)


def run_in_workspace(experiment: Experiment) -> None:
    """Run ``experiment`` in the workspace, its output on this terminal, and keep its results."""
    remove_earlier_runs([experiment.name])
    command = run_command(experiment)
    log.info("running %s: %s", experiment.name, shlex.join(command))
    if subprocess.run(dvc_command(*command[1:])).returncode != 0:
        raise PipelineError(f"experiment {experiment.name} failed (see the output above)")
    log.info("%s: its params and metrics are in the workspace (`dvc exp show`)", experiment.name)


def read_queue() -> tuple[list[dict], bool]:
    """The queue's tasks, as ``dvc queue status`` lists them, and whether any worker is alive."""
    with Repo() as repo:
        queue = repo.experiments.celery_queue
        return queue.status(), bool(queue.worker_status())


def _task_name(task: dict) -> str:
    return task["name"] or task["rev"][:7]


def stalled_error(tasks: list[dict]) -> PipelineError:
    """The error for ``tasks`` (``status()`` entries) queued or running with no worker alive."""
    running = [_task_name(task) for task in tasks if task["status"] == "Running"]
    queued = [_task_name(task) for task in tasks if task["status"] == "Queued"]
    lines = ["no DVC queue worker is alive, but these experiment tasks wait for one:"]
    lines += [f"  {_task_name(task)}: {task['status'].lower()}" for task in tasks]
    lines.append("the workers' logs are .dvc/tmp/exps/celery/*.out")
    if running:
        names = " ".join(running)
        lines.append(
            f"running ones: `dvc queue kill {names}` stops their processes; called again, it "
            f"marks them failed; then `dvc queue remove {names}` drops them"
        )
    if queued:
        names = " ".join(queued)
        lines.append(
            f"queued ones: `dvc queue start` runs them, `dvc queue remove {names}` drops them"
        )
    return PipelineError("\n".join(lines))


def wait_for_tasks(revisions: dict[str, str]) -> dict[str, str]:
    """Wait until the tasks ``revisions`` (stash revision: name) have ended; their final states.

    Raises PipelineError once some of them have waited ``NO_WORKER_SECONDS`` with no worker.
    """
    reported: dict[str, str] = {}
    no_worker_since: float | None = None
    while True:
        tasks, worker_alive = read_queue()
        ours = [task for task in tasks if task["rev"] in revisions]
        for task in ours:
            if reported.get(task["rev"]) != task["status"]:
                log.info("%s: %s", _task_name(task), task["status"].lower())
                reported[task["rev"]] = task["status"]
        pending = [task for task in ours if task["status"] in PENDING_STATES]
        if not pending:
            return {revisions[revision]: state for revision, state in reported.items()}
        if worker_alive:
            no_worker_since = None
        elif no_worker_since is None:
            no_worker_since = time.monotonic()
        elif time.monotonic() - no_worker_since >= NO_WORKER_SECONDS:
            raise stalled_error(pending)
        time.sleep(POLL_SECONDS)


def run_queued(experiments: list[Experiment], jobs: int) -> None:
    """Queue the experiments, run them ``jobs`` at a time and wait until all have ended."""
    tasks, worker_alive = read_queue()
    stalled = [task for task in tasks if task["status"] in PENDING_STATES]
    if stalled and not worker_alive:
        raise stalled_error(stalled)
    remove_earlier_runs([experiment.name for experiment in experiments])
    for experiment in experiments:
        log.info("queueing %s: %s", experiment.name, experiment.title)
        run_dvc(*run_command(experiment, queue=True)[1:])
    queued_before = {task["rev"] for task in tasks}
    revisions = {
        task["rev"]: _task_name(task)
        for task in read_queue()[0]
        if task["rev"] not in queued_before
    }
    started_at = time.monotonic()
    # The workers outlive this process: they must not hold its output open.
    worker_start = subprocess.run(
        dvc_command("queue", "start", "-j", str(jobs)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if worker_start.returncode != 0:
        raise PipelineError(f"`dvc queue start -j {jobs}` failed; see `dvc queue status`")
    log.info("running %d at a time; follow one with `dvc queue logs -f NAME`", jobs)
    states = wait_for_tasks(revisions)
    failed = [name for name in revisions.values() if states.get(name) != "Success"]
    if failed:
        raise PipelineError(f"experiments failed: {', '.join(failed)} (see `dvc queue logs NAME`)")
    log.info("%d experiments succeeded in %.0f s", len(revisions), time.monotonic() - started_at)


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


def metric_value(run: dict | None, path: str, key: str) -> float | None:
    """The metric ``key`` (dotted for nested keys) of the file ``path`` in ``run``."""
    try:
        return float(get_dotted(run["metrics"][path]["data"], key))
    except (KeyError, TypeError, ValueError):
        return None


def _percent(value: float | None) -> str:
    return "-" if value is None else format_percent(value)


def _duration(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f} min"


def read_times(path: Path) -> dict[str, float]:
    """Each experiment's seconds in a ``make bench`` result file; none if it is absent."""
    if not path.is_file():
        return {}
    try:
        experiments = json.loads(path.read_text(encoding="utf-8"))["experiments"]
        return {name: float(row["seconds"]) for name, row in experiments.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise PipelineError(f"{path}: not a `make bench` result ({error})") from None


def render_table(
    experiments: list[Experiment],
    results: dict[str, dict],
    seconds: dict[str, float] | None = None,
) -> str:
    """The results table: each experiment, the study's figure, the measured ones, the time of
    ``make exp`` where ``seconds`` has it (``make bench``'s bench/accuracy.json), the command.
    """
    seconds = seconds or {}
    rows = []
    for experiment in experiments:
        run = results.get(experiment.name)
        test = metric_value(run, *TEST_ACCURACY)
        validation = metric_value(run, *VALIDATION_ACCURACY)
        rows.append(
            [
                experiment.title,
                experiment.reported or "not reported",
                _percent(test),
                _percent(validation),
                _duration(seconds.get(experiment.name)),
                f"`make exp NAME={experiment.name}`",
            ]
        )
    header = ["experiment", "study reported", "measured test", "measured val"]
    lines = markdown_table([*header, "time (2 cores)", "command"], rows, right=(2, 3, 4))
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
    exp = commands.add_parser("exp", help="run one experiment in the workspace")
    exp.add_argument("name", help="the experiment to run")
    exp.add_argument("--dry-run", action="store_true", help="print the dvc command only")
    plan = commands.add_parser("plan", help="print experiment names as JSON, for a CI matrix")
    plan.add_argument("names", nargs="*", help="experiments (default: all)")
    for command in (exp, plan):
        command.add_argument("--sweep", help="DVC sweep expressions instead of experiments.yaml")
        command.add_argument("--prefix", default="sweep", help="sweep names: PREFIX-1, ... (sweep)")
    run = commands.add_parser("run", help="queue experiments, run the queue and wait for it")
    run.add_argument("names", nargs="*", help="experiments to run (default: all)")
    run.add_argument("--jobs", type=int, default=1, help="experiments run at once")
    run.add_argument("--dry-run", action="store_true", help="print the dvc commands only")
    table = commands.add_parser("table", help="print the results table or update a file")
    table.add_argument("--readme", type=Path, help="rewrite the table between its markers")
    table.add_argument(
        "--times", type=Path, default=TIMES_FILE, help=f"make bench's results ({TIMES_FILE})"
    )
    args = parser.parse_args()
    # The queue's broker is a local directory: kombu's warning that it has no host is noise.
    logging.getLogger("kombu.connection").setLevel(logging.ERROR)

    if getattr(args, "sweep", None):
        experiments = sweep_experiments(args.sweep, args.prefix)
    else:
        experiments = load_experiments(args.file)
    if args.command == "table":
        results = latest_results(run_dvc("exp", "show", "--json", "-A"))
        rendered = render_table(experiments, results, read_times(args.times))
        if args.readme:
            update_readme(args.readme, rendered)
            log.info("updated the table in %s", args.readme)
        else:
            print(rendered)
        return
    if args.command == "plan":
        names = [experiment.name for experiment in choose_experiments(experiments, args.names)]
        print(json.dumps(names))
        return
    queue = args.command == "run"
    chosen = choose_experiments(experiments, args.names if queue else [args.name])
    if args.dry_run:
        for experiment in chosen:
            print(shlex.join(run_command(experiment, queue)))
    elif queue:
        run_queued(chosen, args.jobs)
    else:
        run_in_workspace(chosen[0])


if __name__ == "__main__":
    run_stage("study", main)
