"""Tests of run_stage: errors, Ctrl-C and SIGTERM end a stage with one line and no leftovers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPOSITORY_ROOT

# A stand-in stage: fails, or signals itself halfway through replacing out.txt.
STAGE = """
import os
import signal
import sys

from fmnist.cli import run_stage
from fmnist.errors import PipelineError
from fmnist.files import atomic_path


def main():
    if sys.argv[1] == "fail":
        raise PipelineError("data/raw/x: truncated\\nsecond line of the message")
    with atomic_path("out.txt") as temporary:
        temporary.write_text("half of the new output")
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
        raise AssertionError("the signal did not interrupt the stage")


run_stage("demo", main)
"""


def run_demo(directory: Path, action: str) -> subprocess.CompletedProcess:
    (directory / "out.txt").write_text("the previous output")
    environment = dict(os.environ, PYTHONPATH=str(REPOSITORY_ROOT))
    return subprocess.run(
        [sys.executable, "-c", STAGE, action],
        cwd=directory,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_pipeline_error_exits_1_with_one_line_per_message_line(tmp_path: Path) -> None:
    result = run_demo(tmp_path, "fail")

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "demo: error: data/raw/x: truncated",
        "demo: error: second line of the message",
    ]


@pytest.mark.parametrize(("name", "status"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_stops_the_stage_cleanly_and_keeps_the_previous_output(
    tmp_path: Path, name: str, status: int
) -> None:
    result = run_demo(tmp_path, name)

    assert result.returncode == status
    [line] = result.stderr.splitlines()
    assert line.startswith(f"demo: stopped by {name} after ")
    assert line.endswith("outputs written so far are complete, the rest are unchanged")
    assert [path.name for path in tmp_path.iterdir()] == ["out.txt"]
    assert (tmp_path / "out.txt").read_text() == "the previous output"


NOISY_STAGE = """
import os, sys
from stages import filter_tensorflow_noise

filter_tensorflow_noise()
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to\\n")
os.write(2, b"I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on.\\n")
os.write(2, b"kept line\\nE0000 00:00:1.0 1 node_def_util.cc:682] NodeDef mentions attribute x\\n")
os.write(2, b"E0000 00:00:1.0 1 other.cc:1] a real error\\n")
print("train: error: the last words, without a newline", file=sys.stderr, end="")
sys.exit(1)
"""


def test_tensorflow_start_up_lines_are_dropped_and_every_other_line_kept() -> None:
    result = subprocess.run(
        [sys.executable, "-c", NOISY_STAGE],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert result.stderr == (
        "kept line\nE0000 00:00:1.0 1 other.cc:1] a real error\n"
        "train: error: the last words, without a newline"
    )


@pytest.mark.slow
def test_a_stage_that_loads_tensorflow_logs_only_its_own_lines(tmp_path: Path) -> None:
    import numpy as np

    from fmnist.data import Split, save_split

    labels = np.arange(10, dtype=np.uint8)
    save_split(tmp_path / "test.npz", Split(np.zeros((10, 28, 28), np.uint8), labels))
    outputs = ["--metrics", "m.json", "--predictions", "p.csv", "--classes", "c.json"]
    command = [sys.executable, "-m", "stages.evaluate", "--data", "test.npz", "--model", "none"]
    environment = dict(os.environ, PYTHONPATH=str(REPOSITORY_ROOT))

    result = subprocess.run(
        [*command, *outputs, "--confused", "f.json"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )

    # TensorFlow was loaded (the model is looked for after the import), yet stderr holds only
    # the stage's own line.
    assert result.returncode == 1
    assert result.stderr == (
        "evaluate: error: none: not found (run the pipeline first: make repro)\n"
    )
