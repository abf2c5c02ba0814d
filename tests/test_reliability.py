"""Reliability: repeatability, bad input, faults in the middle, parallel experiments, disk use.

Each test checks one promise of docs/guarantees.md, "What is guaranteed, and how it is tested". The
`dvc` tests share one copy of the session's baseline repository (synthetic data, its first
`dvc repro` committed) and put it back to that commit when they are done; the stage tests run
one stage's script on a temporary directory holding its own params.yaml.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psutil  # installed with dvc
import pytest
import yaml

from fmnist.data import Split, save_split
from fmnist.dataset import NUM_CLASSES, RAW_FILES
from fmnist.files import PARTIAL_MARKER
from tests.conftest import REPOSITORY_ROOT, make_images
from tests.helpers import STAGES, copy_workspace, dvc, encode_idx, git, set_params, stages_run
from tools.dvc_cli import dvc_command
from tools.workspace import command_environment

# Everything a run writes outside data/: compared byte for byte before and after a failure.
RESULTS = ("models", "metrics", "plots", "reports")
MODEL = "models/model.keras"
TRAIN_ARGUMENTS = (
    *("--data", "data/split", "--model", MODEL),
    *("--live", "metrics/train"),
)
PREPROCESS_ARGUMENTS = (
    *("--raw", "data/raw", "--out", "data/prepared"),
    *("--summary", "reports/data.json", "--samples", "plots/samples.png"),
)
# Enough epochs that a signal sent after the first one lands in the middle of training, few
# enough that the run after the kill is quick.
LONG_EPOCHS = 30


# --- helpers -----------------------------------------------------------------------------


def digests(root: Path, *directories: str) -> dict[str, str]:
    """SHA-256 of every file under ``directories`` of ``root``, by path relative to ``root``.

    What a killed stage left in ``.partial`` siblings is not a result and is left out.
    """
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for directory in directories
        for path in sorted((root / directory).rglob("*"))
        if path.is_file() and PARTIAL_MARKER not in path.relative_to(root).as_posix()
    }


def partial_files(root: Path) -> list[str]:
    """Temporary siblings of outputs (fmnist/files.py) anywhere in the working tree."""
    return sorted(
        path.relative_to(root).as_posix()
        for path in root.rglob(f"*{PARTIAL_MARKER}*")
        if not {".git", ".dvc"} & set(path.relative_to(root).parts)
    )


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def locked_outputs(repository: Path) -> dict[str, str]:
    """The MD5 that dvc.lock records for each cached output (``<md5>.dir`` for a directory)."""
    lock = yaml.safe_load((repository / "dvc.lock").read_text())
    return {
        out["path"]: out["md5"]
        for stage in lock["stages"].values()
        for out in stage.get("outs", [])
        if "md5" in out
    }


def cache_file(repository: Path, md5_hash: str) -> Path:
    return repository / ".dvc/cache/files/md5" / md5_hash[:2] / md5_hash[2:]


def cached_file(repository: Path, path: str) -> Path:
    """The cache entry of a file that dvc.lock records, itself or inside a directory output."""
    locked = locked_outputs(repository)
    if path in locked:
        return cache_file(repository, locked[path])
    directory, name = path.rsplit("/", 1)
    entries = json.loads(cache_file(repository, locked[directory]).read_text())
    return cache_file(repository, next(e["md5"] for e in entries if e["relpath"] == name))


def model_weights(path: Path) -> bytes:
    """The weights inside a .keras file (the file also holds its save time, so it differs)."""
    with zipfile.ZipFile(path) as archive:
        return archive.read("model.weights.h5")


def experiments(repository: Path) -> dict[str, dict]:
    """Every experiment that `dvc exp show` lists, by name: its params and metrics."""
    shown = json.loads(dvc("exp", "show", "--json", cwd=repository).stdout)
    return {
        revision["name"]: {
            "params": revision["data"]["params"]["params.yaml"]["data"],
            "metrics": {
                path: metrics["data"] for path, metrics in revision["data"]["metrics"].items()
            },
        }
        for entry in shown
        for experiment in entry.get("experiments") or []
        for revision in experiment["revs"]
    }


def run_stage(name: str, *arguments: str, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``python -m stages.<name>`` in ``cwd``; return the result and how long it took."""
    environment = dict(command_environment(), PYTHONPATH=str(REPOSITORY_ROOT))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", f"stages.{name}", *arguments],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result, time.monotonic() - started


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if ": error:" in line]


