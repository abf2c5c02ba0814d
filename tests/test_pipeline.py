"""End to end: `dvc repro` and `dvc exp run` in a temporary git repository on synthetic data.

The repository's own dvc.yaml, stages and package are copied; params.yaml is the real one with
the data source pointed at small synthetic IDX files and a one-epoch, tiny network.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPOSITORY_ROOT

pytestmark = pytest.mark.slow

STAGES = ("fetch", "preprocess", "split", "train", "evaluate", "report")
COPIED = ("dvc.yaml", "params.yaml", "stages", "fmnist", ".gitignore", ".dvcignore", ".dvc/config")


def run(command: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command with the virtual environment's `python` and `dvc` first on PATH."""
    environment = dict(os.environ)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    environment.pop("PYTHONPATH", None)
    result = subprocess.run(
        command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def dvc(*arguments: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *arguments], cwd, check)


def git(*arguments: str, cwd: Path) -> str:
    return run(["git", *arguments], cwd).stdout


def stages_run(output: str) -> set[str]:
    """The stages that DVC's own output says it ran."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def experiment_activations(repository: Path) -> list[str]:
    """train.activation of every experiment that `dvc exp show` lists (not the workspace)."""
    shown = json.loads(dvc("exp", "show", "--json", cwd=repository).stdout)
    return [
        rev["data"]["params"]["params.yaml"]["data"]["train"]["activation"]
        for entry in shown
        for run in entry.get("experiments") or []
        for rev in run["revs"]
    ]


def declared_outputs(dvc_yaml: dict) -> list[str]:
    paths = []
    for stage in dvc_yaml["stages"].values():
        for section in ("outs", "metrics", "plots"):
            for entry in stage.get(section, []):
                paths.append(next(iter(entry)) if isinstance(entry, dict) else entry)
    return paths


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, synthetic_source) -> Path:
    """A git + DVC repository holding this pipeline, configured for the synthetic data."""
    source, sha256 = synthetic_source
    root = tmp_path_factory.mktemp("pipeline")
    for name in COPIED:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPOSITORY_ROOT / name).is_dir():
            shutil.copytree(
                REPOSITORY_ROOT / name, target, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(REPOSITORY_ROOT / name, target)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["fetch"].update(sources=[str(source)], sha256=sha256)
    params["train"].update(hidden_units=[16], epochs=2, batch_size=32)
    params["report"]["misclassified"] = 5
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git("init", "-q", "-b", "main", cwd=root)
    git("config", "user.email", "test@example.com", cwd=root)
    git("config", "user.name", "Test", cwd=root)
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "pipeline", cwd=root)
    return root


@pytest.fixture(scope="module")
def first_run(repository: Path) -> subprocess.CompletedProcess:
    result = dvc("repro", cwd=repository)
    git("add", "-A", cwd=repository)
    git("commit", "-q", "-m", "baseline run", cwd=repository)
    return result


def test_repro_runs_every_stage_and_writes_every_output(repository: Path, first_run) -> None:
    assert stages_run(first_run.stdout) == set(STAGES)
    dvc_yaml = yaml.safe_load((repository / "dvc.yaml").read_text())
    missing = [path for path in declared_outputs(dvc_yaml) if not (repository / path).exists()]
    assert missing == []
    metrics = json.loads((repository / "metrics/evaluate.json").read_text())
    assert metrics["accuracy"] > 0.3  # ten balanced classes: chance is 0.1
    report = (repository / "reports/report.md").read_text()
    for link in re.findall(r"\]\(([^)]+\.png)\)", report):
        assert (repository / "reports" / link).resolve().is_file(), link


def test_second_repro_runs_nothing(repository: Path, first_run) -> None:
    result = dvc("repro", cwd=repository)
    assert stages_run(result.stdout) == set()
    assert "Data and pipelines are up to date" in dvc("status", cwd=repository).stdout


def test_bad_param_fails_clearly_and_keeps_the_last_good_outputs(
    repository: Path, first_run
) -> None:
    kept = ("models/model.keras", "metrics/evaluate.json", "reports/report.md")
    before = {path: (repository / path).read_bytes() for path in kept}

    result = dvc("exp", "run", "-S", "train.activation=sigmod", cwd=repository, check=False)

    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "train.activation: 'sigmod' is not one of relu, sigmoid, tanh, elu, gelu" in output
    assert "Traceback" not in output
    assert {path: (repository / path).read_bytes() for path in kept} == before
    # Only the workspace holds the bad value; no experiment was recorded with it.
    assert "sigmod" not in experiment_activations(repository)
    # The README's recovery: restore the committed params; the outputs never went away.
    git("checkout", "params.yaml", cwd=repository)
    assert "Data and pipelines are up to date" in dvc("status", cwd=repository).stdout


def test_train_param_change_reruns_train_evaluate_report(repository: Path, first_run) -> None:
    result = dvc("exp", "run", "-S", "train.activation=sigmoid", cwd=repository)

    assert stages_run(result.stdout) == {"train", "evaluate", "report"}
    diff = json.loads(dvc("metrics", "diff", "--json", cwd=repository).stdout)
    accuracy = diff["metrics/evaluate.json"]["accuracy"]
    assert accuracy["old"] != accuracy["new"]
    experiments = json.loads(dvc("exp", "show", "--json", cwd=repository).stdout)
    runs = [run for entry in experiments for run in entry.get("experiments") or []]
    finished = [
        rev["data"]
        for run in runs
        for rev in run["revs"]
        if rev["data"]["params"]["params.yaml"]["data"]["train"]["activation"] == "sigmoid"
    ]
    assert finished, experiments
    assert finished[0]["metrics"]["metrics/evaluate.json"]["data"]["accuracy"] == accuracy["new"]


def test_split_param_change_does_not_refetch(repository: Path, first_run) -> None:
    result = dvc("exp", "run", "-S", "split.method=resplit", cwd=repository)

    assert stages_run(result.stdout) == {"split", "train", "evaluate", "report"}
    counts = json.loads((repository / "reports/split.json").read_text())
    assert sum(counts["test"].values()) == 100  # 20% of the 500 pooled images
