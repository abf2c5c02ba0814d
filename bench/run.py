"""Measure the pipeline's performance: print each figure and write them all to a JSON file.

Runs in temporary copies of the pipeline, never in this workspace. On the real data (params.yaml's
sources) by default; --quick --source DIR runs every figure once on small IDX files, to check
that the benchmark works.

    python -m bench.run --out bench/results.json    # make bench: about 25 minutes on 2 cores
    python -m bench.run --quick --source DIR --out results.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from bench.figures import Settings, fetch_bounds, run_all
from bench.summary import summary_lines
from fmnist.files import write_json
from tools.workspace import REPOSITORY_ROOT, cache_type, make_template, source_checksums

log = logging.getLogger("bench")


def describe_machine() -> dict:
    """The CPU, memory and software that the figures came from."""
    cpu = platform.processor() or platform.machine()
    memory_bytes = 0
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_bytes = int(line.split()[1]) * 1024
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gigabytes": round(memory_bytes / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        **{
            package: importlib.metadata.version(package)
            for package in ("tensorflow-cpu", "keras", "dvc", "numpy")
            if _installed(package)
        },
    }


def _installed(package: str) -> bool:
    try:
        importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def fetch_bounds_lines(figure: dict) -> list[str]:
    """The fetch-bounds figure as the lines the benchmark prints after the others."""
    timeout = figure["timeout_seconds"]
    errors = figure["server_errors_six_attempts"]
    return [
        f"9. fetch from a hostile source (timeout {timeout:g} s):",
        f"   gzip bomb ({figure['bomb_compressed_bytes'] / 2**20:.1f} MB inflating to "
        f"{figure['bomb_inflated_bytes'] / 2**30:.0f} GiB): peak "
        f"{figure['bomb_from_directory']['measured']:,.0f} MB from a directory, "
        f"{figure['bomb_from_mirror']['measured']:,.0f} MB from a mirror; importing "
        f"fmnist.fetch alone {figure['bomb_from_directory']['baseline']:,.0f} MB",
        f"   mirror trickling a byte every 0.5 s given up after "
        f"{figure['trickle_one_attempt']['measured']:.1f} s with 1 attempt (limit "
        f"{figure['trickle_one_attempt']['baseline']:g} s), "
        f"{figure['trickle_three_attempts']['measured']:.1f} s with 3 (limit "
        f"{figure['trickle_three_attempts']['baseline']:g} s)",
        f"   mirror answering 503 given up after {errors['measured']:.1f} s with 6 attempts "
        f"(limit {errors['baseline']:g} s; waits {errors['waits_seconds']:g} s, "
        f"{errors['uncapped_waits_seconds']:g} s had they doubled without a cap)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat, 2 epochs, small data")
    parser.add_argument("--source", type=Path, help="a directory of the four IDX files to use")
    parser.add_argument("--repeats", type=int, help="pairs per figure (default 5; quick 1)")
    parser.add_argument("--out", type=Path, default=REPOSITORY_ROOT / "bench" / "results.json")
    parser.add_argument("--scratch", type=Path, help="directory for the temporary workspaces")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)

    repeats = args.repeats or (1 if args.quick else 5)
    changes: dict[str, object] = {}
    checksums = None
    if args.source:
        source = args.source.resolve()
        changes = {"fetch.sources": [str(source)]}
        checksums = source_checksums(source)
    if args.quick:
        changes["train.epochs"] = 2
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fmnist-bench-", dir=args.scratch) as scratch:
        settings = Settings(
            repeats=repeats,
            idle_repeats=repeats if args.quick else 2 * repeats + 1,
            training_epochs=2 if args.quick else 3,
            scaling_factors=(1, 2) if args.quick else (1, 2, 4),
            scaling_epochs=2 if args.quick else 3,
            trace_timed_runs=args.quick,
            concurrent=args.quick,
            scratch=Path(scratch),
        )
        template = make_template(Path(scratch) / "template", changes, checksums)
        workspace_cache_type = cache_type(template)
        figures = run_all(template, settings)
        # Kept beside the pipeline's figures, not among them: it measures the fetch alone,
        # on sources made up for it, whatever --source says.
        hostile_source = fetch_bounds(settings)
    results = {
        "command": " ".join(["python -m bench.run", *sys.argv[1:]]),
        "mode": "quick" if args.quick else "full",
        "data": str(args.source) if args.source else "params.yaml's fetch.sources",
        "repeats": repeats,
        "dvc_cache_type": workspace_cache_type,
        "machine": describe_machine(),
        "load_average_at_end": [round(load, 2) for load in os.getloadavg()],
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "figures": figures,
        "fetch_bounds": hostile_source,
    }
    for line in [*summary_lines(results), *fetch_bounds_lines(hostile_source)]:
        print(line)
    write_json(args.out, results)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