def write_params(directory: Path, changes: dict[str, object]) -> None:
    """The repository's params.yaml in ``directory``, with dotted keys set to new values."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "params.yaml").write_bytes((REPOSITORY_ROOT / "params.yaml").read_bytes())
    set_params(directory, changes)


def write_raw_files(directory: Path, per_class: int = 5) -> Path:
    """The four IDX files, decompressed, as the fetch stage writes them."""
    directory.mkdir(parents=True, exist_ok=True)
    for seed, (images_name, labels_name) in enumerate(RAW_FILES.values()):
        labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.uint8), per_class)
        (directory / images_name).write_bytes(encode_idx(make_images(labels, seed)))
        (directory / labels_name).write_bytes(encode_idx(labels))
    return directory


def write_previous_model(root: Path) -> str:
    """A stand-in for a previous train run's model; return its digest."""
    (root / MODEL).parent.mkdir(parents=True, exist_ok=True)
    (root / MODEL).write_text("the previous model")
    return md5(root / MODEL)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, baseline_repository: Path) -> Path:
    return copy_workspace(baseline_repository, tmp_path_factory.mktemp("reliability") / "repo")


@pytest.fixture
def baseline(repository: Path) -> Iterator[Path]:
    """The module's repository at its committed baseline run; put back there afterwards."""
    yield repository
    for leftover in partial_files(repository):
        path = repository / leftover
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    # DVC stages what it changes (core.autostage), so the index has to be reset too.
    git("reset", "--quiet", "--hard", "HEAD", cwd=repository)
    dvc("checkout", "--force", cwd=repository)


# --- 1. repeatability --------------------------------------------------------------------


@pytest.mark.slow
def test_same_params_give_byte_identical_results(baseline: Path) -> None:
    before = digests(baseline, "metrics", "plots", "reports")
    locked_before = locked_outputs(baseline)
    weights_before = model_weights(baseline / MODEL)

    result = dvc("repro", "--force", cwd=baseline)

    assert stages_run(result.stdout) == set(STAGES)
    # Metrics, per-epoch logs, predictions, report and figures (PNGs included): every byte.
    assert digests(baseline, "metrics", "plots", "reports") == before
    # Raw, prepared and split data and the model too: fmnist.model.save_model strips the save
    # time and Python object ids that Keras writes, so dvc.lock records the same hashes.
    assert locked_outputs(baseline) == locked_before
    assert model_weights(baseline / MODEL) == weights_before


# --- 3. bad params -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "arguments", "key", "value", "message"),
    [
        pytest.param(
            "train",
            TRAIN_ARGUMENTS,
            "train.activation",
            "sigmod",
            "train.activation: Input should be 'relu', 'sigmoid', 'tanh', 'elu' or 'gelu' "
            "(got 'sigmod')",
            id="train",
        ),
        pytest.param(
            "split",
            ("--prepared", "data/prepared", "--out", "data/split", "--counts", "split.json"),
            "split.val_size",
            1.5,
            "split.val_size: Input should be less than 1 (got 1.5)",
            id="split",
        ),
    ],
)
def test_bad_param_stops_the_stage_before_any_work(
    tmp_path: Path, stage: str, arguments: tuple[str, ...], key: str, value: object, message: str
) -> None:
    write_params(tmp_path, {key: value})

    result, seconds = run_stage(stage, *arguments, cwd=tmp_path)

    assert result.returncode == 1
    assert error_lines(result.stderr) == [f"{stage}: error: params.yaml: {message}"]
    assert "Traceback" not in result.stderr
    # The input data does not even exist: the params were checked before anything was read.
    assert [path.name for path in tmp_path.iterdir()] == ["params.yaml"]
    # train's ~4 s go into importing TensorFlow (stages/train.py imports it at the top).
    assert seconds < 30


# --- 2. bad data, and an output that cannot be written ------------------------------------


def truncate_labels(data: bytes) -> bytes:
    return data[:-3]


