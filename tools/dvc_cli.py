"""Running ``dvc`` for the tools that read its results (review, study, check-lock, repro, ...),
the benchmark and the tests, and DVC's notation for params and metrics that they share: dotted
keys and ``-S`` values.

DVC's Python API is internal and changes between releases; its command line and ``--json``
output are what it documents. Every command runs under this interpreter (``python -m dvc``),
so the virtual environment's DVC answers whatever ``dvc`` is first on PATH.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import yaml

from fmnist.errors import PipelineError

# Held by make exp, study, queue, repro and reset while they run (DVC's own lock lets a second
# `dvc exp run` rewrite params.yaml under a running one: docs/guarantees.md).
LOCK_FILE = Path(".dvc/tmp/fmnist.lock")
# params.yaml as it was before `make exp` ran DVC; removed once it is back or the run succeeded.
PARAMS_BEFORE = Path(".dvc/tmp/params.yaml.before-exp")


@contextlib.contextmanager
def one_at_a_time(command: str) -> Iterator[None]:
    """Hold the clone's lock for the block, or fail at once naming the command that holds it.

    The kernel releases it when the process ends, however it ends: a killed run never leaves
    a stale lock behind.
    """
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another command"
            raise PipelineError(
                f"{holder} is running in this clone; one at a time: wait for it to end"
            ) from None
        handle.truncate(0)
        handle.write(f"`{command}` (process {os.getpid()})")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)


def run_to_end(command: list[str]) -> int:
    """Run ``command`` and return its exit status once it has ended, even when this process is
    interrupted (Ctrl-C, SIGTERM): the command and its children get SIGINT, and the interruption
    is raised again only after their own clean-up is done (DVC's puts HEAD back).
    """
    # A process group of its own: the interruption reaches it from here, once, whatever sent it.
    with subprocess.Popen(command, process_group=0) as process:
        try:
            return process.wait()
        except KeyboardInterrupt:
            os.killpg(process.pid, signal.SIGINT)
            process.wait()
            raise


def dvc_command(*arguments: str) -> list[str]:
    """The command line that runs ``dvc ARGUMENTS`` under this interpreter."""
    return [sys.executable, "-m", "dvc", *arguments]


def run_dvc(
    *arguments: str, cwd: Path | None = None, error: type[PipelineError] = PipelineError
) -> str:
    """What ``dvc ARGUMENTS`` prints; ``error`` with DVC's own reason, in one line, if it fails."""
    result = subprocess.run(dvc_command(*arguments), cwd=cwd, capture_output=True, text=True)
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


def stream_dvc(*arguments: str, cwd: Path | None = None) -> tuple[int, list[str]]:
    """Run ``dvc ARGUMENTS`` with its output passing through to this process's as it comes.

    Returns DVC's exit status and the lines it wrote to stderr, for a caller that looks for
    what DVC reports there but does not count as a failure.
    """
    lines = []
    with subprocess.Popen(
        dvc_command(*arguments), cwd=cwd, stderr=subprocess.PIPE, text=True, errors="replace"
    ) as process:
        for line in process.stderr:
            sys.stderr.write(line)
            lines.append(line)
    return process.returncode, lines


def set_arguments(params: Mapping[str, object]) -> list[str]:
    """``-S key=value`` arguments; values are written as YAML so lists and booleans survive."""
    arguments = []
    for key, value in params.items():
        text = yaml.safe_dump(value, default_flow_style=True, width=1_000).strip()
        text = text.removesuffix("\n...").removesuffix("...").strip()
        arguments += ["-S", f"{key}={text}"]
    return arguments


def get_dotted(document: Mapping[str, Any], dotted_key: str) -> Any:
    """The value at ``dotted_key`` (``train.cnn.filters``) of nested mappings; KeyError or
    TypeError where the path does not lead to one.
    """
    value: Any = document
    for key in dotted_key.split("."):
        value = value[key]
    return value


def set_dotted(document: MutableMapping[str, Any], dotted_key: str, value: object) -> None:
    """Set the value at ``dotted_key`` of nested mappings, whose sections must exist."""
    *sections, key = dotted_key.split(".")
    section: Any = document
    for name in sections:
        section = section[name]
    section[key] = value
