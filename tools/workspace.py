"""Temporary copies of the pipeline, as a fresh clone of this repository would be, to run in."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fmnist import RAW_FILES
from fmnist.data import Split, split_data
from fmnist.fetch import CHECKSUMS_FILE, find_local_file, is_url, read_bounded
from fmnist.idx import read_split
from fmnist.params import Params, read_yaml_file
from tools.dvc_cli import set_dotted

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
STAGES = ("fetch", "preprocess", "split", "train", "evaluate", "report")
# What a clone holds that `dvc repro` needs; no outputs, no dvc.lock, no DVC cache.
PIPELINE_FILES = (
    "dvc.yaml",
    "params.yaml",
    "stages",
    "fmnist",
    "tools",
    ".gitignore",
    ".dvcignore",
    ".dvc/config",
    ".dvc/plots",
)


def command_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment with the virtual environment's ``python`` and ``dvc`` first on PATH.

    DVC stages run ``python -m stages.<name>``, so the interpreter that runs the benchmark or
    the tests must be the one they find.
    """
    environment = dict(os.environ)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    environment.pop("PYTHONPATH", None)
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    environment.update(extra or {})
    return environment


def stages_run(output: str) -> set[str]:
    """The stages that DVC's own output says it ran."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def source_checksums(directory: Path) -> dict[str, str]:
    """SHA-256 of each of the four decompressed IDX files in ``directory`` (gzipped or not)."""
    return {
        name: read_bounded(find_local_file(directory, name)).sha256
        for names in RAW_FILES.values()
        for name in names
    }


def source_splits(params: Params) -> dict[str, Split]:
    """The train, validation and test splits that the fetch, preprocess and split stages make
    from the first local directory of ``params.fetch.sources``, made in memory.
    """
    source = Path(next(source for source in params.fetch.sources if not is_url(source)))
    train, test = (
        Split(*read_split(*(find_local_file(source, name) for name in names)))
        for names in RAW_FILES.values()
    )
    return split_data(train, test, params.split, params.seed)


def set_params(workspace: Path, changes: Mapping[str, Any]) -> None:
    """Set values of the workspace's params.yaml by dotted key, e.g. ``train.epochs``, written
    back through DVC's own YAML writer, as ``dvc exp run -S`` would write them.
    """
    from dvc.utils.serialize import modify_yaml

    with modify_yaml(workspace / "params.yaml") as params:
        for dotted_key, value in changes.items():
            set_dotted(params, dotted_key, value)


def write_checksums(workspace: Path, checksums: Mapping[str, str]) -> None:
    """Replace the workspace's checksum file of the data set (``sha256sum`` format)."""
    lines = "".join(f"{digest}  {name}\n" for name, digest in checksums.items())
    (workspace / "fmnist" / CHECKSUMS_FILE.name).write_text(lines)


def _git(*arguments: str, cwd: Path) -> None:
    subprocess.run(["git", *arguments], cwd=cwd, check=True, capture_output=True)


def make_template(
    root: Path, params_changes: Mapping[str, Any], checksums: Mapping[str, str] | None = None
) -> Path:
    """A git repository at ``root`` holding this pipeline (one commit); nothing has run yet.

    ``checksums`` replace the data set's published ones, for a source of other files.
    """
    for name in PIPELINE_FILES:
        source, target = REPOSITORY_ROOT / name, root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    if params_changes:
        set_params(root, params_changes)
    if checksums:
        write_checksums(root, checksums)
    _git("init", "-q", "-b", "main", cwd=root)
    _git("config", "user.email", "pipeline@example.com", cwd=root)
    _git("config", "user.name", "Pipeline", cwd=root)
    _git("add", "-A", cwd=root)
    _git("commit", "-q", "-m", "pipeline", cwd=root)
    return root


def cache_type(workspace: Path) -> str:
    """The workspace's DVC cache link type (DVC's default where its config sets none)."""
    config = configparser.ConfigParser()
    config.read([workspace / ".dvc" / "config", workspace / ".dvc" / "config.local"])
    return config.get("cache", "type", fallback="reflink,copy").strip('"')


def copy_workspace(template: Path, target: Path) -> Path:
    """A copy of a whole workspace (git history, DVC cache, outputs) to change freely."""
    shutil.copytree(template, target, symlinks=True)
    return target


def stage_command(workspace: Path, stage: str) -> list[str]:
    """The stage's command from dvc.yaml, run by this interpreter as DVC would run it."""
    dvc_yaml = read_yaml_file(workspace / "dvc.yaml")
    command = shlex.split(dvc_yaml["stages"][stage]["cmd"])
    if command[0] == "python":
        command[0] = sys.executable
    return command
