"""The benchmark's figures. Each one is a ratio of two things run side by side, in pairs whose
order alternates, reduced to the median of the pairs' ratios.
"""

from __future__ import annotations

import contextlib
import gzip
import http.server
import json
import logging
import os
import re
import shutil
import struct
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure import (
    MEGABYTE,
    BenchmarkError,
    Run,
    compare,
    in_alternating_order,
    median,
    run_measured,
)
from fmnist.data import save_split
from fmnist.errors import FetchError
from fmnist.fetch import fetch_dataset, read_checksums, retry_wait, source_time_limit
from fmnist.params import load_params
from tools.dvc_cli import dvc_command
from tools.workspace import (
    REPOSITORY_ROOT,
    STAGES,
    copy_workspace,
    source_splits,
    stage_command,
    stages_run,
)

log = logging.getLogger("bench")

TRAINING_STAGES = ("train", "evaluate", "report")
NON_TENSORFLOW_STAGES = ("fetch", "preprocess", "split", "report")
TENSORFLOW_PACKAGES = {"tensorflow", "keras", "tf_keras"}
# Every stage must stay under this peak resident set with the default params.
MEMORY_GOAL_BYTES = 1.5e9
# A hostile source for the fetch-bounds figure: a gzip bomb behind the header of the largest
# file (60,000 images of 28 x 28), and a mirror that sends a byte every half second.
BOMB_HEADER = struct.pack(">BBBBIII", 0, 0, 0x08, 3, 60_000, 28, 28)
BOMB_INFLATED_MEBIBYTES = 1024
TRICKLE_INTERVAL_SECONDS = 0.5
FETCH_TIMEOUT_SECONDS = 2.0
# A fetch in a child process, so that its peak resident set is its own; a refusal is the
# expected outcome and exits 0, anything else fails the figure.
FETCH_EXPECTING_REFUSAL = """
import json, sys
from fmnist.errors import FetchError
from fmnist.fetch import fetch_dataset
try:
    fetch_dataset([sys.argv[1]], sys.argv[2], json.loads(sys.argv[3]), timeout=10, attempts=1)
except FetchError as error:
    print(error)
else:
    sys.exit("the fetch accepted the gzip bomb")
"""
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| +([\w.]+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Settings:
    repeats: int
    """Pairs measured for each figure."""
    idle_repeats: int
    """Pairs for the nothing-to-do figure, which takes a second a pair."""
    training_epochs: int
    """Epochs per throughput measurement; the first, which traces the graph, is not timed."""
    scaling_factors: tuple[int, ...]
    scaling_epochs: int
    trace_timed_runs: bool
    """Check imports on the timed start-up runs (quick) rather than on an extra untimed run."""
    scratch: Path
    """Where the temporary workspaces go."""
    concurrent: bool
    """Measure the figures that need no finished pipeline alongside the others (quick mode:
    the timings then mean nothing, but every figure is measured in half the time)."""


def _python(*arguments: str) -> list[str]:
    return [sys.executable, *arguments]


def _expect_stages(run: Run, expected: set[str]) -> None:
    ran = stages_run(run.output)
    if ran != expected:
        raise BenchmarkError(
            f"{' '.join(run.command)} ran {sorted(ran) or 'no stage'}, expected "
            f"{sorted(expected) or 'none'}:\n{run.output[-2000:]}"
        )


def _megabytes(value: float) -> float:
    return round(value / MEGABYTE, 1)


def pipeline_overhead(template: Path, settings: Settings) -> tuple[dict, Path]:
    """`dvc repro` from an empty cache against one plain process doing the same work.

    Returns the figure and the last workspace, whose pipeline has run and is up to date.
    """
    repro_seconds, plain_seconds = [], []
    workspace = template
    plain_metrics: dict = {}
    for repeat in range(settings.repeats):
        if workspace != template:
            shutil.rmtree(workspace)
        workspace = copy_workspace(template, settings.scratch / f"overhead-{repeat}")
        for side in in_alternating_order(repeat, "dvc", "plain"):
            if side == "dvc":
                run = run_measured(dvc_command("repro"), workspace)
                _expect_stages(run, set(STAGES))
                repro_seconds.append(run.seconds)
            else:
                command = _python("-m", "bench.plain", "--params", str(workspace / "params.yaml"))
                run = run_measured(command, REPOSITORY_ROOT)
                plain_seconds.append(run.seconds)
                plain_metrics = json.loads(run.output.strip().splitlines()[-1])
            log.info("overhead %d: %s %.1f s", repeat + 1, side, run.seconds)
    pipeline_metrics = json.loads((workspace / "metrics" / "evaluate.json").read_text())
    pipeline_metrics = {key: pipeline_metrics[key] for key in plain_metrics}
    figure = {
        "what": "dvc repro from an empty cache / one plain Python process doing the same work",
        "goal": 1.25,
        **compare(repro_seconds, plain_seconds),
        "pipeline_metrics": pipeline_metrics,
        "plain_metrics": plain_metrics,
        "same_metrics": pipeline_metrics == plain_metrics,
    }
    return figure, workspace


def nothing_to_do(workspace: Path, settings: Settings) -> dict:
    """`dvc repro` on an up-to-date pipeline against `dvc version`."""
    repro_seconds, version_seconds = [], []
    for repeat in range(settings.idle_repeats):
        for side in in_alternating_order(repeat, "repro", "version"):
            if side == "repro":
                run = run_measured(dvc_command("repro"), workspace)
                _expect_stages(run, set())
                repro_seconds.append(run.seconds)
            else:
                version_seconds.append(run_measured(dvc_command("version"), workspace).seconds)
    return {
        "what": "dvc repro with nothing to do / dvc version",
        "goal": 1.5,
        **compare(repro_seconds, version_seconds),
    }


def param_change(workspace: Path, settings: Settings) -> tuple[dict, dict[str, list[Run]]]:
    """`dvc exp run -S train.learning_rate=...` against train, evaluate and report run alone.

    Returns the figure and the runs of each stage alone (for the memory figure).
    """
    base_rate = load_params(workspace / "params.yaml").train.learning_rate
    experiment_seconds, alone_seconds, rates = [], [], []
    ran: set[str] = set()
    alone_runs: dict[str, list[Run]] = {stage: [] for stage in TRAINING_STAGES}
    for repeat in range(settings.repeats):
        rate = f"{base_rate * (1 + (repeat + 1) / 10):g}"
        rates.append(rate)
        for side in in_alternating_order(repeat, "experiment", "alone"):
            if side == "experiment":
                command = dvc_command("exp", "run", "-S", f"train.learning_rate={rate}")
                run = run_measured(command, workspace)
                _expect_stages(run, set(TRAINING_STAGES))
                ran |= stages_run(run.output)
                experiment_seconds.append(run.seconds)
            else:
                # The params are those of the last experiment: the same work as it did.
                for stage in TRAINING_STAGES:
                    alone_runs[stage].append(
                        run_measured(stage_command(workspace, stage), workspace)
                    )
                alone_seconds.append(sum(alone_runs[stage][-1].seconds for stage in alone_runs))
            seconds = experiment_seconds if side == "experiment" else alone_seconds
            log.info("param change %d: %s %.1f s", repeat + 1, side, seconds[-1])
    figure = {
        "what": "dvc exp run -S train.learning_rate=... / train + evaluate + report run alone",
        "goal": 1.15,
        "stages_run": [stage for stage in STAGES if stage in ran],
        **compare(experiment_seconds, alone_seconds),
        "base_learning_rate": f"{base_rate:g}",
        "learning_rates": rates,
        "experiment_seconds": [round(seconds, 3) for seconds in experiment_seconds],
    }
    return figure, alone_runs


def run_cache(workspace: Path, changed: dict) -> dict:
    """Returning to params that already ran: each experiment of ``changed`` (the param-change
    figure) again, which DVC's run-cache restores, against training it the first time.
    """
    restored_seconds = []
    for rate in changed["learning_rates"]:
        # Away from the rate first (to the one that ran before them all), then back to it.
        for value in (changed["base_learning_rate"], rate):
            run = run_measured(
                dvc_command("exp", "run", "-S", f"train.learning_rate={value}"), workspace
            )
            # The report is a plain `cache: false` output, so that stage alone runs again.
            _expect_stages(run, {"report"})
        restored_seconds.append(run.seconds)
        log.info("run-cache: learning rate %s restored in %.1f s", rate, run.seconds)
    return {
        "what": "dvc exp run -S train.learning_rate=... back to params that ran, restored from "
        "the run-cache / the same experiment trained",
        **compare(restored_seconds, changed["experiment_seconds"]),
    }


def imported_packages(output: str) -> set[str]:
    """Top-level packages that ``python -X importtime`` output shows were imported."""
    return {name.split(".")[0] for name in IMPORT_LINE.findall(output)}


def startup(workspace: Path, settings: Settings) -> tuple[dict, dict[str, list[Run]]]:
    """Each stage that needs no TensorFlow, run alone, against `python -c pass`.

    Also whether it imports TensorFlow, from ``python -X importtime`` on an extra run.
    Returns the figure and the stages' runs (for the memory figure).
    """
    figure: dict[str, dict] = {}
    runs: dict[str, list[Run]] = {}
    for stage in NON_TENSORFLOW_STAGES:
        command = stage_command(workspace, stage)
        traced = [command[0], "-X", "importtime", *command[1:]]
        packages: set[str] = set()
        if not settings.trace_timed_runs:
            packages = imported_packages(run_measured(traced, workspace).output)
        stage_seconds, python_seconds = [], []
        runs[stage] = []
        for repeat in range(settings.repeats):
            for side in in_alternating_order(repeat, "stage", "python"):
                if side == "stage":
                    run = run_measured(traced if settings.trace_timed_runs else command, workspace)
                    packages |= imported_packages(run.output)
                    runs[stage].append(run)
                    stage_seconds.append(run.seconds)
                else:
                    python_seconds.append(run_measured(_python("-c", "pass"), workspace).seconds)
        figure[stage] = {
            **compare(stage_seconds, python_seconds),
            "imports_tensorflow": bool(packages & TENSORFLOW_PACKAGES),
            "packages_imported": len(packages),
        }
    return {"what": "stage run alone / python -c pass", "stages": figure}, runs


def peak_memory(runs: dict[str, list[Run]]) -> dict:
    """The median peak resident set of each stage, from its runs alone."""
    stages = {
        stage: _megabytes(median([run.peak_memory_bytes for run in runs[stage]]))
        for stage in STAGES
    }
    return {
        "what": "peak resident set of each stage run alone, MB (2**20 bytes)",
        "goal_megabytes": _megabytes(MEMORY_GOAL_BYTES),
        "stages_megabytes": stages,
        "within_goal": all(value * MEGABYTE < MEMORY_GOAL_BYTES for value in stages.values()),
    }


def prepare_splits(template: Path, directory: Path) -> Path:
    """The train and validation splits of the template's pipeline, and its params.yaml, in
    ``directory``: the training figures' input, independent of any workspace.
    """
    splits = source_splits(load_params(template / "params.yaml"))
    directory.mkdir(parents=True)
    for name in ("train", "val"):
        save_split(directory / f"{name}.npz", splits[name])
    shutil.copy2(template / "params.yaml", directory / "params.yaml")
    return directory


def _training_worker(splits: Path, settings: Settings, *arguments: str) -> dict:
    handle, name = tempfile.mkstemp(dir=settings.scratch, prefix="training-", suffix=".json")
    os.close(handle)
    out = Path(name)
    command = _python("-m", "bench.training", *arguments, "--data", str(splits), "--out", name)
    run_measured(command, REPOSITORY_ROOT)
    return json.loads(out.read_text())


def training_throughput(splits: Path, settings: Settings) -> dict:
    """The train stage's samples per second against its loop at Keras's default of one batch per
    call into TensorFlow (bench.training.fit_plain)."""
    default_batch = load_params(splits / "params.yaml").train.batch_size
    batch_sizes = [str(size) for size in dict.fromkeys((32, default_batch))]
    figures = _training_worker(
        splits,
        settings,
        "throughput",
        "--batch-sizes",
        *batch_sizes,
        "--epochs",
        str(settings.training_epochs),
        "--repeats",
        str(settings.repeats),
    )
    return {
        "what": "samples/s of the train stage's training loop / the same loop at one batch per "
        "call (Keras's default steps_per_execution), per batch size; "
        "and / the matrix products alone at the default batch size",
        "goal": {"32": 2.0, str(default_batch): 1.0},
        **figures,
    }


def scaling(splits: Path, settings: Settings) -> dict:
    """Throughput and peak memory of training on 1x, 2x, 4x... copies of the training set."""
    by_factor: dict[int, list[dict]] = {factor: [] for factor in settings.scaling_factors}
    for repeat in range(settings.repeats):
        order = settings.scaling_factors[:: 1 if repeat % 2 == 0 else -1]
        for factor in order:
            figures = _training_worker(
                splits,
                settings,
                "scaling",
                "--factor",
                str(factor),
                "--epochs",
                str(settings.scaling_epochs),
            )
            by_factor[factor].append(figures)
            log.info("scaling %dx: %.0f samples/s", factor, figures["samples_per_second"])
    first = settings.scaling_factors[0]
    rows = []
    for factor, measured in by_factor.items():
        # Each factor is compared with the first in the same repeat.
        pairs = list(zip(measured, by_factor[first], strict=True))
        extra_copies = [
            (this["peak_resident_bytes"] - base["peak_resident_bytes"])
            / (this["image_bytes"] - base["image_bytes"])
            for this, base in pairs
            if this["image_bytes"] > base["image_bytes"]
        ]
        rows.append(
            {
                "factor": factor,
                "images": measured[0]["images"],
                "image_megabytes": _megabytes(measured[0]["image_bytes"]),
                "samples_per_second": round(median([m["samples_per_second"] for m in measured])),
                "throughput_relative_to_first": round(
                    median([t["samples_per_second"] / b["samples_per_second"] for t, b in pairs]),
                    3,
                ),
                "peak_megabytes": _megabytes(median([m["peak_resident_bytes"] for m in measured])),
                # Extra peak memory per extra byte of uint8 images: 1 is one uint8 copy; a
                # float32 copy of the images would add 4.
                "extra_peak_per_extra_image_byte": (
                    round(median(extra_copies), 2) if extra_copies else None
                ),
            }
        )
    return {
        "what": "training on the training set repeated: samples/s and peak resident set",
        "factors": rows,
    }


def _write_gzip_bomb(path: Path) -> Path:
    """BOMB_HEADER and BOMB_INFLATED_MEBIBYTES of zeros, gzipped a MiB at a time: about 1 KB
    per MiB, so the bomb is never whole in memory, compressed or not.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(MEGABYTE)
    with path.open("wb") as file:
        file.write(compressor.compress(BOMB_HEADER))
        for _ in range(BOMB_INFLATED_MEBIBYTES):
            file.write(compressor.compress(zeros))
        file.write(compressor.flush())
    return path


@contextlib.contextmanager
def _serving(body: bytes = b"", status: int = 200, byte_interval: float = 0.0) -> Iterator[str]:
    """A mirror on 127.0.0.1 answering every request with ``status`` and ``body`` (its length
    announced), a byte every ``byte_interval`` seconds if given; yields its base URL.
    """
    stopped = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if status != 200:
                self.send_error(status)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.close_connection = True
            chunks = [body[i : i + 1] for i in range(len(body))] if byte_interval else [body]
            for chunk in chunks:
                if stopped.wait(byte_interval):
                    return
                try:
                    self.wfile.write(chunk)
                except OSError:  # the fetch hung up, as it should
                    return

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        stopped.set()
        server.shutdown()
        server.server_close()
        thread.join()


def _seconds_to_give_up(source: str, directory: Path, attempts: int, backoff: float) -> float:
    started = time.perf_counter()
    try:
        fetch_dataset(
            [source],
            directory / "out",
            read_checksums(),
            timeout=FETCH_TIMEOUT_SECONDS,
            attempts=attempts,
            backoff=backoff,
        )
    except FetchError:
        return time.perf_counter() - started
    raise BenchmarkError(f"the fetch from {source} succeeded; the figure needs it to fail")


def fetch_bounds(settings: Settings) -> dict:
    """What a hostile source costs the fetch stage.

    The peak resident set of a fetch that refuses a gzip bomb (about 1 MB inflating to 1 GiB
    behind the header of the largest file) from a directory and from a mirror on 127.0.0.1,
    against a process that only imports fmnist.fetch; the seconds until a mirror trickling a
    byte every 0.5 s is given up, with one attempt and with three, against its time limit;
    and the seconds until a mirror answering 503 to everything is given up after six attempts,
    against its time limit and against the waits had they doubled without a cap.
    """
    directory = settings.scratch / "fetch-bounds"
    directory.mkdir()
    bomb = _write_gzip_bomb(directory / "train-images-idx3-ubyte.gz")
    checksums = json.dumps(read_checksums())
    peaks: dict[str, list[float]] = {"directory": [], "mirror": [], "import": []}
    with _serving(bomb.read_bytes()) as bomb_url:
        for repeat in range(settings.repeats):
            for side in in_alternating_order(repeat, "bomb", "import"):
                if side == "import":
                    run = run_measured(_python("-c", "import fmnist.fetch"), REPOSITORY_ROOT)
                    peaks["import"].append(_megabytes(run.peak_memory_bytes))
                    continue
                for where, source in (("directory", str(directory)), ("mirror", bomb_url)):
                    out = str(directory / "out")
                    command = _python("-c", FETCH_EXPECTING_REFUSAL, source, out, checksums)
                    run = run_measured(command, REPOSITORY_ROOT)
                    if "decompresses to more than" not in run.output:
                        raise BenchmarkError(f"the fetch from {source} said:\n{run.output}")
                    peaks[where].append(_megabytes(run.peak_memory_bytes))
    trickle_body = gzip.compress(BOMB_HEADER)
    timings: dict[str, list[float]] = {"trickle_once": [], "trickle_thrice": [], "errors": []}
    with (
        _serving(trickle_body, byte_interval=TRICKLE_INTERVAL_SECONDS) as trickle_url,
        _serving(status=503) as failing_url,
    ):
        for _ in range(settings.repeats):
            timings["trickle_once"].append(_seconds_to_give_up(trickle_url, directory, 1, 1.0))
            timings["trickle_thrice"].append(_seconds_to_give_up(trickle_url, directory, 3, 1.0))
            timings["errors"].append(_seconds_to_give_up(failing_url, directory, 6, 1.0))
    limits = {
        name: source_time_limit(FETCH_TIMEOUT_SECONDS, attempts, 1.0)
        for name, attempts in (("trickle_once", 1), ("trickle_thrice", 3), ("errors", 6))
    }
    uncapped_waits = sum(2.0 ** (attempt - 1) for attempt in range(1, 6))
    capped_waits = sum(retry_wait(attempt, FETCH_TIMEOUT_SECONDS, 1.0) for attempt in range(1, 6))
    return {
        "what": "fetch from a hostile source: peak resident set on a gzip bomb / importing "
        "fmnist.fetch alone, MB; seconds until a mirror is given up / its time limit",
        "bomb_compressed_bytes": bomb.stat().st_size,
        "bomb_inflated_bytes": len(BOMB_HEADER) + BOMB_INFLATED_MEBIBYTES * MEGABYTE,
        "timeout_seconds": FETCH_TIMEOUT_SECONDS,
        "bomb_from_directory": compare(peaks["directory"], peaks["import"]),
        "bomb_from_mirror": compare(peaks["mirror"], peaks["import"]),
        "trickle_one_attempt": compare(
            timings["trickle_once"], [limits["trickle_once"]] * settings.repeats
        ),
        "trickle_three_attempts": compare(
            timings["trickle_thrice"], [limits["trickle_thrice"]] * settings.repeats
        ),
        "server_errors_six_attempts": {
            **compare(timings["errors"], [limits["errors"]] * settings.repeats),
            "waits_seconds": capped_waits,
            "uncapped_waits_seconds": uncapped_waits,
        },
    }


def _timed(name: str, function: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = function()
    log.info("measured %s in %.0f s", name, time.perf_counter() - started)
    return result


def _measure_each(measurements: dict[str, Callable[[], dict]]) -> dict[str, dict]:
    return {name: _timed(name, measure) for name, measure in measurements.items()}


def run_all(template: Path, settings: Settings) -> dict:
    """Every figure. Those that need no finished pipeline run after the others, or alongside
    them where ``settings.concurrent`` says so.
    """
    splits = prepare_splits(template, settings.scratch / "splits")
    independent = {
        "training_throughput": lambda: training_throughput(splits, settings),
        "scaling": lambda: scaling(splits, settings),
    }
    figures: dict[str, dict] = {}
    with ThreadPoolExecutor(max_workers=1) as executor:
        alongside = executor.submit(_measure_each, independent) if settings.concurrent else None
        figures["pipeline_overhead"], workspace = _timed(
            "pipeline_overhead", lambda: pipeline_overhead(template, settings)
        )
        figures["nothing_to_do"] = _timed(
            "nothing_to_do", lambda: nothing_to_do(workspace, settings)
        )
        figures["param_change"], training_runs = _timed(
            "param_change", lambda: param_change(workspace, settings)
        )
        figures["run_cache"] = _timed(
            "run_cache", lambda: run_cache(workspace, figures["param_change"])
        )
        figures["startup"], data_runs = _timed("startup", lambda: startup(workspace, settings))
        figures["peak_memory"] = peak_memory({**data_runs, **training_runs})
        figures.update(alongside.result() if alongside else _measure_each(independent))
    return figures
