"""The stale-results check: `dvc status --json`, less the data that is merely absent."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.helpers import copy_workspace, dvc, git, run, set_params, stages_run
from tools.staleness import absent_outputs, find_changes

# --- the filter, on `dvc status --json` documents as DVC prints them --------------------------

LOCK = {
    "stages": {
        "fetch": {"deps": [], "outs": [{"path": "data/raw", "md5": "a1.dir"}]},
        "train": {
            "deps": [{"path": "train.py", "md5": "b2"}, {"path": "data/raw", "md5": "a1.dir"}],
            "outs": [{"path": "model.keras", "md5": "c3"}, {"path": "metrics.json", "md5": "d4"}],
        },
    }
}
# A fresh clone: no data, no model, no DVC cache.
ABSENT_DATA = {
    "fetch": [{"changed outs": {"data/raw": "not in cache"}}],
    "train": [
        {"changed deps": {"data/raw": "deleted"}},
        {"changed outs": {"model.keras": "not in cache"}},
    ],
}


def test_data_that_is_merely_absent_is_no_change() -> None:
    assert find_changes(ABSENT_DATA, LOCK) == []
    assert find_changes({}, LOCK) == []


def test_after_a_pull_the_absent_outputs_are_named_by_stage() -> None:
    assert absent_outputs(ABSENT_DATA) == ["fetch: data/raw", "train: model.keras"]
    assert absent_outputs({"train": [{"changed deps": {"data/raw": "deleted"}}]}) == []
    assert absent_outputs({"train": ["changed command"]}) == []


def test_changes_name_the_stage_and_the_param_file_or_command() -> None:
    status = {
        **ABSENT_DATA,
        "train": [
            {
                "changed deps": {
                    "train.py": "modified",
                    "data/raw": "deleted",
                    "params.yaml": {"train.epochs": "modified", "train.l2": "new"},
                }
            },
            {"changed outs": {"model.keras": "not in cache", "metrics.json": "modified"}},
            "changed command",
        ],
    }
    assert find_changes(status, LOCK) == [
        "train: train.py modified",
        "train: params.yaml: train.epochs modified",
        "train: params.yaml: train.l2 new",
        "train: metrics.json modified",
        "train: changed command",
    ]


def test_an_absent_input_counts_when_its_stage_ran_again_since() -> None:
    lock = {
        "stages": {**LOCK["stages"], "fetch": {"outs": [{"path": "data/raw", "md5": "e5.dir"}]}}
    }
    assert find_changes(ABSENT_DATA, lock) == ["train: data/raw modified upstream since train ran"]


def test_a_stage_missing_from_dvc_lock_has_never_run() -> None:
    status = {"evaluate": [{"changed deps": {"evaluate.py": "modified"}}]}
    assert find_changes(status, LOCK) == ["evaluate: not in dvc.lock, never run"]
    assert find_changes(ABSENT_DATA, {}) == [
        "fetch: not in dvc.lock, never run",
        "train: not in dvc.lock, never run",
    ]


# --- end to end, on a repository that ran the pipeline on synthetic data ----------------------


def check(repository: Path) -> tuple[int, str]:
    """Run `python -m tools.staleness` in ``repository``: its exit status and its output."""
    result = run([sys.executable, "-m", "tools.staleness"], repository, check=False)
    assert "Traceback" not in result.stderr
    return result.returncode, result.stderr


def stale(output: str) -> list[str]:
    """The changes that the check's output lists, without its logging prefix."""
    prefix = "check-lock: error: dvc.lock is stale: "
    return [line.removeprefix(prefix) for line in output.splitlines() if line.startswith(prefix)]


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, baseline_repository: Path) -> Path:
    return copy_workspace(baseline_repository, tmp_path_factory.mktemp("staleness") / "repo")


@pytest.fixture
def clone(repository: Path, tmp_path: Path) -> Path:
    """A git clone of ``repository``: no data, no model, no DVC cache."""
    clone = tmp_path / "clone"
    git("clone", "-q", str(repository), str(clone), cwd=tmp_path)
    assert not (clone / "data/raw").exists()
    assert not (clone / "models/model.keras").exists()
    return clone


@pytest.mark.slow
def test_passes_on_the_committed_run(repository: Path) -> None:
    status, output = check(repository)
    assert status == 0, output
    assert "check-lock: dvc.lock is current" in output


@pytest.mark.slow
def test_a_param_edit_without_a_run_names_the_stages_and_the_param(repository: Path) -> None:
    set_params(repository, {"train.activation": "sigmoid"})
    try:
        status, output = check(repository)
    finally:
        git("checkout", "params.yaml", cwd=repository)
    assert status == 1
    # DVC names the param as dvc.yaml declares it: these stages read the whole `train` section.
    assert stale(output) == [
        "train: params.yaml: train modified",
        "report: params.yaml: train modified",
    ]  # evaluate does not read train params
    assert output.splitlines()[-1].endswith("run `dvc repro` and commit dvc.lock with its results")


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
    assert stale(output) == ["evaluate: stages/evaluate.py modified"]


@pytest.mark.slow
def test_a_command_edit_in_dvc_yaml_names_the_stage(repository: Path) -> None:
    pipeline = repository / "dvc.yaml"
    original = pipeline.read_text()
    pipeline.write_text(
        original.replace("python -m stages.evaluate", "python -O -m stages.evaluate")
    )
    try:
        status, output = check(repository)
    finally:
        pipeline.write_text(original)
    assert status == 1
    assert stale(output) == ["evaluate: changed command"]


@pytest.mark.slow
def test_passes_again_once_the_change_is_run_and_committed(repository: Path) -> None:
    # 12, not a one-digit value: git may miss an edit that keeps a file's size within a second.
    set_params(repository, {"report.misclassified": 12})
    status, output = check(repository)
    assert status == 1
    assert stale(output) == ["report: params.yaml: report modified"]

    assert stages_run(dvc("repro", cwd=repository).stdout) == {"report"}
    git("commit", "-q", "-am", "twelve misclassified images", cwd=repository)

    status, output = check(repository)
    assert status == 0, output


@pytest.mark.slow
def test_passes_on_a_fresh_clone_without_data(clone: Path) -> None:
    status, output = check(clone)
    assert status == 0, output


@pytest.mark.slow
def test_a_param_edit_on_a_fresh_clone_names_the_stages_and_the_param(clone: Path) -> None:
    set_params(clone, {"train.epochs": 3})
    status, output = check(clone)
    assert status == 1
    assert stale(output) == [
        "train: params.yaml: train modified",
        "report: params.yaml: train modified",
    ]
