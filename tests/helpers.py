"""What the end-to-end tests share: running git and dvc, and a temporary pipeline repository.

The repository holds copies of this one's dvc.yaml, stages and package; params.yaml is the
real one with the data source pointed at small synthetic IDX files and a tiny network.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import struct
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fmnist.idx import UNSIGNED_BYTE
from fmnist.params import read_yaml_file
from tools.dvc_api import modify_params
from tools.dvc_cli import dvc_command
from tools.workspace import REPOSITORY_ROOT, command_environment, make_template

STAGES = ("fetch", "preprocess", "split", "train", "evaluate", "report")


def encode_idx(array: np.ndarray) -> bytes:
    """Serialise a uint8 array as IDX bytes (the inverse of ``fmnist.idx.decode_idx``)."""
    if array.dtype != np.uint8:
        raise ValueError(f"IDX encoding supports uint8 arrays only, not {array.dtype}")
    header = struct.pack(">BBBB", 0, 0, UNSIGNED_BYTE, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def stages_run(output: str) -> set[str]:
    """The stages that DVC's own output says it ran."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def set_params(workspace: Path, changes: Mapping[str, Any]) -> None:
    """Set values of the workspace's params.yaml by dotted key, e.g. ``train.epochs``, written
    back through DVC's own YAML writer, as ``dvc exp run -S`` would write them.
    """
    modify_params(workspace / "params.yaml", changes)


def copy_workspace(template: Path, target: Path) -> Path:
    """A copy of a whole workspace (git history, DVC cache, outputs) to change freely."""
    return shutil.copytree(template, target, symlinks=True)


def stage_command(workspace: Path, stage: str) -> list[str]:
    """The stage's command from dvc.yaml, run by this interpreter as DVC would run it."""
    dvc_yaml = read_yaml_file(workspace / "dvc.yaml")
    command = shlex.split(dvc_yaml["stages"][stage]["cmd"])
    if command[0] == "python":
        command[0] = sys.executable
    return command


def run(command: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command with the virtual environment's `python` and `dvc` first on PATH."""
    result = subprocess.run(
        command, cwd=cwd, env=command_environment(), capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def dvc(*arguments: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run(dvc_command(*arguments), cwd, check)


def git(*arguments: str, cwd: Path) -> str:
    return run(["git", *arguments], cwd).stdout


def make(
    target: str, cwd: Path, check: bool = True, **variables: str
) -> subprocess.CompletedProcess:
    """`make TARGET` as the README runs it, in an environment that is set up already."""
    assignments = [f"{name}={value}" for name, value in variables.items()]
    return run(["make", "-o", "setup", target, *assignments], cwd, check)


def digests(root: Path) -> dict[str, str]:
    """SHA-256 of every file under the output directories of ``root``."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for directory in ("metrics", "plots", "reports", "models", "data")
        for path in sorted((root / directory).rglob("*"))
        if path.is_file()
    }


def declared_outputs(dvc_yaml: dict) -> list[str]:
    """Every path that a stage of ``dvc_yaml`` writes (outs, metrics and plots)."""
    return [
        next(iter(entry)) if isinstance(entry, dict) else str(entry)
        for stage in dvc_yaml["stages"].values()
        for section in ("outs", "metrics", "plots")
        for entry in stage.get(section) or []
    ]


def make_pipeline_repository(root: Path, source: Path, checksums: dict) -> Path:
    """A git + DVC repository at ``root`` holding this pipeline, configured for ``source``.

    One commit on ``main``; nothing has run yet.
    """
    changes = {
        "fetch.sources": [str(source)],
        "train.hidden_units": [16],
        "train.epochs": 2,
        "train.batch_size": 32,
        "report.misclassified": 5,
    }
    return make_template(root, changes, CHECKSUMS=checksums)


SHELL_BLOCK = re.compile(
    r"(?:<!-- skip: (?P<skip>.*?) -->\n)?```bash\n(?P<script>.*?)```", re.DOTALL
)
# The environment is set up already: `make` runs its target without `make setup`.
PREAMBLE = 'set -euo pipefail\nmake() { command make -o setup "$@"; }\n'


def shell_blocks(document: str) -> list[tuple[str | None, str]]:
    """Each ```bash block of the repository's ``document`` with the reason it is skipped, if
    a ``<!-- skip: REASON -->`` line marks it."""
    text = (REPOSITORY_ROOT / document).read_text(encoding="utf-8")
    return [(match["skip"], match["script"]) for match in SHELL_BLOCK.finditer(text)]


def run_block(script: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a documented shell block with bash as a user would paste it, stopping at the first
    failing command."""
    return run(["bash", "-c", PREAMBLE + script], cwd, check)
