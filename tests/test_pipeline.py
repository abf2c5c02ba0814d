"""End to end: `dvc repro` and `dvc exp run` in a temporary git repository on synthetic data.

The repository's own dvc.yaml, stages and package are copied; params.yaml is the real one with
the data source pointed at small synthetic IDX files and a one-epoch, tiny network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.helpers import copy_workspace, declared_outputs, dvc, stages_run

pytestmark = pytest.mark.slow


def experiment_activations(repository: Path) -> list[str]:
    """train.activation of every experiment that `dvc exp show` lists (not the workspace)."""
    shown = json.loads(dvc("exp", "show", "--json", cwd=repository).stdout)
    return [
        rev["data"]["params"]["params.yaml"]["data"]["train"]["activation"]
        for entry in shown
        for run in entry.get("experiments") or []
        for rev in run["revs"]
    ]


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, baseline_repository: Path) -> Path:
    """A copy of the session's baseline: the pipeline run once and committed on main."""
    return copy_workspace(baseline_repository, tmp_path_factory.mktemp("pipeline") / "repository")


def test_repro_runs_every_stage_and_writes_every_output(repository: Path) -> None:
    dvc_yaml = yaml.safe_load((repository / "dvc.yaml").read_text())
    missing = [path for path in declared_outputs(dvc_yaml) if not (repository / path).exists()]
    assert missing == []
    metrics = json.loads((repository / "metrics/evaluate.json").read_text())
    assert metrics["accuracy"] > 0.3  # ten balanced classes: chance is 0.1
    report = (repository / "reports/report.md").read_text()
    for link in re.findall(r"\]\(([^)]+\.png)\)", report):
        assert (repository / "reports" / link).resolve().is_file(), link
    # The training summary says which precision ran (train.precision float32 here).
    assert json.loads((repository / "metrics/train/metrics.json").read_text())["dtype"] == "float32"


def test_second_repro_runs_nothing(repository: Path) -> None:
    result = dvc("repro", cwd=repository)
    assert stages_run(result.stdout) == set()
    assert "Data and pipelines are up to date" in dvc("status", cwd=repository).stdout


def test_split_param_change_does_not_refetch(repository: Path) -> None:
    result = dvc("exp", "run", "-S", "split.method=resplit", cwd=repository)

    assert stages_run(result.stdout) == {"split", "train", "evaluate", "report"}
    counts = json.loads((repository / "reports/split.json").read_text())
    assert sum(counts["test"].values()) == 100  # 20% of the 500 pooled images
