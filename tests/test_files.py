"""Tests of the atomic writers: a failed write never leaves a partial or temporary file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from fmnist.errors import PipelineError
from fmnist.files import (
    atomic_directory,
    atomic_path,
    empty_directory,
    write_arrays,
    write_bytes,
    write_json,
    write_text,
)


def names(directory: Path) -> list[str]:
    return sorted(entry.name for entry in directory.iterdir())


def test_write_json_writes_indented_json_with_a_newline(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"

    write_json(path, {"accuracy": 0.9, "classes": ["Bag", "Coat"]})

    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n")
    assert text.startswith('{\n  "accuracy": 0.9,')
    assert json.loads(text) == {"accuracy": 0.9, "classes": ["Bag", "Coat"]}
    assert path.stat().st_mode & 0o777 == 0o644
    assert names(tmp_path) == ["metrics.json"]


def test_write_text_replaces_an_existing_file_and_creates_parents(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "deep" / "report.md"
    write_text(path, "first")

    write_text(path, "second → third")

    assert path.read_text(encoding="utf-8") == "second → third"
    assert names(path.parent) == ["report.md"]


def test_write_bytes_and_write_arrays_round_trip(tmp_path: Path) -> None:
    write_bytes(tmp_path / "raw.bin", b"\x00\xff")
    write_arrays(tmp_path / "split.npz", images=np.arange(3, dtype=np.uint8))

    assert (tmp_path / "raw.bin").read_bytes() == b"\x00\xff"
    with np.load(tmp_path / "split.npz") as arrays:
        np.testing.assert_array_equal(arrays["images"], np.arange(3, dtype=np.uint8))
    assert names(tmp_path) == ["raw.bin", "split.npz"]


def test_atomic_path_yields_a_hidden_marked_sibling_with_the_same_suffix(tmp_path: Path) -> None:
    path = tmp_path / "model.keras"

    with atomic_path(path) as temporary:
        assert temporary.parent == tmp_path
        assert re.fullmatch(r"\.model\.keras\.[a-z0-9_]+\.partial\.keras", temporary.name)
        assert not path.exists()
        temporary.write_bytes(b"weights")

    assert path.read_bytes() == b"weights"
    assert names(tmp_path) == ["model.keras"]


def test_an_error_inside_atomic_path_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    write_json(path, {"accuracy": 0.5})

    with pytest.raises(RuntimeError, match="killed halfway"), atomic_path(path) as temporary:
        temporary.write_text('{"accuracy": 0.', encoding="utf-8")
        raise RuntimeError("killed halfway")

    assert json.loads(path.read_text(encoding="utf-8")) == {"accuracy": 0.5}
    assert names(tmp_path) == ["metrics.json"]


def test_write_json_of_unserialisable_data_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    write_json(path, {"accuracy": 0.5})

    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json(path, {"accuracy": object()})

    assert json.loads(path.read_text(encoding="utf-8")) == {"accuracy": 0.5}
    assert names(tmp_path) == ["metrics.json"]


def test_atomic_directory_replaces_the_old_directory_on_success(tmp_path: Path) -> None:
    target = tmp_path / "figures"
    target.mkdir()
    (target / "old.png").write_bytes(b"old")

    with atomic_directory(target) as staging:
        assert staging.parent == tmp_path
        assert staging != target
        (staging / "new.png").write_bytes(b"new")
        assert names(target) == ["old.png"]  # nothing changes until the block succeeds

    assert names(target) == ["new.png"]
    assert names(tmp_path) == ["figures"]


def test_atomic_directory_creates_a_missing_directory(tmp_path: Path) -> None:
    target = tmp_path / "plots" / "report"

    with atomic_directory(target) as staging:
        (staging / "curves.png").write_bytes(b"png")

    assert names(target) == ["curves.png"]
    assert names(target.parent) == ["report"]


def test_an_error_inside_atomic_directory_keeps_the_old_directory(tmp_path: Path) -> None:
    target = tmp_path / "figures"
    target.mkdir()
    (target / "old.png").write_bytes(b"old")

    with pytest.raises(RuntimeError, match="plot failed"), atomic_directory(target) as staging:
        (staging / "new.png").write_bytes(b"half")
        raise RuntimeError("plot failed")

    assert names(target) == ["old.png"]
    assert (target / "old.png").read_bytes() == b"old"
    assert names(tmp_path) == ["figures"]


@pytest.mark.parametrize(
    "relative", ["file/x.json", "file/nested/x.json"], ids=["under-a-file", "nested-under-a-file"]
)
def test_writing_under_a_regular_file_raises_pipeline_error(tmp_path: Path, relative: str) -> None:
    (tmp_path / "file").write_text("not a directory", encoding="utf-8")
    path = tmp_path / relative

    with pytest.raises(PipelineError, match=re.escape(str(path.parent))):
        write_json(path, {"accuracy": 0.9})

    assert (tmp_path / "file").read_text(encoding="utf-8") == "not a directory"
    assert names(tmp_path) == ["file"]


def test_atomic_directory_under_a_regular_file_raises_pipeline_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory", encoding="utf-8")

    with (
        pytest.raises(PipelineError, match=re.escape(str(tmp_path / "file"))),
        atomic_directory(tmp_path / "file" / "figures"),
    ):
        pytest.fail("the block must not run")


def test_writing_over_a_directory_raises_pipeline_error(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.mkdir()

    with pytest.raises(PipelineError, match=re.escape(str(path))):
        write_json(path, {"accuracy": 0.9})


def test_atomic_directory_stages_in_a_hidden_marked_sibling(tmp_path: Path) -> None:
    with atomic_directory(tmp_path / "training") as staging:
        assert re.fullmatch(r"\.training\.[a-z0-9_]+\.partial", staging.name)


def test_an_interrupt_inside_either_writer_leaves_no_temporary_file(tmp_path: Path) -> None:
    write_json(tmp_path / "metrics.json", {"accuracy": 0.5})

    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "metrics.json") as temporary:
        temporary.write_text("{", encoding="utf-8")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt), atomic_directory(tmp_path / "plots") as staging:
        (staging / "loss.tsv").write_text("step\tloss\n", encoding="utf-8")
        raise KeyboardInterrupt

    assert names(tmp_path) == ["metrics.json"]


def test_empty_directory_starts_an_output_directory_from_nothing(tmp_path: Path) -> None:
    target = tmp_path / "data" / "split"
    target.mkdir(parents=True)
    (target / "stale.npz").write_bytes(b"from an earlier run")

    assert empty_directory(target) == target
    assert names(target) == []
    assert empty_directory(tmp_path / "new" / "out").is_dir()


def test_empty_directory_under_a_regular_file_raises_pipeline_error(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file", encoding="utf-8")

    with pytest.raises(PipelineError, match="is not a directory"):
        empty_directory(tmp_path / "data" / "split")
