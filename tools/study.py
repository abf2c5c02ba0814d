"""Run the named experiments of ``experiments.yaml`` as DVC experiments and tabulate them.

- ``exp NAME`` (``make exp``): ``dvc exp run -n NAME -S key=value ...`` in the workspace.
- ``run [NAME ...]`` (``make study``): queue them, then run the queue as ``queue`` does.
- ``queue`` (``make queue``): run DVC's queue (``dvc exp run --run-all``) and fail naming every
  queued experiment that did not succeed (DVC itself exits 0 then).
- ``table [--readme FILE]``: the results table, from ``dvc exp show --json -A``.
- ``plan [--sweep EXPR] [NAME ...]``: the names as a JSON array, for a CI matrix whose jobs each
  run ``exp NAME [--sweep EXPR]``.

Params are checked before DVC touches params.yaml, one command at a time runs in a clone, and
``exp`` puts params.yaml back when the experiment fails or is interrupted (docs/guarantees.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from fmnist.cli import run_stage
from fmnist.errors import PipelineError
from fmnist.files import write_text
from fmnist.params import PARAMS_FILE, parse_params, read_yaml, read_yaml_file
from fmnist.report import format_percent, markdown_table
from tools.dvc_api import expand_sweep
from tools.dvc_cli import (
    PARAMS_BEFORE,
    dvc_command,
    get_dotted,
    one_at_a_time,
    run_dvc,
    run_to_end,
    set_arguments,
    set_dotted,
)

log = logging.getLogger("study")

EXPERIMENTS_FILE = Path("experiments.yaml")
TIMES_FILE = Path("bench/accuracy.json")
TABLE_START, TABLE_END = "<!-- study-table:start -->", "<!-- study-table:end -->"
TEST_ACCURACY = ("metrics/evaluate.json", "accuracy")
VALIDATION_ACCURACY = ("metrics/train/metrics.json", "eval.accuracy")


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    params: dict[str, object]
    reported: str = ""
    """What the study reported for this setting, as text (for example "76.8% test")."""
    note: str = ""
    """Why the measured figure differs from the reported one, where that is known."""


def load_experiments(path: Path = EXPERIMENTS_FILE) -> list[Experiment]:
    """The experiments of ``path``, in file order; shared settings come from YAML anchors."""
    experiments = []
    for name, entry in (read_yaml_file(path).get("experiments") or {}).items():
        try:
            experiments.append(Experiment(name=name, **entry))
        except TypeError as error:
            raise PipelineError(f"{path}: experiment {name}: {error}") from None
    return experiments


def sweep_experiments(expression: str, prefix: str) -> list[Experiment]:
    """One experiment per combination of DVC's ``-S`` sweep syntax, named as
    ``dvc exp run --queue -n PREFIX`` names them (PREFIX-1, PREFIX-2, ...)."""
    return [
        Experiment(
            f"{prefix}-{index}",
            " ".join(settings),
            {key: read_yaml(value) for key, _, value in (s.partition("=") for s in settings)},
        )
        for index, settings in enumerate(expand_sweep(shlex.split(expression)), start=1)
    ]


def choose_experiments(experiments: list[Experiment], names: list[str]) -> list[Experiment]:
    """The experiments named ``names`` in file order, or all of them when ``names`` is empty."""
    known = [experiment.name for experiment in experiments]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise PipelineError(f"unknown experiments {', '.join(unknown)} (known: {', '.join(known)})")
    return [experiment for experiment in experiments if not names or experiment.name in names]


def check_params(experiment: Experiment) -> None:
    """Validate params.yaml with the experiment's overrides, as DVC would write them."""
    document = read_yaml_file(PARAMS_FILE)
    for key, value in experiment.params.items():
        try:
            set_dotted(document, key, value)
        except (KeyError, TypeError):
            raise PipelineError(
                f"{experiment.name}: {key}: no such section in params.yaml"
            ) from None
    parse_params(document, f"{PARAMS_FILE} with {experiment.name}'s values")