def label_ten(data: bytes) -> bytes:
    return data[:-1] + bytes([10])


def gzip_truncated(data: bytes) -> bytes:
    return gzip.compress(data)[:-10]


@pytest.mark.parametrize(
    ("name", "corrupt", "problem"),
    [
        pytest.param(
            "train-labels-idx1-ubyte",
            truncate_labels,
            "truncated: header (50,) needs 50 bytes of data, found 47",
            id="count-larger-than-payload",
        ),
        pytest.param(
            "t10k-labels-idx1-ubyte", label_ten, "label 10 is outside 0-9", id="label-outside-0-9"
        ),
        pytest.param(
            "train-images-idx3-ubyte",
            gzip_truncated,
            "corrupt or truncated gzip data",
            id="truncated-gzip",
        ),
    ],
)
def test_preprocess_rejects_a_corrupt_raw_file_and_writes_nothing(
    tmp_path: Path, name: str, corrupt: Callable[[bytes], bytes], problem: str
) -> None:
    raw = write_raw_files(tmp_path / "data/raw")
    (raw / name).write_bytes(corrupt((raw / name).read_bytes()))

    result, _ = run_stage("preprocess", *PREPROCESS_ARGUMENTS, cwd=tmp_path)

    assert result.returncode == 1
    [line] = error_lines(result.stderr)
    assert line.startswith(f"preprocess: error: data/raw/{name}: {problem}")
    assert "Traceback" not in result.stderr
    assert sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*")) == [
        "data",
        "data/raw",
        *sorted(f"data/raw/{file}" for pair in RAW_FILES.values() for file in pair),
    ]


def test_stage_that_cannot_write_its_output_names_it_and_writes_nothing(tmp_path: Path) -> None:
    write_raw_files(tmp_path / "data/raw")
    # Root ignores file permissions, so make the output's parent a regular file instead.
    (tmp_path / "prepared").write_text("a file where a directory should be")
    arguments = ("--raw", "data/raw", "--out", "prepared/arrays")
    arguments += ("--summary", "reports/data.json", "--samples", "plots/samples.png")

    result, _ = run_stage("preprocess", *arguments, cwd=tmp_path)

    assert result.returncode == 1
    assert error_lines(result.stderr) == [
        "preprocess: error: cannot write prepared/arrays: prepared is not a directory"
    ]
    assert "Traceback" not in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "prepared"]


# --- 4. faults in the middle ------------------------------------------------------------


@pytest.mark.slow
def test_diverging_training_stops_clearly_and_writes_nothing(tmp_path: Path) -> None:
    for name, seed in (("train", 0), ("val", 1)):
        labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.uint8), 8)
        save_split(tmp_path / f"data/split/{name}.npz", Split(make_images(labels, seed), labels))
    write_params(
        tmp_path,
        {
            "train.optimizer": "sgd",
            "train.learning_rate": 1e30,
            "train.activation": "relu",
            "train.dropout": 0.0,
            "train.hidden_units": [16],
            "train.batch_size": 32,
            "train.epochs": 3,
        },
    )
    before = write_previous_model(tmp_path)

    result, _ = run_stage("train", *TRAIN_ARGUMENTS, cwd=tmp_path)

    assert result.returncode == 1
    [line] = error_lines(result.stderr)
    assert line.startswith("train: error: training diverged: the loss became nan in epoch 1")
    assert "Traceback" not in result.stderr
    # No model is written; dvclive's logs show the diverged epoch.
    assert md5(tmp_path / MODEL) == before
    assert partial_files(tmp_path) == []


# DVC runs a stage's command through $SHELL, or /bin/sh when it is unset. bash execs a single
# command, so DVC sees the stage's own status (130 and 143 from its handlers, -9 for SIGKILL);
# dash waits on it and reports 128 + n, or dies of the group's SIGINT itself (-2).
SIGNAL_STATUSES = {
    signal.SIGINT: {130, -2},
    signal.SIGTERM: {143},
    signal.SIGKILL: {-9, 137},
}


def exit_status(output: str) -> int:
    """The status DVC reports for the failed stage command."""
    found = re.findall(r"exited with (-?\d+)", output)
    assert len(found) == 1, output
    return int(found[0])


