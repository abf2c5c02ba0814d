"""Temporary copies of the pipeline, as a fresh clone of this repository would be, to run in."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fmnist.dataset import RAW_FILES
from fmnist.fetch import find_local_file
from fmnist.idx import decompress
from tools.dvc_api import modify_params

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
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


def source_checksums(directory: Path) -> dict[str, tuple[int, str]]:
    """Size and SHA-256 of each decompressed IDX file in ``directory`` (gzipped or not)."""
    checksums = {}
    for names in RAW_FILES.values():
        for name in names:
            path = find_local_file(directory, name)
            data = decompress(path.read_bytes(), str(path))
            checksums[name] = (len(data), hashlib.sha256(data).hexdigest())
    return checksums


def _git(*arguments: str, cwd: Path) -> None:
    subprocess.run(["git", *arguments], cwd=cwd, check=True, capture_output=True)


def make_template(root: Path, params_changes: Mapping[str, Any], **dataset: object) -> Path:
    """A git repository at ``root`` holding this pipeline (one commit); nothing has run yet.

    ``params_changes`` sets params.yaml values by dotted key, as ``dvc exp run -S`` would;
    ``dataset`` replaces constants of ``fmnist/dataset.py``, e.g. ``CHECKSUMS`` of other files.
    """
    for name in PIPELINE_FILES:
        source, target = REPOSITORY_ROOT / name, root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    if params_changes:
        modify_params(root / "params.yaml", params_changes)
    if dataset:
        path = root / "fmnist" / "dataset.py"
        text = path.read_text(encoding="utf-8")
        for name, value in dataset.items():
            pattern = rf"^{name}\b.*?\n(?=\n|#|[A-Z])"
            text, count = re.subn(pattern, f"{name} = {value!r}\n", text, flags=re.M | re.S)
            if count != 1:
                raise ValueError(f"{path}: no constant {name}")
        path.write_text(text, encoding="utf-8")
    _git("init", "-q", "-b", "main", cwd=root)
    _git("config", "user.email", "pipeline@example.com", cwd=root)
    _git("config", "user.name", "Pipeline", cwd=root)
    _git("add", "-A", cwd=root)
    _git("commit", "-q", "-m", "pipeline", cwd=root)
    return root
