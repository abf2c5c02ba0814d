"""Running a command under measurement: its wall time and peak resident memory."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

MEGABYTE = 1024 * 1024
# How much of a failed command's output an error shows.
OUTPUT_TAIL_CHARACTERS = 4000


class BenchmarkError(Exception):
    """A measured command failed, or did something other than what the figure measures."""


@dataclass(frozen=True)
class Run:
    """One measured command: wall seconds, peak resident set in bytes, and its output."""

    command: tuple[str, ...]
    seconds: float
    peak_memory_bytes: int
    output: str


def run_measured(
    command: Sequence[str], cwd: Path, environment: Mapping[str, str] | None = None
) -> Run:
    """Run ``command`` to completion; raise BenchmarkError if it fails.

    It runs under a small launcher process (this file run as a script) that times it and reads
    its peak resident set from ``wait4``: the largest of the command and of every descendant
    it waited for (for ``dvc repro``, that of its largest stage). Linux counts in a child's
    peak the peak of the process that started it, so a command started straight from this
    process would report at least this process's own peak; the launcher's is about 10 MB.
    """
    # Imported here: this file also runs as a script (the launcher), where tools/ is not on
    # the import path.
    from tools.workspace import command_environment

    with (
        tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as output,
        tempfile.TemporaryDirectory(prefix="bench-run-") as directory,
    ):
        report = Path(directory) / "measured.json"
        process = subprocess.Popen(
            [sys.executable, __file__, str(report), *command],
            cwd=cwd,
            env=dict(environment) if environment is not None else command_environment(),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so that an interrupted benchmark stops the command too
        )
        try:
            process.wait()
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
        output.seek(0)
        text = output.read()
        measured = json.loads(report.read_text()) if report.exists() else {}
    if process.returncode != 0 or not measured:
        raise BenchmarkError(
            f"{' '.join(command)} (in {cwd}) exited {process.returncode}:\n"
            f"{text[-OUTPUT_TAIL_CHARACTERS:]}"
        )
    return Run(tuple(command), measured["seconds"], measured["peak_memory_bytes"], text)


def _launch(report: Path, command: list[str]) -> int:
    """Run ``command``; write its wall time and peak resident set to ``report``."""
    started = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    report.write_text(json.dumps({"seconds": seconds, "peak_memory_bytes": usage.ru_maxrss * 1024}))
    return os.waitstatus_to_exitcode(status)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def compare(measured: Sequence[float], baseline: Sequence[float], digits: int = 3) -> dict:
    """Pairs measured side by side: the median of their ratios and of each side.

    The ratio of each pair is taken before the median, so that a slow moment of the machine
    slows both sides of the same pair and cancels out.
    """
    ratios = [first / second for first, second in zip(measured, baseline, strict=True)]
    return {
        "ratio": round(median(ratios), digits),
        "ratios": [round(ratio, digits) for ratio in ratios],
        "measured": round(median(measured), digits),
        "baseline": round(median(baseline), digits),
    }


def in_alternating_order(repeat: int, first: object, second: object) -> tuple[object, object]:
    """``(first, second)`` on even repeats, reversed on odd ones: neither side always goes first."""
    return (first, second) if repeat % 2 == 0 else (second, first)


if __name__ == "__main__":
    # The launcher: python bench/measure.py REPORT COMMAND... (standard library only, so that
    # it starts in a few milliseconds and stays small).
    sys.exit(_launch(Path(sys.argv[1]), sys.argv[2:]))
