"""The study runner: experiments.yaml, the dvc commands it builds, the README table."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from dvc.repo import Repo

from fmnist.errors import PipelineError
from fmnist.params import parse_params
from tests.conftest import REPOSITORY_ROOT
from tests.helpers import dvc, git, run
from tools.dvc_cli import get_dotted, set_arguments
from tools.study import (
    TABLE_END,
    TABLE_START,
    Experiment,
    choose_experiments,
    latest_results,
    load_experiments,
    read_times,
    render_table,
    run_command,
    stalled_error,
    sweep_experiments,
    update_readme,
)
from tools.workspace import command_environment, copy_workspace


def apply_sets(document: dict, arguments: list[str]) -> dict:
    """What `dvc exp run -S key=value` does to params.yaml: set each dotted key (YAML value)."""
    for flag, assignment in zip(arguments[::2], arguments[1::2], strict=True):
        assert flag == "-S"
        key, text = assignment.split("=", 1)
        parent, _, last = key.rpartition(".")
        section = get_dotted(document, parent) if parent else document
        assert last in section, f"{key} is not a key of params.yaml"
        section[last] = yaml.safe_load(text)
    return document


def test_set_arguments_write_yaml_values() -> None:
    arguments = set_arguments(
        {"train.hidden_units": [128, 64], "train.augment.flip": False, "train.learning_rate": 0.01}
    )

    assert arguments == [
        "-S",
        "train.hidden_units=[128, 64]",
        "-S",
        "train.augment.flip=false",
        "-S",
        "train.learning_rate=0.01",
    ]


def test_every_repository_experiment_gives_valid_params() -> None:
    base = yaml.safe_load((REPOSITORY_ROOT / "params.yaml").read_text())

    experiments = load_experiments(REPOSITORY_ROOT / "experiments.yaml")

    assert len({experiment.name for experiment in experiments}) == len(experiments)
    for experiment in experiments:
        document = apply_sets(json.loads(json.dumps(base)), set_arguments(experiment.params))
        parse_params(document, experiment.name)


def test_the_study_experiments_are_all_there() -> None:
    experiments = {e.name: e for e in load_experiments(REPOSITORY_ROOT / "experiments.yaml")}

    relu, sigmoid = experiments["study-relu"].params, experiments["study-sigmoid"].params
    assert (relu["train.activation"], sigmoid["train.activation"]) == ("relu", "sigmoid")
    assert {key: value for key, value in sigmoid.items() if relu[key] != value} == {
        "train.activation": "sigmoid"
    }
    assert relu["train.optimizer"] == "sgd" and relu["train.learning_rate"] == 0.01
    assert relu["train.batch_size"] == 1000 and relu["train.epochs"] == 10
    assert experiments["study-adam"].params["train.optimizer"] == "adam"
    assert experiments["study-dropout"].params["train.dropout"] == 0.2
    assert experiments["study-two-layers"].params["train.dropout"] == 0.0
    assert experiments["study-resplit"].params["split.method"] == "resplit"
    assert experiments["study-cnn"].params["train.cnn.filters"] == [32]


def test_run_command_names_the_experiment_and_sets_every_param() -> None:
    experiment = Experiment("tiny", "Tiny", {"train.epochs": 1, "train.hidden_units": [8]})

    assert shlex.join(run_command(experiment)) == (
        "dvc exp run -n tiny -S train.epochs=1 -S 'train.hidden_units=[8]'"
    )
    assert shlex.join(run_command(experiment, queue=True)) == (
        "dvc exp run --queue -n tiny -S train.epochs=1 -S 'train.hidden_units=[8]'"
    )


def test_choose_experiments_keeps_file_order_and_rejects_unknown_names() -> None:
    experiments = [Experiment(name, name.upper(), {}) for name in ("a", "b", "c")]

    assert [e.name for e in choose_experiments(experiments, ["c", "a"])] == ["a", "c"]
    assert choose_experiments(experiments, []) == experiments
    with pytest.raises(PipelineError, match=r"unknown experiments d \(known: a, b, c\)"):
        choose_experiments(experiments, ["a", "d"])


def test_a_sweep_is_one_experiment_per_combination_named_as_dvc_names_them() -> None:
    experiments = sweep_experiments("train.learning_rate=0.001,0.01 train.batch_size=64,128", "lr")

    assert [experiment.name for experiment in experiments] == ["lr-1", "lr-2", "lr-3", "lr-4"]
    assert run_command(experiments[2]) == [
        *("dvc", "exp", "run", "-n", "lr-3"),
        *("-S", "train.learning_rate=0.01", "-S", "train.batch_size=64"),
    ]
    assert len({experiment.settings for experiment in experiments}) == 4


def test_a_sweep_that_dvc_cannot_parse_is_one_line_naming_it() -> None:
    with pytest.raises(PipelineError, match=r"--sweep 'train.epochs=\(\(': ") as raised:
        sweep_experiments("train.epochs=((", "sweep")
    assert "\n" not in str(raised.value)
    with pytest.raises(PipelineError, match="no `key=value,value`"):
        sweep_experiments("  ", "sweep")


def test_plan_prints_the_names_for_a_matrix(tmp_path: Path) -> None:
    plan = [sys.executable, "-m", "tools.study", "plan"]

    named = run([*plan, "study-relu", "cnn-best"], REPOSITORY_ROOT)
    no_file = [sys.executable, "-m", "tools.study", "--file", str(tmp_path / "none.yaml"), "plan"]
    swept = run([*no_file, "--sweep", "train.epochs=1,2", "--prefix", "ci-7"], REPOSITORY_ROOT)
    unknown = run([*plan, "study-rleu"], REPOSITORY_ROOT, check=False)

    assert json.loads(named.stdout) == ["study-relu", "cnn-best"]
    assert json.loads(swept.stdout) == ["ci-7-1", "ci-7-2"]  # no experiments.yaml needed
    assert unknown.returncode == 1
    assert "unknown experiments study-rleu" in unknown.stderr


def test_stalled_error_names_the_tasks_and_how_to_clear_them() -> None:
    tasks = [
        {"rev": "0123456789", "name": "relu", "status": "Running"},
        {"rev": "abcdef0123", "name": None, "status": "Queued"},
    ]

    message = str(stalled_error(tasks))

    assert "no DVC queue worker is alive" in message
    assert "  relu: running\n  abcdef0: queued" in message
    assert "`dvc queue kill relu`" in message and "`dvc queue remove relu`" in message
    assert "`dvc queue start` runs them, `dvc queue remove abcdef0` drops them" in message


def test_load_experiments_rejects_unknown_fields(tmp_path: Path) -> None:
    path = tmp_path / "experiments.yaml"
    path.write_text("experiments:\n  x:\n    title: X\n    params: {}\n    colour: red\n")

    with pytest.raises(PipelineError, match=r"experiment x: .*colour"):
        load_experiments(path)


def show_json(*runs: tuple[str, str, float, float]) -> str:
    """Minimal `dvc exp show --json` output: (name, timestamp, test accuracy, val accuracy)."""
    experiments = [
        {
            "name": name,
            "revs": [
                {
                    "name": name,
                    "data": {
                        "timestamp": timestamp,
                        "params": {},
                        "metrics": {
                            "metrics/evaluate.json": {"data": {"accuracy": test}},
                            "metrics/train/metrics.json": {"data": {"eval": {"accuracy": val}}},
                        },
                    },
                }
            ],
        }
        for name, timestamp, test, val in runs
    ]
    return json.dumps([{"rev": "workspace", "experiments": None}, {"experiments": experiments}])


def test_table_uses_the_latest_run_of_each_experiment() -> None:
    experiments = [
        Experiment("a", "Setting A", {}, reported="76.8% test", note="inputs were not scaled"),
        Experiment("b", "Setting B", {}),
    ]
    results = latest_results(
        show_json(
            ("a", "2026-01-01T10:00:00", 0.5, 0.5), ("a", "2026-01-02T10:00:00", 0.8312, 0.84)
        )
    )

    table = render_table(experiments, results, {"a": 95.0}).splitlines()

    assert table[2] == "| Setting A | 76.8% test | 83.12% | 84.00% | 1.6 min | `make exp NAME=a` |"
    assert table[3] == "| Setting B | not reported | - | - | - | `make exp NAME=b` |"
    assert "- **Setting A**: inputs were not scaled" in table


def test_times_come_from_a_bench_result_or_are_absent(tmp_path: Path) -> None:
    result = tmp_path / "accuracy.json"
    result.write_text(json.dumps({"experiments": {"cnn-fast": {"seconds": 150.2}}}))
    broken = tmp_path / "broken.json"
    broken.write_text('{"experiments": [1]}')

    assert read_times(result) == {"cnn-fast": 150.2}
    assert read_times(tmp_path / "absent.json") == {}
    with pytest.raises(PipelineError, match="not a `make bench` result"):
        read_times(broken)


def test_update_readme_replaces_only_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{TABLE_START}\nold\n{TABLE_END}\nafter\n")

    update_readme(readme, "| new |")

    assert readme.read_text() == f"before\n{TABLE_START}\n| new |\n{TABLE_END}\nafter\n"


def test_update_readme_without_markers_is_an_error(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("no table here\n")

    with pytest.raises(PipelineError, match="markers"):
        update_readme(readme, "| new |")


def study_repository(template: Path, target: Path, experiments: dict[str, dict]) -> Path:
    """A copy of the pipeline repository ``template`` whose experiments.yaml (committed) holds
    ``experiments``.
    """
    repository = copy_workspace(template, target)
    (repository / "experiments.yaml").write_text(yaml.safe_dump({"experiments": experiments}))
    git("add", "experiments.yaml", cwd=repository)
    git("commit", "-q", "-m", "experiments", cwd=repository)
    return repository


def study(*arguments: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "tools.study", *arguments], cwd, check)


def running_experiment(repository: Path, timeout: float = 180) -> tuple[int, int]:
    """The process ids of a queue worker and of the experiment it runs, once one runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Repo(repository) as repo:
            queue = repo.experiments.celery_queue
            for tasks in queue.worker_status().values():
                for task in tasks:
                    experiment = queue.proc.get(task["args"][0]["stash_rev"])
                    if experiment:
                        return task["worker_pid"], experiment.pid
        time.sleep(1)
    raise AssertionError(f"no queued experiment started within {timeout:.0f} s")


