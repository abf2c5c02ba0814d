"""The study runner: experiments.yaml, the dvc commands it builds, the docs' table."""

from __future__ import annotations

import fcntl
import json
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fmnist.errors import ParamsError, PipelineError
from fmnist.params import parse_params
from tests.conftest import REPOSITORY_ROOT
from tests.helpers import copy_workspace, dvc, git, make, run
from tools.dvc_cli import LOCK_FILE, PARAMS_BEFORE, get_dotted, set_arguments
from tools.study import (
    TABLE_END,
    TABLE_START,
    Experiment,
    check_params,
    choose_experiments,
    latest_results,
    load_experiments,
    read_times,
    render_table,
    run_command,
    sweep_experiments,
    update_readme,
)
from tools.workspace import command_environment


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
        check_params(experiment)  # the check make exp runs before DVC, from the repository root


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
    assert len({str(experiment.params) for experiment in experiments}) == 4


def test_a_sweep_that_dvc_cannot_parse_is_one_line_naming_it() -> None:
    with pytest.raises(PipelineError, match=r"--sweep 'train.epochs=\(\(': ") as raised:
        sweep_experiments("train.epochs=((", "sweep")
    assert "\n" not in str(raised.value)
    with pytest.raises(PipelineError, match="no `key=value,value`"):
        sweep_experiments("  ", "sweep")


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


def test_a_misspelt_value_is_refused_before_dvc_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPOSITORY_ROOT)

    with pytest.raises(ParamsError, match=r"train.activation: Input should be .*'sigmod'"):
        check_params(Experiment("typo", "Typo", {"train.activation": "sigmod"}))
    with pytest.raises(ParamsError, match=r"train.activaton: unknown key \(did you mean"):
        check_params(Experiment("typo", "Typo", {"train.activaton": "relu"}))


def study_repository(template: Path, target: Path, experiments: dict[str, dict]) -> Path:
    """A copy of the pipeline repository ``template`` whose experiments.yaml (committed) holds
    ``experiments``.
    """
    repository = copy_workspace(template, target)
    (repository / "experiments.yaml").write_text(yaml.safe_dump({"experiments": experiments}))
    git("add", "experiments.yaml", cwd=repository)
    git("commit", "-q", "-m", "experiments", cwd=repository)
    return repository


@pytest.mark.slow
def test_the_queue_runs_every_experiment_and_fails_naming_a_failed_one(
    baseline_repository: Path, tmp_path: Path
) -> None:
    sigmoid = {"train.activation": "sigmoid", "train.epochs": 1}
    experiments = {
        "tiny-sigmoid": {"title": "Sigmoid", "reported": "55.2% test", "params": sigmoid}
    }
    repository = study_repository(baseline_repository, tmp_path / "repository", experiments)
    # Queued by hand, as the README shows: valid params, but a source that does not exist, so
    # that the fetch stage fails at once.
    dvc("exp", "run", "--queue", "-n", "raw-fails", "-S", "fetch.sources=[/none]", cwd=repository)
    study = [sys.executable, "-m", "tools.study"]

    result = run([*study, "run"], repository, check=False)

    assert result.returncode == 1, result.stderr[-2000:]
    assert "experiments failed: raw-fails (see `dvc queue logs NAME`)" in result.stderr
    results = latest_results(dvc("exp", "show", "--json", cwd=repository).stdout)
    assert results["tiny-sigmoid"]["params"]["params.yaml"]["data"]["train"]["activation"] == (
        "sigmoid"
    )
    assert "raw-fails" not in results
    assert "| Sigmoid | 55.2% test | " in run([*study, "table"], repository).stdout
    empty = make("queue", repository, check=False)
    assert empty.returncode == 2 and "the queue is empty" in empty.stderr  # make: 2


@pytest.mark.slow
def test_a_second_command_is_refused_and_an_interrupted_experiment_leaves_params_as_they_were(
    baseline_repository: Path, tmp_path: Path
) -> None:
    slow = {"train.epochs": 1000, "train.batch_size": 8}  # minutes: it is interrupted first
    repository = study_repository(
        baseline_repository, tmp_path / "repository", {"slow": {"title": "Slow", "params": slow}}
    )
    params = (repository / "params.yaml").read_bytes()
    lock = repository / LOCK_FILE
    lock.parent.mkdir(parents=True, exist_ok=True)

    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("`make exp` (process 1)")
        held.flush()
        for target in ("exp", "study", "queue", "repro", "reset"):
            refused = make(target, repository, check=False, NAME="slow")
            assert refused.returncode == 2, (target, refused.stderr)
            errors = [line for line in refused.stderr.splitlines() if ": error: " in line]
            assert errors == [
                f"{'study' if target in ('exp', 'study', 'queue') else target}: error: `make exp` "
                "(process 1) is running in this clone; one at a time: wait for it to end"
            ], (target, refused.stderr)
    assert (repository / "params.yaml").read_bytes() == params

    # Interrupted once the train stage runs: SIGTERM, as `kill` sends it.
    running = subprocess.Popen(
        [sys.executable, "-m", "tools.study", "exp", "slow"],
        cwd=repository,
        env=command_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = []
    for line in running.stdout:
        output.append(line)
        if line.startswith("Running stage 'train'"):
            running.send_signal(signal.SIGTERM)
    assert running.wait(timeout=300) == 143, "".join(output)[-3000:]
    assert (repository / "params.yaml").read_bytes() == params
    assert git("symbolic-ref", "--short", "HEAD", cwd=repository).strip() == "main"
    assert not (repository / PARAMS_BEFORE).exists()

    # Killed outright (SIGKILL), with DVC's overrides left in params.yaml: the next one refuses.
    (repository / PARAMS_BEFORE).write_bytes(params)
    (repository / "params.yaml").write_bytes(params + b"# an override DVC left\n")
    refused = make("exp", repository, check=False, NAME="slow")
    assert refused.returncode == 2
    assert "params.yaml may still hold the overrides of an experiment that was killed" in (
        refused.stderr
    )
    make("reset", repository)
    assert (repository / "params.yaml").read_bytes() == params
    assert not (repository / PARAMS_BEFORE).exists()