def run_command(experiment: Experiment, queue: bool = False) -> list[str]:
    """``dvc exp run`` for ``experiment``: in the workspace, or into the queue."""
    command = ["dvc", "exp", "run", *(["--queue"] if queue else [])]
    return [*command, "-n", experiment.name, *set_arguments(experiment.params)]


def _runs(show_json: str) -> list[dict]:
    """Every experiment run in ``dvc exp show --json`` output: name, state, success and data."""
    runs = []
    for entry in json.loads(show_json or "[]"):
        for run in entry.get("experiments") or []:
            revision = run["revs"][0]
            state = (run.get("executor") or {}).get("state")
            data = revision.get("data") or {}
            succeeded = state in (None, "success") and not revision.get("error")
            runs.append({"name": run.get("name"), "state": state, "succeeded": succeeded, **data})
    return runs


def remove_earlier_runs(names: list[str]) -> None:
    """Remove HEAD's experiments named ``names``: ``dvc exp run -n`` refuses a name in use."""
    taken = set(run_dvc("exp", "list", "--name-only").split())
    earlier = [name for name in names if name in taken]
    if earlier:
        log.info("removing earlier runs of %s", ", ".join(earlier))
        run_dvc("exp", "remove", *earlier)


def run_in_workspace(experiment: Experiment) -> None:
    """``dvc exp run`` of ``experiment`` in the workspace; params.yaml is put back unless it
    succeeds (DVC leaves the overrides there), so that the next experiment does not inherit them.
    """
    before = PARAMS_FILE.read_bytes()
    if PARAMS_BEFORE.exists() and PARAMS_BEFORE.read_bytes() != before:
        raise PipelineError(
            f"{PARAMS_FILE} may still hold the overrides of an experiment that was killed: "
            f"`cp {PARAMS_BEFORE} {PARAMS_FILE}` puts back the params from before it, `make "
            "reset` the last commit's"
        )
    PARAMS_BEFORE.write_bytes(before)
    log.info("running %s: %s", experiment.name, shlex.join(run_command(experiment)))
    status = None
    try:
        status = run_to_end(dvc_command(*run_command(experiment)[1:]))
    finally:
        if status != 0:
            PARAMS_FILE.write_bytes(before)
            log.info("%s is back as it was before %s", PARAMS_FILE, experiment.name)
        PARAMS_BEFORE.unlink()
    if status != 0:
        raise PipelineError(f"experiment {experiment.name} failed (see the output above)")


def run_queue(jobs: int = 1) -> None:
    """Run DVC's queue and wait for it; PipelineError naming every queued experiment that did
    not succeed, where `dvc exp run --run-all` exits 0."""
    queued = [
        run["name"] for run in _runs(run_dvc("exp", "show", "--json")) if run["state"] == "queued"
    ]
    if not queued:
        raise PipelineError("the queue is empty: `dvc exp run --queue -S key=value` adds to it")
    log.info(
        "running %s, %d at a time (`dvc queue logs -f NAME` follows one)", ", ".join(queued), jobs
    )
    run_to_end(dvc_command("exp", "run", "--run-all", "--jobs", str(jobs)))
    succeeded = {
        run["name"]
        for run in _runs(run_dvc("exp", "show", "--json"))
        if run.get("metrics") and run["succeeded"]
    }
    failed = [name for name in queued if name not in succeeded]
    if failed:
        raise PipelineError(f"experiments failed: {', '.join(failed)} (see `dvc queue logs NAME`)")


def run_experiments(experiments: list[Experiment], queue: bool, jobs: int = 1) -> None:
    for experiment in experiments:
        check_params(experiment)
    remove_earlier_runs([experiment.name for experiment in experiments])
    if not queue:
        (experiment,) = experiments
        run_in_workspace(experiment)
        return
    for experiment in experiments:
        log.info("queueing %s: %s", experiment.name, experiment.title)
        run_dvc(*run_command(experiment, queue=True)[1:])
    run_queue(jobs)


