"""The retrain check: `dvc metrics diff --json` against the committed metrics, with a tolerance."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.helpers import copy_workspace, run
from tools.retrain import out_of_tolerance


def diff(**metrics: tuple[object, object]) -> dict:
    """A ``dvc metrics diff --json`` document for metrics/evaluate.json."""
    return {
        "metrics/evaluate.json": {
            name: {"old": old, "new": new, "diff": None} for name, (old, new) in metrics.items()
        }
    }


def test_changes_within_the_tolerance_pass() -> None:
    assert out_of_tolerance(diff(accuracy=(0.8898, 0.8951), loss=(0.33, 0.321)), 0.01) == []


def test_each_change_beyond_the_tolerance_is_named_with_both_values() -> None:
    lines = out_of_tolerance(diff(accuracy=(0.8898, 0.87), f1=(0.889, 0.888)), 0.01)

    assert lines == [
        "metrics/evaluate.json: accuracy: committed 0.8898, retrained 0.87 "
        "(moved 0.0198, more than 0.01)"
    ]


def test_the_same_text_passes_and_another_does_not() -> None:
    assert out_of_tolerance(diff(dtype=("float32", "float32")), 0.01) == []
    assert out_of_tolerance(diff(dtype=("float32", "bfloat16")), 0.01) == [
        "metrics/evaluate.json: dtype: committed float32, retrained bfloat16"
    ]


def test_a_metric_missing_on_one_side_is_beyond_any_tolerance() -> None:
    lines = out_of_tolerance(diff(accuracy=(0.8898, None), loss=(True, 0.3)), 0.5)

    assert lines == [
        "metrics/evaluate.json: accuracy: committed 0.8898, retrained None",
        "metrics/evaluate.json: loss: committed True, retrained 0.3",
    ]


@pytest.mark.slow
def test_the_command_compares_the_workspace_with_the_commit(
    tmp_path: Path, baseline_repository: Path
) -> None:
    repository = copy_workspace(baseline_repository, tmp_path / "repository")
    command = [sys.executable, "-m", "tools.retrain", "--tolerance", "0.01"]
    unchanged = run(command, repository)
    path = repository / "metrics/evaluate.json"
    metrics = json.loads(path.read_text())
    path.write_text(json.dumps({**metrics, "accuracy": metrics["accuracy"] - 0.05}))

    moved = run(command, repository, check=False)

    assert "all 5 metrics within 0.01 of HEAD" in unchanged.stderr
    assert moved.returncode == 1
    assert "accuracy: committed" in moved.stderr
    assert "Traceback" not in moved.stderr
    assert run([*command[:-1], "2"], repository, check=False).returncode == 2
