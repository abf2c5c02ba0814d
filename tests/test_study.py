"""The study runner: experiments.yaml, the dvc commands it builds, the README table."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from bench.workspace import copy_workspace
from fmnist.errors import PipelineError
from fmnist.params import parse_params
from fmnist.study import (
    TABLE_END,
    TABLE_START,
    Experiment,
    latest_results,
    load_experiments,
    queue_command,
    render_table,
    set_arguments,
    update_readme,
)
from tests.conftest import REPOSITORY_ROOT
from tests.helpers import dvc, git, run


def apply_sets(document: dict, arguments: list[str]) -> dict:
    """What `dvc exp run -S key=value` does to params.yaml: set each dotted key (YAML value)."""
    for flag, assignment in zip(arguments[::2], arguments[1::2], strict=True):
        assert flag == "-S"
        key, text = assignment.split("=", 1)
        *parents, last = key.split(".")
        section = document
        for parent in parents:
            section = section[parent]
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


def test_queue_command_names_the_experiment_and_sets_every_param() -> None:
    experiment = Experiment("tiny", "Tiny", {"train.epochs": 1, "train.hidden_units": [8]})

    command = queue_command(experiment)

    assert shlex.join(command) == (
        "dvc exp run --queue -n tiny -S train.epochs=1 -S 'train.hidden_units=[8]'"
    )


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
                            "metrics/train.json": {"data": {"val_accuracy": val}},
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

    table = render_table(experiments, results).splitlines()

    assert table[2] == (
        "| Setting A | 76.8% test | 83.12% | 84.00% | `python -m fmnist.study run a` |"
    )
    assert table[3] == "| Setting B | not reported | - | - | `python -m fmnist.study run b` |"
    assert "- **Setting A**: inputs were not scaled" in table


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


@pytest.mark.slow
def test_runner_queues_runs_and_tabulates_experiments(
    baseline_repository: Path, tmp_path: Path
) -> None:
    repository = copy_workspace(baseline_repository, tmp_path / "repository")
    (repository / "experiments.yaml").write_text(
        yaml.safe_dump(
            {
                "experiments": {
                    "tiny-relu": {"title": "ReLU", "params": {"train.activation": "relu"}},
                    "tiny-sigmoid": {
                        "title": "Sigmoid",
                        "reported": "55.2% test",
                        "params": {"train.activation": "sigmoid", "train.hidden_units": [8]},
                    },
                }
            }
        )
    )
    git("add", "experiments.yaml", cwd=repository)
    git("commit", "-q", "-m", "experiments", cwd=repository)

    run([sys.executable, "-m", "fmnist.study", "run", "--jobs", "2"], repository)

    results = latest_results(dvc("exp", "show", "--json", "-A", cwd=repository).stdout)
    assert set(results) == {"tiny-relu", "tiny-sigmoid"}
    sigmoid_params = results["tiny-sigmoid"]["params"]["params.yaml"]["data"]["train"]
    assert (sigmoid_params["activation"], sigmoid_params["hidden_units"]) == ("sigmoid", [8])
    for result in results.values():
        assert 0 <= result["metrics"]["metrics/evaluate.json"]["data"]["accuracy"] <= 1
    # The training curves of both experiments overlay in one plot.
    plots = json.loads(
        dvc("plots", "diff", "tiny-relu", "tiny-sigmoid", "--json", cwd=repository).stdout
    )
    assert set(plots["data"]["Loss"][0]["revisions"]) == {"tiny-relu", "tiny-sigmoid"}
    table = run([sys.executable, "-m", "fmnist.study", "table"], repository).stdout
    assert "| Sigmoid | 55.2% test |" in table
