"""Hostile inputs between the stages: each failure is one line, exit 1, and changes no output.

Damaged inputs (a model with a flipped byte, truncated metrics, a JSON value that is not a
number, an empty data set), a full disk, an output replaced by a link out of the repository,
and a DVC cache that fills up. The fetch stage's bounds and the params' bounds have tests of
their own (test_fetch.py, test_params.py).
"""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fmnist.dataset import RAW_FILES
from fmnist.errors import PipelineError
from fmnist.files import write_json
from tests.conftest import REPOSITORY_ROOT
from tests.helpers import copy_workspace, digests, dvc, encode_idx, make, run, stage_command
from tools.workspace import command_environment


@pytest.fixture
def repository(tmp_path: Path, baseline_repository: Path) -> Path:
    return copy_workspace(baseline_repository, tmp_path / "repository")


def run_stage_command(
    repository: Path, stage: str, file_size_limit: int | None = None
) -> subprocess.CompletedProcess:
    """Run a stage's command from dvc.yaml in ``repository``, as DVC would."""

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run(
        stage_command(repository, stage),
        cwd=repository,
        env=command_environment(),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit_file_size if file_size_limit else None,
    )


def assert_one_line_failure(result: subprocess.CompletedProcess, *fragments: str) -> None:
    errors = [line for line in result.stderr.splitlines() if ": error:" in line]
    assert result.returncode == 1, result.stderr[-2000:]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert len(errors[0]) < 500
    for fragment in fragments:
        assert fragment in errors[0]


# --- every failure is one line ------------------------------------------------------------


def run_python(code: str, **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPOSITORY_ROOT,
        env=command_environment(environment),
        capture_output=True,
        text=True,
        timeout=60,
    )


UNEXPECTED = """
    from fmnist.cli import run_stage

    def main():
        raise KeyError("x" * 100_000)

    run_stage("demo", main)
"""


def test_an_unexpected_error_is_one_short_line_unless_debugging_asks_for_more() -> None:
    quiet = run_python(UNEXPECTED)
    debugging = run_python(UNEXPECTED, FMNIST_DEBUG="1")

    assert quiet.returncode == 1
    assert quiet.stderr.count("\n") == 1
    assert quiet.stderr.startswith("demo: error: KeyError: 'xxx")
    assert "(100,002 characters) (set FMNIST_DEBUG=1 to see where)" in quiet.stderr
    assert len(quiet.stderr) < 400
    assert "Traceback" in debugging.stderr


@pytest.mark.slow
def test_a_model_with_a_flipped_byte_fails_evaluate_and_changes_nothing(
    repository: Path,
) -> None:
    model = repository / "models/model.keras"
    damaged = bytearray(model.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    model.write_bytes(bytes(damaged))
    before = digests(repository)

    result = run_stage_command(repository, "evaluate")

    assert_one_line_failure(result, "models/model.keras: not a loadable Keras model")
    assert digests(repository) == before


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "content", "fragment"),
    [
        ("plots/classes.json", '[{"class": "T-shirt/top", "prec', "not readable JSON"),
        ("metrics/evaluate.json", '{"accuracy": 0.9}', "cannot write the report from"),
        ("metrics/train/metrics.json", '{"kept_epoch": 99}', "kept_epoch 99 is not an epoch"),
        (
            "plots/predictions.csv",
            "index,actual,predicted,probability\n0,Bag,Bag,0.9\n",
            "predictions for",
        ),
    ],
)
def test_a_damaged_input_fails_the_report_before_any_figure_is_written(
    repository: Path, path: str, content: str, fragment: str
) -> None:
    (repository / path).write_text(content)
    before = digests(repository)

    result = run_stage_command(repository, "report")

    assert_one_line_failure(result, fragment)
    assert digests(repository) == before


@pytest.mark.slow
def test_a_file_size_limit_while_writing_is_one_line_and_leaves_the_output(
    repository: Path,
) -> None:
    before = digests(repository)

    result = run_stage_command(repository, "evaluate", file_size_limit=1024)

    assert_one_line_failure(result, "cannot write plots/predictions.csv: File too large")
    assert digests(repository) == before
    assert not [path for path in (repository / "plots").iterdir() if ".partial" in path.name]


