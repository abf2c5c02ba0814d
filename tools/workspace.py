"""Temporary copies of the pipeline, as a fresh clone of this repository would be, to run in."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fmnist.dataset import RAW_FILES
from fmnist.fetch import find_local_file
from fmnist.idx import decompress
from fmnist.params import read_yaml_file
from tools.dvc_api import modify_params

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
STAGES = ("fetch", "preprocess", "split", "train", "evaluate", "report")
# What a clone holds that `dvc repro` needs; no outputs, no dvc.lock, no DVC cache.
PIPELINE_FILES = (
    "Makefile",
    "requirements.txt",
    "requirements-dev.txt",
    "experiments.yaml",
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


def source_checksums(directory: Path) -> dict[str, tuple[int, str]]:
    """Size and SHA-256 of each decompressed IDX file in ``directory`` (gzipped or not)."""
    checksums = {}
    for names in RAW_FILES.values():
        for name in names:
            path = find_local_file(directory, name)
            data = decompress(path.read_bytes(), str(path))
            checksums[name] = (len(data), hashlib.sha256(data).hexdigest())
    return checksums


def set_params(workspace: Path, changes: Mapping[str, Any]) -> None:
    """Set values of the workspace's params.yaml by dotted key, e.g. ``train.epochs``, written
    back through DVC's own YAML writer, as ``dvc exp run -S`` would write them.
    """
    modify_params(workspace / "params.yaml", changes)


def write_dataset(workspace: Path, **facts: object) -> None:
    """Replace constants of the workspace's ``fmnist/dataset.py`` (``CHECKSUMS=...``), as a fork
    of the pipeline for another data set would."""
    path = workspace / "fmnist" / "dataset.py"
    text = path.read_text(encoding="utf-8")
    for name, value in facts.items():
        pattern = rf"^{name}\b.*?\n(?=\n|#|[A-Z])"
        text, count = re.subn(pattern, f"{name} = {value!r}\n", text, flags=re.M | re.S)
        if count != 1:
            raise ValueError(f"{path}: no constant {name}")
    path.write_text(text, encoding="utf-8")


def _git(*arguments: str, cwd: Path) -> None:
    subprocess.run(["git", *arguments], cwd=cwd, check=True, capture_output=True)


def make_template(root: Path, params_changes: Mapping[str, Any], **dataset: object) -> Path:
    """A git repository at ``root`` holding this pipeline (one commit); nothing has run yet.

    ``dataset`` replaces constants of ``fmnist/dataset.py`` (``write_dataset``), for example the
    ``CHECKSUMS`` of a source of other files.
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
    if dataset:
        write_dataset(root, **dataset)
    _git("init", "-q", "-b", "main", cwd=root)
    _git("config", "user.email", "pipeline@example.com", cwd=root)
    _git("config", "user.name", "Pipeline", cwd=root)
    _git("add", "-A", cwd=root)
    _git("commit", "-q", "-m", "pipeline", cwd=root)
    return root


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
