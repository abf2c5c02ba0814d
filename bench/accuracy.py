"""Accuracy per CPU-minute: the study's CNN script (bench/reference_cnn.py) and the named
experiments, each timed as ``make exp NAME=<name>`` runs it, side by side (bench/README.md).

    python -m bench.accuracy                      # make bench: about 25 minutes on 2 cores
    python -m bench.accuracy cnn-fast dense-best  # some experiments only
    python -m bench.accuracy --quick --source DIR # one epoch each on small IDX files
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fmnist.files import write_json
from fmnist.report import format_percent
from tools.dvc_cli import dvc_command, run_dvc, set_arguments
from tools.study import (
    EXPERIMENTS_FILE,
    TEST_ACCURACY,
    choose_experiments,
    latest_results,
    load_experiments,
    metric_value,
    run_command,
)
from tools.workspace import REPOSITORY_ROOT, command_environment, make_template, source_checksums

log = logging.getLogger("bench")

# The goals: (least test accuracy, most time as a multiple of the reference's).
GOALS = {"cnn-fast": (0.93, 2.0), "cnn-best": (0.94, 10.0), "dense-best": (0.91, 2.0)}
DEFAULT_NAMES = ("study-cnn", "cnn-fast", "dense-best", "cnn-best")
# The CPU features that decide TensorFlow's speed: figures from CPUs that differ in them are
# not comparable.
VECTOR_FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")


def describe_machine() -> dict:
    """The CPU, its vector features and the software that the figures came from."""
    cpuinfo: dict[str, str] = {}
    proc = Path("/proc/cpuinfo")
    for line in proc.read_text().splitlines() if proc.exists() else []:
        key, _, value = line.partition(":")
        cpuinfo.setdefault(key.strip(), value.strip())
    flags = cpuinfo.get("flags", "").split()
    return {
        "cpu": cpuinfo.get("model name") or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "vector_features": [feature for feature in VECTOR_FEATURES if feature in flags],
        "python": platform.python_version(),
        **{package: importlib.metadata.version(package) for package in ("keras", "dvc", "numpy")},
    }


def run_timed(command: list[str], cwd: Path) -> tuple[float, str]:
    """Run ``command`` to completion: its wall seconds and its output; fail loudly if it fails."""
    started = time.perf_counter()
    result = subprocess.run(
        command, cwd=cwd, env=command_environment(), capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(
            f"{' '.join(command)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    return time.perf_counter() - started, result.stdout


def reference(raw: Path, epochs: int | None) -> dict:
    """Time the reference script on the IDX files in ``raw``; its accuracy and seconds."""
    command = [sys.executable, "-m", "bench.reference_cnn", "--raw", str(raw)]
    if epochs:
        command += ["--epochs", str(epochs)]
    seconds, output = run_timed(command, REPOSITORY_ROOT)
    scores = json.loads(output.strip().splitlines()[-1])
    return {"accuracy": scores["accuracy"], "seconds": round(seconds, 1)}


def experiment_seconds(workspace: Path, names: list[str], epochs: int | None) -> dict[str, float]:
    """Run each named experiment in ``workspace`` in turn; the wall time of each."""
    experiments = choose_experiments(load_experiments(REPOSITORY_ROOT / EXPERIMENTS_FILE), names)
    seconds = {}
    for experiment in experiments:
        command = run_command(experiment)
        if epochs:  # a check of the benchmark itself: no warm-up fits in one epoch
            command += set_arguments({"train.epochs": epochs, "train.warmup_epochs": 0})
        log.info("running %s", experiment.name)
        elapsed, _ = run_timed(dvc_command(*command[1:]), workspace)
        seconds[experiment.name] = round(elapsed, 1)
        log.info("%s: %.1f s", experiment.name, elapsed)
    return seconds


def summarize(reference_run: dict, seconds: dict[str, float], scores: dict[str, float]) -> dict:
    rows = {}
    for name, elapsed in seconds.items():
        ratio = elapsed / reference_run["seconds"]
        row = {"accuracy": scores.get(name), "seconds": elapsed, "ratio": round(ratio, 2)}
        if name in GOALS:
            least, most = GOALS[name]
            row["goal"] = {"accuracy": least, "ratio": most}
            row["met"] = bool(row["accuracy"] is not None and row["accuracy"] >= least) and (
                ratio <= most
            )
        rows[name] = row
    return rows


def summary_lines(results: dict) -> list[str]:
    reference_run = results["reference"]
    lines = [
        f"Accuracy per CPU-minute ({results['machine']['cpu']}, {results['machine']['cores']} "
        f"cores, {' '.join(results['machine']['vector_features']) or 'no AVX2'}; one run each):",
        f"  reference (the study's CNN script): {format_percent(reference_run['accuracy'])} "
        f"test in {reference_run['seconds']:.0f} s",
    ]
    for name, row in results["experiments"].items():
        accuracy = "n/a" if row["accuracy"] is None else format_percent(row["accuracy"])
        line = f"  {name}: {accuracy} test in {row['seconds']:.0f} s = {row['ratio']:.2f}x"
        if "goal" in row:
            goal = row["goal"]
            verdict = "met" if row["met"] else "NOT met"
            line += f" (goal >= {100 * goal['accuracy']:.0f}% in <= {goal['ratio']:g}x: {verdict})"
        lines.append(line)
    return lines


def plot(results: dict, path: Path) -> None:
    """Test accuracy against minutes for the reference and every experiment."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fmnist.plots import save_figure

    figure, axes = plt.subplots(figsize=(7, 4.5))
    reference_run = results["reference"]
    points = {"reference script": (reference_run["seconds"], reference_run["accuracy"])}
    points |= {
        name: (row["seconds"], row["accuracy"])
        for name, row in results["experiments"].items()
        if row["accuracy"] is not None
    }
    for name, (seconds, accuracy) in points.items():
        marker = "s" if name == "reference script" else "o"
        axes.scatter(seconds / 60, 100 * accuracy, marker=marker, color="tab:blue")
        axes.annotate(
            name, (seconds / 60, 100 * accuracy), textcoords="offset points", xytext=(5, 4)
        )
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(matplotlib.ticker.FixedLocator([0.5, 1, 2, 4, 8, 16, 32]))
    axes.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    axes.margins(x=0.15, y=0.1)
    axes.set_xlabel("minutes on 2 CPU cores (train, evaluate, report through DVC)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title("Fashion-MNIST: accuracy against time")
    axes.grid(True, which="both", alpha=0.3)
    save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", help=f"experiments (default: {' '.join(DEFAULT_NAMES)})"
    )
    parser.add_argument("--quick", action="store_true", help="one epoch each, to check it works")
    parser.add_argument("--source", type=Path, help="a directory of the four IDX files to use")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    names = args.names or list(DEFAULT_NAMES)
    epochs = 1 if args.quick else None

    changes: dict[str, object] = {}
    dataset = {}
    if args.source:
        changes = {"fetch.sources": [str(args.source.resolve())]}
        dataset = {"CHECKSUMS": source_checksums(args.source.resolve())}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fmnist-accuracy-") as scratch:
        workspace = make_template(Path(scratch) / "workspace", changes, **dataset)
        shutil.copy2(REPOSITORY_ROOT / EXPERIMENTS_FILE, workspace / EXPERIMENTS_FILE)
        run_timed(dvc_command("repro", "split"), workspace)  # the shared data, untimed
        reference_run = reference(workspace / "data" / "raw", epochs)
        log.info("reference: %.1f s", reference_run["seconds"])
        seconds = experiment_seconds(workspace, names, epochs)
        shown = latest_results(run_dvc("exp", "show", "--json", cwd=workspace))
        scores = {name: metric_value(run, *TEST_ACCURACY) for name, run in shown.items()}
    results = {
        "command": " ".join(["python -m bench.accuracy", *sys.argv[1:]]),
        "mode": "quick" if args.quick else "full",
        "machine": describe_machine(),
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "reference": reference_run,
        "experiments": summarize(reference_run, seconds, scores),
    }
    for line in summary_lines(results):
        print(line)
    out = REPOSITORY_ROOT / "bench" / "accuracy.json"
    write_json(out, results)
    plot(results, out.with_suffix(".png"))
    log.info("wrote %s and its plot", out)


if __name__ == "__main__":
    main()