# --- no writing through a link out of the repository --------------------------------------


@pytest.mark.slow
def test_an_output_directory_linked_out_of_the_repository_is_refused(
    repository: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "curves.png").write_bytes(b"someone else's file")
    figures = repository / "plots/report"
    for figure in figures.iterdir():
        figure.unlink()
    figures.rmdir()
    figures.symlink_to(elsewhere, target_is_directory=True)

    result = run_stage_command(repository, "report")

    assert_one_line_failure(result, "plots/report is a symbolic link to", "outside the repository")
    assert sorted(path.name for path in elsewhere.iterdir()) == ["curves.png"]
    assert (elsewhere / "curves.png").read_bytes() == b"someone else's file"


def test_a_link_inside_the_repository_is_followed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    (tmp_path / "plots").symlink_to(tmp_path / "results", target_is_directory=True)

    write_json("plots/scores.json", {"f1": 0.9})

    assert (tmp_path / "results/scores.json").read_text() == '{\n  "f1": 0.9\n}\n'


# --- no NaN in JSON; no empty data set ------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_json_outputs_never_hold_nan_or_infinity(tmp_path: Path, value: float) -> None:
    path = tmp_path / "summary.json"

    with pytest.raises(PipelineError, match=r"summary.json: train.mean.1: (nan|inf|-inf) is not"):
        write_json(path, {"train": {"count": 3, "mean": [0.5, value]}})

    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_an_empty_data_set_is_refused_by_preprocess(repository: Path) -> None:
    raw = repository / "data/raw"
    images_name, labels_name = RAW_FILES["test"]
    (raw / images_name).write_bytes(encode_idx(np.zeros((0, 28, 28), dtype=np.uint8)))
    (raw / labels_name).write_bytes(encode_idx(np.zeros(0, dtype=np.uint8)))
    before = digests(repository)

    result = run_stage_command(repository, "preprocess")

    assert_one_line_failure(result, f"{images_name}: holds no images")
    assert digests(repository) == before


# --- make repro fails when DVC could not store an output ------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 100 KB file system to hold a DVC cache; skipped where mounting one is not allowed."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=100k", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


@pytest.mark.slow
def test_make_repro_fails_when_the_cache_disk_is_full(repository: Path, small_disk: Path) -> None:
    dvc("cache", "dir", "--local", str(small_disk / "cache"), cwd=repository)
    # The synthetic training images alone do not fit on the small disk.
    assert (repository / "data/raw/train-images-idx3-ubyte").stat().st_size > 100 * 1024

    plain = dvc("repro", "--force", "fetch", cwd=repository, check=False)
    guarded = run(
        [sys.executable, "-m", "tools.repro", "repro", "--force", "fetch"], repository, False
    )

    assert plain.returncode == 0 and "failed to transfer" in plain.stderr  # DVC's own exit 0
    assert guarded.returncode == 1
    assert "could not store" in guarded.stderr
    assert "`dvc commit -f`" in guarded.stderr


# --- make's arguments ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "variable"), [("exp", "NAME"), ("predict", "IMAGES"), ("review", "BASE")]
)
def test_make_arguments_are_never_run_by_make_or_the_shell(
    tmp_path: Path, target: str, variable: str
) -> None:
    marker = tmp_path / "ran"
    injected = f"$(shell touch {marker}) $$(touch {marker}) `touch {marker}`; touch {marker}"

    result = make(target, REPOSITORY_ROOT, check=False, **{variable: injected})

    assert result.returncode == 2  # the command refused the value, and make says so
    assert not marker.exists()
    # Taken literally, as the error quotes it; predict names each word as a file not found, or
    # the model where none has been trained.
    if target == "predict":
        assert "predict: error: $(shell: not found" in result.stderr or (
            "models/model.keras: not found" in result.stderr
        )
    else:
        assert injected in result.stderr