def start_repro(repository: Path, log: Path) -> subprocess.Popen:
    """`dvc repro` in the background, in its own process group as a shell would start it."""
    with log.open("wb") as output:
        return subprocess.Popen(
            dvc_command("repro"),
            cwd=repository,
            env=command_environment(),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def logged_epochs(repository: Path) -> int:
    """Epochs that the train stage's declared dvclive series hold so far."""
    series = repository / "metrics/train/plots/metrics/train/loss.tsv"
    if not series.is_file():
        return 0
    return max(len(series.read_text().splitlines()) - 1, 0)  # less the header


def wait_until_training(
    repository: Path, process: subprocess.Popen, timeout: float = 300
) -> psutil.Process:
    """The train stage's process, once it has logged its first epoch to the declared plots."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"dvc repro exited {process.returncode} before training")
        if logged_epochs(repository) >= 1:
            for child in psutil.Process(process.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if "stages.train" in child.cmdline():
                        return child
        time.sleep(0.05)
    raise AssertionError(f"the train stage did not start training within {timeout:.0f} s")


@pytest.mark.slow
@pytest.mark.parametrize("signal_number", [signal.SIGKILL], ids=lambda s: s.name)
def test_killed_training_fails_and_the_previous_results_come_back(
    baseline: Path, tmp_path: Path, signal_number: signal.Signals
) -> None:
    before = digests(baseline, *RESULTS)
    previous_model = locked_outputs(baseline)[MODEL]
    set_params(baseline, {"train.epochs": LONG_EPOCHS})
    log = tmp_path / "repro.log"

    process = start_repro(baseline, log)
    try:
        stage = wait_until_training(baseline, process)
        # dvclive writes straight into the declared plots and metrics while training runs.
        assert stage.is_running()
        assert json.loads((baseline / "metrics/train/metrics.json").read_text())["step"] >= 1
        if signal_number == signal.SIGINT:
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C signals the whole foreground group
        else:
            stage.send_signal(signal_number)
        process.wait(timeout=120)
        # Under dash, DVC can return before the stage has finished cleaning up.
        _, alive = psutil.wait_procs([stage], timeout=60)
        assert alive == [], "the train stage outlived dvc repro"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    output = log.read_text(errors="replace")

    assert process.returncode != 0
    assert "failed to reproduce 'train'" in output
    assert exit_status(output) in SIGNAL_STATUSES[signal_number]
    if signal_number != signal.SIGKILL:
        assert f"train: stopped by {signal_number.name} after " in output
        assert "Traceback" not in output
    assert md5(cache_file(baseline, previous_model)) == previous_model
    # The README's way back: the committed params and small results from git, the rest from
    # DVC's cache, byte for byte.
    git("checkout", "--", "params.yaml", *RESULTS, cwd=baseline)
    dvc("checkout", cwd=baseline)
    assert digests(baseline, *RESULTS) == before
    assert "Data and pipelines are up to date" in dvc("status", cwd=baseline).stdout


# --- 6. the cache -------------------------------------------------------------------------


def cached_objects(repository: Path) -> list[Path]:
    """Every file object in the repository's DVC cache (directory listings left out)."""
    return [
        path
        for path in (repository / ".dvc/cache/files/md5").rglob("*")
        if path.is_file() and not path.name.endswith(".dir")
    ]


@pytest.mark.slow
def test_writing_to_a_tracked_file_cannot_change_the_cache(baseline: Path) -> None:
    # As root a read-only link is no protection: only a copy keeps the cache apart.
    tracked = baseline / "data/split/train.npz"
    with tracked.open("ab") as file:
        file.write(b"x\n")

    for cached in cached_objects(baseline):
        assert md5(cached) == cached.parent.name + cached.name, cached
    changes = json.loads(dvc("status", "--json", cwd=baseline).stdout)
    assert {"changed outs": {"data/split": "modified"}} in changes["split"]
    dvc("checkout", "--force", "data/split", cwd=baseline)
    assert md5(tracked) == cached_file(baseline, "data/split/train.npz").parent.name + (
        cached_file(baseline, "data/split/train.npz").name
    )
