"""What a team meets in its first hour with a clone: `make reset` from every state, params
checked before DVC removes anything, and `make show` readable at 120 columns."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import copy_workspace, digests, dvc, git, make, stages_run
from tools.workspace import command_environment

pytestmark = pytest.mark.slow

UP_TO_DATE = "Data and pipelines are up to date."


def assert_back_at_the_last_commit(repository: Path) -> None:
    assert dvc("status", cwd=repository).stdout.strip() == UP_TO_DATE
    assert git("status", "--porcelain", "--untracked-files=no", cwd=repository) == ""


@pytest.fixture
def repository(tmp_path: Path, baseline_repository: Path) -> Path:
    return copy_workspace(baseline_repository, tmp_path / "repository")


def test_make_reset_goes_back_after_an_experiment_a_repro_and_a_failed_stage(
    repository: Path,
) -> None:
    sigmoid = dvc("exp", "run", "-S", "train.activation=sigmoid", cwd=repository)
    # A train param reruns exactly the stages that depend on it.
    assert stages_run(sigmoid.stdout) == {"train", "evaluate", "report"}
    diff = json.loads(dvc("metrics", "diff", "--json", cwd=repository).stdout)
    assert (
        diff["metrics/evaluate.json"]["accuracy"]["old"]
        != diff["metrics/evaluate.json"]["accuracy"]["new"]
    )
    # At 120 columns the changed param is in view: DVC cuts columns that do not fit.
    shown = subprocess.run(
        ["script", "-qec", "make -o setup show", "/dev/null"],
        cwd=repository,
        env=command_environment({"COLUMNS": "120", "LINES": "40"}),
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stdout
    assert "sigmoid" in shown.stdout, shown.stdout
    make("reset", repository)
    assert_back_at_the_last_commit(repository)

    # `dvc gc` drops the sigmoid run's outputs, never pushed, and keeps its run-cache record.
    dvc(
        "remote",
        "add",
        "--local",
        "-d",
        "storage",
        str(repository.parent / "remote"),
        cwd=repository,
    )
    dvc("gc", "--workspace", "--force", cwd=repository)
    pushed = make("push", repository)
    skipped = [line for line in pushed.stderr.splitlines() if "run-cache: skipped" in line]
    assert len(skipped) == 1 and "no longer in the cache" in skipped[0], pushed.stderr
    make("reset", repository)
    assert_back_at_the_last_commit(repository)

    params = repository / "params.yaml"
    committed = params.read_text()
    params.write_text(committed.replace("misclassified: 5", "misclassified: 4"))
    dvc("repro", cwd=repository)  # with autostage, dvc.lock is now staged
    make("reset", repository)
    assert_back_at_the_last_commit(repository)

    params.write_text(committed.replace("activation: relu", "activation: sigmod"))
    failed = dvc("repro", cwd=repository, check=False)  # DVC removed train's outputs first
    assert failed.returncode != 0 and not (repository / "models/model.keras").exists()
    make("reset", repository)
    assert_back_at_the_last_commit(repository)


def test_make_reset_on_a_fresh_clone_says_how_to_get_the_results(
    baseline_repository: Path, tmp_path: Path
) -> None:
    clone = tmp_path / "clone"
    git("clone", "-q", str(baseline_repository), str(clone), cwd=tmp_path)

    result = make("reset", clone, check=False)

    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode != 0
    assert len(errors) == 1 and "`dvc pull`" in errors[0] and "`make repro`" in errors[0]


def test_a_misspelt_value_stops_make_repro_and_make_exp_with_every_output_kept(
    repository: Path,
) -> None:
    before = digests(repository)
    params = repository / "params.yaml"
    committed = params.read_text()
    params.write_text(committed.replace("activation: relu", "activation: sigmod"))

    repro = make("repro", repository, check=False)

    assert repro.returncode != 0
    errors = [line for line in repro.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "train.activation" in errors[0] and "'sigmod'" in errors[0]
    assert digests(repository) == before

    params.write_text(committed)
    experiments = repository / "experiments.yaml"
    experiments.write_text(
        "experiments:\n  typo:\n    title: Typo\n    params: {train.optimizer: adamm}\n"
    )
    exp = make("exp", repository, check=False, NAME="typo")

    assert exp.returncode != 0 and "train.optimizer" in exp.stderr and "'adamm'" in exp.stderr
    assert params.read_text() == committed
    assert digests(repository) == before
