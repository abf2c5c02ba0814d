"""What the end-to-end tests share: running git and dvc, and a temporary pipeline repository.

The repository holds copies of this one's dvc.yaml, stages and package; params.yaml is the
real one with the data source pointed at small synthetic IDX files and a tiny network.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

from tools.dvc_cli import dvc_command
from tools.workspace import REPOSITORY_ROOT, command_environment, make_template


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
