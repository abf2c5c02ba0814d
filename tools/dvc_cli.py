"""Running ``dvc`` from the tools that read its results (review, study, check-lock, retrain).

DVC's Python API is internal and changes between releases; its command line and ``--json``
output are what it documents. Every command runs under this interpreter (``python -m dvc``),
so the virtual environment's DVC answers whatever ``dvc`` is first on PATH.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from fmnist.errors import PipelineError


def run_dvc(
    *arguments: str, cwd: Path | None = None, error: type[PipelineError] = PipelineError
) -> str:
    """What ``dvc ARGUMENTS`` prints; ``error`` with DVC's own reason, in one line, if it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *arguments], cwd=cwd, capture_output=True, text=True
    )
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        errors = [line.removeprefix("ERROR:").strip() for line in lines if line[:6] == "ERROR:"]
        reason = (errors or lines[-1:] or [f"exit status {result.returncode}"])[0]
        raise error(f"`dvc {' '.join(arguments)}` failed: {reason[:300]}")
    return result.stdout


def run_dvc_json(
    *arguments: str, cwd: Path | None = None, error: type[PipelineError] = PipelineError
) -> Any:
    """The JSON document that ``dvc ARGUMENTS`` prints (the caller passes ``--json``)."""
    output = run_dvc(*arguments, cwd=cwd, error=error)
    try:
        return json.loads(output or "null")
    except json.JSONDecodeError:
        raise error(f"`dvc {' '.join(arguments)}` printed no JSON: {output[:80]!r}") from None