def latest_results(show_json: str) -> dict[str, dict]:
    """The most recent run of each experiment name: its params and metrics."""
    latest: dict[str, dict] = {}
    for run in sorted(_runs(show_json), key=lambda run: run.get("timestamp") or ""):
        if run.get("timestamp") and run["succeeded"]:
            latest[run["name"]] = run  # a later run of the name replaces an earlier one
    return latest


def metric_value(run: dict | None, path: str, key: str) -> float | None:
    """The metric ``key`` (dotted for nested keys) of the file ``path`` in ``run``."""
    try:
        return float(get_dotted(run["metrics"][path]["data"], key))
    except (KeyError, TypeError, ValueError):
        return None


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
    experiments: list[Experiment], results: dict[str, dict], seconds: dict[str, float]
) -> str:
    """Each experiment, the study's figure, the measured ones, make bench's time, the command."""
    rows = []
    for experiment in experiments:
        run = results.get(experiment.name)
        figures = [metric_value(run, *TEST_ACCURACY), metric_value(run, *VALIDATION_ACCURACY)]
        time = seconds.get(experiment.name)
        rows.append(
            [
                experiment.title,
                experiment.reported or "not reported",
                *("-" if value is None else format_percent(value) for value in figures),
                "-" if time is None else f"{time / 60:.1f} min",
                f"`make exp NAME={experiment.name}`",
            ]
        )
    header = ["experiment", "study reported", "measured test", "measured val", "time (2 cores)"]
    lines = markdown_table([*header, "command"], rows, right=(2, 3, 4))
    notes = [f"- **{e.title}**: {e.note}" for e in experiments if e.note]
    return "\n".join(lines + (["", *notes] if notes else []))


def update_readme(readme: Path, table: str) -> None:
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), re.DOTALL)
    if not pattern.search(text):
        raise PipelineError(f"{readme}: no {TABLE_START} ... {TABLE_END} markers to replace")
    write_text(readme, pattern.sub(lambda _: f"{TABLE_START}\n{table}\n{TABLE_END}", text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=EXPERIMENTS_FILE, help="experiments YAML")
    commands = parser.add_subparsers(dest="command", required=True)
    exp = commands.add_parser("exp", help="run one experiment in the workspace")
    exp.add_argument("names", nargs=1, metavar="name")
    plan = commands.add_parser("plan", help="print experiment names as JSON, for a CI matrix")
    run = commands.add_parser("run", help="queue experiments, run the queue and wait for it")
    runner = commands.add_parser("queue", help="run DVC's queue; fail naming any that failed")
    for command in (run, runner):
        command.add_argument("--jobs", type=int, default=1, help="experiments run at once")
    for command in (plan, run):
        command.add_argument("names", nargs="*", help="experiments (default: all)")
    for command in (exp, plan):
        command.add_argument("--sweep", help="DVC sweep expressions instead of experiments.yaml")
        command.add_argument("--prefix", default="sweep", help="sweep names: PREFIX-1, ...")
    for command in (exp, run):
        command.add_argument("--dry-run", action="store_true", help="print the dvc commands")
    table = commands.add_parser("table", help="print the results table or update a file")
    table.add_argument("--readme", type=Path, help="rewrite the table between its markers")
    table.add_argument("--times", type=Path, default=TIMES_FILE, help="make bench's results")
    args = parser.parse_args()

    if args.command == "queue":
        with one_at_a_time("make queue"):
            run_queue(args.jobs)
        return
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
    chosen = choose_experiments(experiments, args.names)
    queue = args.command == "run"
    if args.command == "plan":
        print(json.dumps([experiment.name for experiment in chosen]))
    elif args.dry_run:
        for experiment in chosen:
            print(shlex.join(run_command(experiment, queue)))
    else:
        with one_at_a_time(f"make {'study' if queue else 'exp'}"):
            run_experiments(chosen, queue, getattr(args, "jobs", 1))


if __name__ == "__main__":
    run_stage("study", main)
