"""Experiments on DVC's machinery as this repository sets it up: the run-cache returns params
that ran (docs/pipeline.md's own block), and params.yaml is read and written as DVC does."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from dvc.utils.serialize import modify_yaml, parse_yaml

from fmnist.errors import ParamsError
from fmnist.params import load_params, read_yaml
from tests.conftest import REPOSITORY_ROOT
from tests.helpers import copy_workspace, dvc, run_block, shell_blocks, stages_run
from tools.dvc_cli import set_dotted


@pytest.mark.slow
def test_returning_to_params_that_ran_restores_from_the_run_cache(
    baseline_repository: Path, tmp_path: Path
) -> None:
    repository = copy_workspace(baseline_repository, tmp_path / "repository")
    ((_, block),) = shell_blocks("docs/pipeline.md")
    first, reset, again, last = (f"{line}\n" for line in block.splitlines())

    assert {"train", "evaluate"} <= stages_run(run_block(first, repository).stdout)
    metrics = (repository / "metrics/evaluate.json").read_bytes()
    run_block(reset, repository)
    again = run_block(again, repository)
    restored = set(re.findall(r"Stage '([^']+)' is cached - skipping run", again.stdout))

    assert {"train", "evaluate"} <= restored
    assert not stages_run(again.stdout) & {"train", "evaluate"}
    assert (repository / "metrics/evaluate.json").read_bytes() == metrics
    summary = json.loads((repository / "metrics/train/metrics.json").read_text())
    assert summary["step"] == summary["kept_epoch"] == 10  # epochs, and dvclive's steps, from 1
    run_block(last, repository)
    assert "Data and pipelines are up to date" in dvc("status", cwd=repository).stdout


def test_setting_a_param_as_dvc_does_changes_exactly_its_line(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    original = (REPOSITORY_ROOT / "params.yaml").read_text()
    params.write_text(original)

    with modify_yaml(params) as document:  # what `dvc exp run -S train.epochs=1` does
        set_dotted(document, "train.epochs", 1)

    changed = [
        (old, new)
        for old, new in zip(original.splitlines(), params.read_text().splitlines(), strict=True)
        if old != new
    ]
    assert [new.split("#")[0].strip() for _, new in changed] == ["epochs: 1"]


@pytest.mark.parametrize("spelling", ["2e-3", "01", "0o10", "1_000", ".5", "~", "'1'"])
def test_values_are_read_as_dvc_reads_them(spelling: str) -> None:
    assert read_yaml(f"value: {spelling}") == parse_yaml(f"value: {spelling}", "params.yaml")


@pytest.mark.parametrize(
    ("key", "spelling"), [("nesterov", "yes"), ("epochs", "1:30"), ("batch_size", "0x")]
)
def test_a_spelling_yaml_versions_read_differently_is_refused_by_key(
    tmp_path: Path, key: str, spelling: str
) -> None:
    params = tmp_path / "params.yaml"
    text = (REPOSITORY_ROOT / "params.yaml").read_text()
    params.write_text(re.sub(rf"^  {key}: \S+", f"  {key}: {spelling}", text, flags=re.M))

    with pytest.raises(ParamsError, match=rf"train\.{key}: .*'{re.escape(spelling)}'"):
        load_params(params)
