"""The stale-results check: dvc.lock against params.yaml, dvc.yaml and the code git holds."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import yaml

from bench.workspace import copy_workspace, set_params, stages_run
from fmnist.staleness import (
    Finding,
    compare_command,
    compare_params,
    differences,
    find_stale_stages,
)
from tests.helpers import dvc, git, run

# --- comparisons, on in-memory data -----------------------------------------------------------


def test_differences_name_each_changed_leaf() -> None:
    locked = {"activation": "relu", "hidden_units": [512], "augment": {"flip": False}}
    current = {"activation": "sigmoid", "hidden_units": [512], "augment": {"flip": True}, "l2": 0}
    assert differences("train", locked, current) == [
        "train.activation changed: 'relu' in dvc.lock, 'sigmoid' now",
        "train.augment.flip changed: false in dvc.lock, true now",
        "train.l2 = 0 is new since dvc.lock",
    ]
    assert differences("train", {"epochs": 2}, {}) == ["train.epochs is gone (dvc.lock has 2)"]


def test_params_compare_sections_dotted_keys_and_other_files() -> None:
    files = {
        "params.yaml": {"seed": 42, "train": {"epochs": 3}},
        "other.yaml": {"threshold": 0.5},
    }
    declaration = ["seed", "train.epochs", {"other.yaml": ["threshold"]}]
    locked = {
        "params.yaml": {"seed": 42, "train.epochs": 2},
        "other.yaml": {"threshold": 0.5},
    }
    assert compare_params("train", declaration, locked, files) == [
        Finding("train", "params.yaml: train.epochs changed: 2 in dvc.lock, 3 now")
    ]
    assert compare_params("train", ["seed"], {"params.yaml": {"seed": 42}}, files) == []
    assert compare_params("train", ["seed", "train"], {"params.yaml": {"seed": 42}}, files) == [
        Finding("train", "params.yaml: train is declared but not in dvc.lock")
    ]


def test_commands_are_compared_after_interpolation() -> None:
    params = {"train": {"epochs": 3}}
    assert (
        compare_command(
            "train", "python t.py --epochs ${train.epochs}", "python t.py --epochs 3", params
        )
        == []
    )
    [finding] = compare_command("train", "python t.py --fast", "python t.py", params)
    assert finding.message == "cmd changed: 'python t.py' in dvc.lock, 'python t.py --fast' now"


def test_stages_missing_from_or_extra_in_the_lock(tmp_path: Path) -> None:
    script = tmp_path / "step.py"
    script.write_text("print('hello')\n")
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    stage = {"cmd": "python step.py", "deps": ["step.py"], "params": ["seed"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"one": stage, "two": stage}}))
    md5 = hashlib.md5(script.read_bytes()).hexdigest()
    locked = {
        "cmd": "python step.py",
        "deps": [{"path": "step.py", "hash": "md5", "md5": md5, "size": 15}],
        "params": {"params.yaml": {"seed": 1}},
    }
    lock = {"schema": "2.0", "stages": {"one": locked, "gone": locked}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    git("init", "-q", cwd=tmp_path)
    git("add", "-A", cwd=tmp_path)

    findings, hashed = find_stale_stages(tmp_path)

    assert [str(finding) for finding in findings] == [
        "two: not in dvc.lock: the stage has never been run",
        "gone: in dvc.lock but no longer in dvc.yaml",
    ]
    assert hashed == 1


# --- end to end, on a repository that ran the pipeline on synthetic data ----------------------


def check(repository: Path) -> tuple[int, str]:
    """Run `python -m fmnist.staleness` in ``repository``: its exit status and its output."""
    result = run([sys.executable, "-m", "fmnist.staleness"], repository, check=False)
    assert "Traceback" not in result.stderr
    return result.returncode, result.stderr


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, baseline_repository: Path) -> Path:
    return copy_workspace(baseline_repository, tmp_path_factory.mktemp("staleness") / "repo")


@pytest.mark.slow
def test_passes_on_the_committed_run(repository: Path) -> None:
    status, output = check(repository)
    assert status == 0, output
    assert "dvc.lock matches" in output


@pytest.mark.slow
def test_a_param_edit_without_a_run_names_the_stages_and_the_param(repository: Path) -> None:
    set_params(repository, {"train.activation": "sigmoid"})
    try:
        status, output = check(repository)
    finally:
        git("checkout", "params.yaml", cwd=repository)
    assert status == 1
    changed = "params.yaml: train.activation changed: 'relu' in dvc.lock, 'sigmoid' now"
    assert f"train: {changed}" in output
    assert f"report: {changed}" in output
    assert "evaluate:" not in output  # evaluate does not read train params


@pytest.mark.slow
def test_a_code_edit_without_a_run_names_the_stage_and_the_file(repository: Path) -> None:
    script = repository / "stages/evaluate.py"
    original = script.read_text()
    script.write_text(original + "# a change\n")
    try:
        status, output = check(repository)
    finally:
        script.write_text(original)
    assert status == 1
    assert "error: evaluate: dependency stages/evaluate.py changed since dvc.lock" in output
    assert "train:" not in output


@pytest.mark.slow
def test_passes_again_once_the_change_is_run_and_committed(repository: Path) -> None:
    # 12, not a one-digit value: git may miss an edit that keeps a file's size within a second.
    set_params(repository, {"report.misclassified": 12})
    status, output = check(repository)
    assert status == 1
    assert "report: params.yaml: report.misclassified changed: 5 in dvc.lock, 12 now" in output

    assert stages_run(dvc("repro", cwd=repository).stdout) == {"report"}
    git("commit", "-q", "-am", "twelve misclassified images", cwd=repository)

    status, output = check(repository)
    assert status == 0, output


@pytest.mark.slow
def test_passes_on_a_fresh_clone_without_data(repository: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    git("clone", "-q", str(repository), str(clone), cwd=tmp_path)
    # git holds only DVC's .gitignore files there: no data, no model.
    assert not (clone / "data/raw").exists()
    assert not (clone / "models/model.keras").exists()

    status, output = check(clone)

    assert status == 0, output
