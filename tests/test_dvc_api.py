"""The uses of DVC's Python API in tools/dvc_api.py: each fails here first when DVC changes."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from fmnist.errors import PipelineError
from tests.conftest import REPOSITORY_ROOT
from tools.dvc_api import expand_sweep, modify_params


def test_a_sweep_expands_as_dvc_queues_it() -> None:
    combinations = expand_sweep(["train.learning_rate=0.001,0.01", "train.batch_size=64,128"])

    assert combinations == [
        ["train.learning_rate=0.001", "train.batch_size=64"],
        ["train.learning_rate=0.001", "train.batch_size=128"],
        ["train.learning_rate=0.01", "train.batch_size=64"],
        ["train.learning_rate=0.01", "train.batch_size=128"],
    ]
    with pytest.raises(PipelineError, match=r"--sweep 'train.epochs=\(\(': "):
        expand_sweep(["train.epochs=(("])


def test_params_are_written_back_by_dvcs_own_writer(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text((REPOSITORY_ROOT / "params.yaml").read_text())

    modify_params(params, {"train.epochs": 3, "train.cnn.filters": [8, 16]})

    text = params.read_text()
    assert "  epochs: 3\n" in text and "  filters:\n    - 8\n    - 16\n" in text
    assert "# Seeds every random draw" in text  # comments survive, as with `dvc exp run -S`


def test_the_run_cache_api_that_make_push_uses_is_there() -> None:
    from dvc.exceptions import CollectCacheError
    from dvc.repo import Repo
    from dvc.stage.cache import StageCache

    assert issubclass(CollectCacheError, Exception)
    assert list(inspect.signature(StageCache.get_used_objs).parameters)[:2] == [
        "self",
        "used_run_cache",
    ]
    with Repo(str(REPOSITORY_ROOT)) as repo:
        assert Path(repo.stage_cache.cache_dir).name == "runs"
        assert "odb" in inspect.signature(repo.cloud.push).parameters