def wait_for_exit(process_id: int, timeout: float = 180) -> None:
    """Wait until the process ``process_id``, not a child of this one, has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(process_id, 0)
        except ProcessLookupError:
            return
        time.sleep(1)


@pytest.mark.slow
def test_exp_runs_one_experiment_in_the_workspace(
    baseline_repository: Path, tmp_path: Path
) -> None:
    params = {"train.epochs": 1, "train.hidden_units": [8]}
    repository = study_repository(
        baseline_repository, tmp_path / "repository", {"tiny": {"title": "Tiny", "params": params}}
    )

    study("exp", "tiny", cwd=repository)
    # Running it again replaces the first run instead of failing on the name in use.
    study("exp", "tiny", cwd=repository)

    train = yaml.safe_load((repository / "params.yaml").read_text())["train"]
    assert (train["epochs"], train["hidden_units"]) == (1, [8])
    evaluation = json.loads((repository / "metrics" / "evaluate.json").read_text())
    training = json.loads((repository / "metrics" / "train" / "metrics.json").read_text())
    assert 0 <= evaluation["accuracy"] <= 1 and training["step"] == 1  # one epoch
    results = latest_results(dvc("exp", "show", "--json", cwd=repository).stdout)
    assert list(results) == ["tiny"]
    metrics = results["tiny"]["metrics"]["metrics/train/metrics.json"]["data"]
    assert metrics["eval"]["accuracy"] == training["eval"]["accuracy"]


@pytest.mark.slow
def test_runner_queues_runs_and_tabulates_experiments(
    baseline_repository: Path, tmp_path: Path
) -> None:
    repository = study_repository(
        baseline_repository,
        tmp_path / "repository",
        {
            "tiny-relu": {
                "title": "ReLU",
                "params": {"train.activation": "relu", "train.epochs": 1},
            },
            "tiny-sigmoid": {
                "title": "Sigmoid",
                "reported": "55.2% test",
                "params": {
                    "train.activation": "sigmoid",
                    "train.hidden_units": [8],
                    "train.epochs": 1,
                },
            },
        },
    )

    study("run", "--jobs", "2", cwd=repository)

    results = latest_results(dvc("exp", "show", "--json", "-A", cwd=repository).stdout)
    assert set(results) == {"tiny-relu", "tiny-sigmoid"}
    sigmoid_params = results["tiny-sigmoid"]["params"]["params.yaml"]["data"]["train"]
    assert (sigmoid_params["activation"], sigmoid_params["hidden_units"]) == ("sigmoid", [8])
    for result in results.values():
        assert 0 <= result["metrics"]["metrics/evaluate.json"]["data"]["accuracy"] <= 1
    # The validation curves of both experiments overlay in one plot.
    plots = json.loads(
        dvc("plots", "diff", "tiny-relu", "tiny-sigmoid", "--json", cwd=repository).stdout
    )
    validation_loss = plots["data"]["metrics/train/plots/metrics/eval/loss.tsv"]
    assert set(validation_loss[0]["revisions"]) == {"tiny-relu", "tiny-sigmoid"}
    table = study("table", cwd=repository).stdout
    # Both measured columns (test, validation) are filled from the runs' metrics.
    assert re.search(r"\| Sigmoid \| 55\.2% test \| [\d.]+% \| [\d.]+% \|", table), table


@pytest.mark.slow
def test_runner_refuses_a_queue_that_no_worker_runs(
    baseline_repository: Path, tmp_path: Path
) -> None:
    repository = study_repository(
        baseline_repository,
        tmp_path / "repository",
        {"tiny": {"title": "Tiny", "params": {"train.epochs": 1}}},
    )
    dvc("exp", "run", "--queue", "-n", "left-over", "-S", "train.epochs=1", cwd=repository)

    started = time.monotonic()
    result = study("run", cwd=repository, check=False)

    assert result.returncode == 1 and time.monotonic() - started < 60
    assert "no DVC queue worker is alive" in result.stderr
    assert "  left-over: queued" in result.stderr
    assert "`dvc queue remove left-over` drops them" in result.stderr
    with Repo(repository) as repo:
        assert [task["name"] for task in repo.experiments.celery_queue.status()] == ["left-over"]


@pytest.mark.slow
def test_runner_stops_when_the_worker_dies(baseline_repository: Path, tmp_path: Path) -> None:
    repository = study_repository(
        baseline_repository,
        tmp_path / "repository",
        {"tiny": {"title": "Tiny", "params": {"train.epochs": 1}}},
    )
    output = tmp_path / "study.log"
    with output.open("w") as log_file:
        runner = subprocess.Popen(
            [sys.executable, "-m", "tools.study", "run"],
            cwd=repository,
            env=command_environment(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    experiment_id = None
    try:
        worker_id, experiment_id = running_experiment(repository)
        # The worker dies as under the out-of-memory killer; its experiment runs on, orphaned.
        os.kill(worker_id, signal.SIGKILL)
        killed = time.monotonic()
        returncode = runner.wait(timeout=120)
        waited = time.monotonic() - killed
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        if experiment_id is not None:
            wait_for_exit(experiment_id)

    message = output.read_text()
    assert returncode == 1, message
    assert waited < 60, message
    assert "no DVC queue worker is alive" in message and "  tiny: running" in message
    assert "`dvc queue kill tiny`" in message
