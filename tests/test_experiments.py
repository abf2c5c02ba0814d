"""Experiments on DVC's own machinery: the run-cache, params as DVC reads and writes them.

Each test works on a copy of the session's synthetic baseline repository (two epochs, run and
committed on main).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.helpers import dvc, git
from tools.workspace import copy_workspace, stages_run

pytestmark = pytest.mark.slow

TRAIN_AND_EVALUATE = ("train", "evaluate")


@pytest.fixture
def repository(tmp_path: Path, baseline_repository: Path) -> Path:
    return copy_workspace(baseline_repository, tmp_path / "repository")


def restored_from_run_cache(output: str) -> set[str]:
    """The stages that DVC's output says it restored from the run-cache instead of running."""
    return set(re.findall(r"Stage '([^']+)' is cached - skipping run", output))


def test_returning_to_params_that_ran_restores_from_the_run_cache(repository: Path) -> None:
    first = dvc("exp", "run", "-S", "train.epochs=1", cwd=repository)
    metrics = (repository / "metrics/evaluate.json").read_bytes()
    dvc("exp", "run", "-S", "train.epochs=2", cwd=repository)

    again = dvc("exp", "run", "-S", "train.epochs=1", cwd=repository)

    assert {"train", "evaluate"} <= stages_run(first.stdout)
    assert restored_from_run_cache(again.stdout) >= set(TRAIN_AND_EVALUATE)
    assert not stages_run(again.stdout) & set(TRAIN_AND_EVALUATE)
    assert (repository / "metrics/evaluate.json").read_bytes() == metrics
    summary = json.loads((repository / "metrics/train/metrics.json").read_text())
    assert summary["step"] == summary["kept_epoch"] == 1  # epochs, and dvclive's steps, from 1
    curve = (repository / "metrics/train/plots/metrics/eval/loss.tsv").read_text()
    assert [line.split("\t")[0] for line in curve.splitlines()] == ["step", "1"]
    assert "Data and pipelines are up to date" in dvc("status", cwd=repository).stdout


def test_setting_a_param_changes_exactly_its_line(repository: Path) -> None:
    dvc("exp", "run", "-S", "train.epochs=1", cwd=repository)

    assert git("diff", "--numstat", "HEAD", "--", "params.yaml", cwd=repository) == (
        "1\t1\tparams.yaml\n"
    )


def edit_param(repository: Path, key: str, spelling: str) -> None:
    """Write ``key: spelling`` into the train section of params.yaml by hand."""
    path = repository / "params.yaml"
    text, count = re.subn(
        rf"^  {key}: .*$", f"  {key}: {spelling}", path.read_text(), count=1, flags=re.MULTILINE
    )
    assert count == 1, key
    path.write_text(text)


@pytest.mark.parametrize(
    ("key", "spelling", "logged"),
    [
        ("learning_rate", "2e-3", "at learning rate 0.002"),
        ("epochs", "01", "1 epochs of batch"),
    ],
)
def test_the_train_stage_uses_the_value_dvc_records(
    repository: Path, key: str, spelling: str, logged: str
) -> None:
    edit_param(repository, key, spelling)

    result = dvc("repro", "train", cwd=repository)

    recorded = json.loads(dvc("params", "diff", "--json", cwd=repository).stdout)
    value = recorded["params.yaml"][f"train.{key}"]["new"]
    assert logged in result.stderr + result.stdout
    assert str(value) in logged


@pytest.mark.parametrize(
    ("key", "spelling"), [("nesterov", "yes"), ("epochs", "1:30"), ("batch_size", "0x")]
)
def test_a_spelling_yaml_versions_read_differently_is_refused_by_key(
    repository: Path, key: str, spelling: str
) -> None:
    edit_param(repository, key, spelling)

    result = dvc("repro", "train", cwd=repository, check=False)

    output = result.stdout + result.stderr
    assert result.returncode != 0
    errors = [line for line in output.splitlines() if "train: error:" in line]
    assert len(errors) == 1 and f"params.yaml: train.{key}: '{spelling}'" in errors[0], output
    assert "Traceback" not in output
