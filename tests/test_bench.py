"""The benchmark (bench/): its helpers on small inputs, and a whole run in quick mode.

The quick run measures every figure once on small synthetic IDX files; it asserts what each
figure found out (which stages ran, the same metrics, no TensorFlow import), never a timing.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.figures import NON_TENSORFLOW_STAGES, STAGES, imported_packages
from bench.measure import MEGABYTE, BenchmarkError, compare, in_alternating_order, run_measured
from tests.conftest import REPOSITORY_ROOT, write_synthetic_source

FIGURES = (
    "pipeline_overhead",
    "nothing_to_do",
    "param_change",
    "training_throughput",
    "startup",
    "peak_memory",
    "scaling",
    "run_cache",
)


def test_compare_takes_the_median_of_the_ratios_of_pairs() -> None:
    figure = compare([2.0, 9.0, 3.0], [1.0, 3.0, 1.0])
    # Ratios 2, 3, 3: a slow moment (9 s against 3 s) slows both sides of its pair.
    assert figure == {"ratio": 3.0, "ratios": [2.0, 3.0, 3.0], "measured": 3.0, "baseline": 1.0}


def test_sides_take_turns_going_first() -> None:
    assert [in_alternating_order(repeat, "a", "b") for repeat in range(3)] == [
        ("a", "b"),
        ("b", "a"),
        ("a", "b"),
    ]


def test_imported_packages_reads_python_importtime_output() -> None:
    output = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:       120 |        120 |     tensorflow.python\n"
        "import time:        80 |        200 |   tensorflow\n"
        "fetch: done in 0.3 s\n"
        "import time:        10 |         10 | numpy\n"
    )
    assert imported_packages(output) == {"tensorflow", "numpy"}


def test_run_measured_reports_time_peak_memory_and_output(tmp_path: Path) -> None:
    code = "data = bytearray(50 * 1024 * 1024); print('ok')"  # touches 50 MB
    run = run_measured([sys.executable, "-c", code], tmp_path)
    assert run.output.strip() == "ok"
    assert run.seconds > 0
    assert run.peak_memory_bytes > 50 * MEGABYTE


def test_peak_memory_is_the_commands_own_not_the_benchmarks(tmp_path: Path) -> None:
    # Linux counts a parent's peak in its child's: the launcher keeps this process's out.
    ballast = b"x" * (300 * MEGABYTE)  # resident: every page written
    run = run_measured([sys.executable, "-c", "pass"], tmp_path)
    assert run.peak_memory_bytes < 100 * MEGABYTE
    del ballast


def test_a_failing_command_raises_with_its_output(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match=r"(?s)exited 3:.*boom"):
        run_measured([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], tmp_path)


@pytest.mark.slow
def test_quick_benchmark_measures_every_figure(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_synthetic_source(source)
    out = tmp_path / "results.json"
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    command = [sys.executable, "-m", "bench.run", "--quick", "--source", str(source)]
    command += ["--out", str(out), "--scratch", str(tmp_path)]

    result = subprocess.run(
        command, cwd=REPOSITORY_ROOT, env=environment, capture_output=True, text=True, timeout=600
    )

    assert result.returncode == 0, result.stdout + result.stderr
    for number in range(1, len(FIGURES) + 1):
        assert f"\n{number}. " in f"\n{result.stdout}", result.stdout
    results = json.loads(out.read_text())
    assert results["mode"] == "quick"
    figures = results["figures"]
    assert set(figures) == set(FIGURES)
    # The plain process and the pipeline computed the same test metrics.
    assert figures["pipeline_overhead"]["same_metrics"], figures["pipeline_overhead"]
    assert figures["param_change"]["stages_run"] == ["train", "evaluate", "report"]
    for stage in NON_TENSORFLOW_STAGES:
        startup = figures["startup"]["stages"][stage]
        assert startup["packages_imported"] > 0  # the import trace was read
        assert not startup["imports_tensorflow"], stage
    assert set(figures["peak_memory"]["stages_megabytes"]) == set(STAGES)
    assert [row["factor"] for row in figures["scaling"]["factors"]] == [1, 2]
    ratios = [
        figures[name]["ratio"] for name in ("pipeline_overhead", "nothing_to_do", "param_change")
    ]
    ratios.append(figures["run_cache"]["ratio"])
    throughput = figures["training_throughput"]
    ratios += [throughput[size]["samples_per_second"]["ratio"] for size in throughput["goal"]]
    assert all(math.isfinite(ratio) and ratio > 0 for ratio in ratios), ratios


@pytest.mark.slow
def test_quick_accuracy_benchmark_times_the_reference_and_each_experiment(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_synthetic_source(source)
    out, plot = tmp_path / "accuracy.json", tmp_path / "accuracy.png"
    command = [sys.executable, "-m", "bench.accuracy", "--quick", "--source", str(source)]
    command += ["--out", str(out), "--plot", str(plot), "study-cnn", "cnn-fast"]
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"

    result = subprocess.run(
        command, cwd=REPOSITORY_ROOT, env=environment, capture_output=True, text=True, timeout=600
    )

    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    results = json.loads(out.read_text())
    reference = results["reference"]
    assert 0 <= reference["accuracy"] <= 1 and reference["seconds"] > 0
    assert list(results["experiments"]) == ["study-cnn", "cnn-fast"]
    for row in results["experiments"].values():
        assert 0 <= row["accuracy"] <= 1  # read from `dvc exp show --json`
        assert row["ratio"] == pytest.approx(row["seconds"] / reference["seconds"], abs=0.01)
    assert results["experiments"]["cnn-fast"]["goal"] == {"accuracy": 0.93, "ratio": 2.0}
    assert "cnn-fast:" in result.stdout and "goal >= 93%" in result.stdout
    assert plot.read_bytes().startswith(b"\x89PNG")
