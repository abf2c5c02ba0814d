"""Tests of the split logic, split files and summaries on small synthetic arrays."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from fmnist.data import (
    Split,
    class_counts,
    load_split,
    save_split,
    split_data,
    split_indices,
    summarize,
)
from fmnist.dataset import CLASS_NAMES, NUM_CLASSES
from fmnist.errors import DataError
from fmnist.params import SplitParams


def make_split(per_class: int, first_identifier: int = 0) -> Split:
    """``per_class`` images of each class; pixel (0, 0)-(0, 1) hold a unique identifier."""
    labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.uint8), per_class)
    identifiers = np.arange(first_identifier, first_identifier + len(labels))
    images = np.zeros((len(labels), 28, 28), dtype=np.uint8)
    images[:, 0, 0], images[:, 0, 1] = identifiers // 256, identifiers % 256
    images[:, 1, 0] = labels  # lets a test check that images and labels stay paired
    return Split(images, labels)


def identifiers(split: Split) -> set[int]:
    return set((split.images[:, 0, 0].astype(int) * 256 + split.images[:, 0, 1]).tolist())


def assert_paired(split: Split) -> None:
    np.testing.assert_array_equal(split.images[:, 1, 0], split.labels)


UNEVEN_LABELS = np.repeat(np.arange(NUM_CLASSES), [5, 10, 15, 20, 25, 30, 35, 40, 45, 50])


def test_split_indices_sizes_cover_every_index_once() -> None:
    labels = make_split(20).labels

    kept, held_out = split_indices(labels, 0.25, seed=0)

    assert (len(kept), len(held_out)) == (150, 50)
    assert set(kept.tolist()).isdisjoint(held_out.tolist())
    np.testing.assert_array_equal(np.sort(np.concatenate([kept, held_out])), np.arange(200))
    assert np.all(np.diff(kept) > 0)
    assert np.all(np.diff(held_out) > 0)


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.35])
def test_split_indices_preserves_class_proportions(fraction: float) -> None:
    _, held_out = split_indices(UNEVEN_LABELS, fraction, seed=3)

    held_out_counts = np.bincount(UNEVEN_LABELS[held_out], minlength=NUM_CLASSES)
    class_totals = np.bincount(UNEVEN_LABELS, minlength=NUM_CLASSES)
    assert np.all(np.abs(held_out_counts - fraction * class_totals) <= 1), held_out_counts
    assert len(held_out) == math.ceil(fraction * len(UNEVEN_LABELS))


def test_split_indices_is_determined_by_the_seed() -> None:
    first_kept, first_held_out = split_indices(UNEVEN_LABELS, 0.2, seed=11)
    again_kept, again_held_out = split_indices(UNEVEN_LABELS, 0.2, seed=11)
    _, other_held_out = split_indices(UNEVEN_LABELS, 0.2, seed=12)

    np.testing.assert_array_equal(first_kept, again_kept)
    np.testing.assert_array_equal(first_held_out, again_held_out)
    assert not np.array_equal(first_held_out, other_held_out)
    assert len(other_held_out) == len(first_held_out)


def test_split_indices_rejects_a_class_too_small_to_stratify() -> None:
    labels = np.array([0, 0, 0, 0, 1], dtype=np.uint8)

    with pytest.raises(DataError, match="cannot split 5 examples stratified"):
        split_indices(labels, 0.4, seed=0)


def test_split_data_official_keeps_test_and_carves_validation_out_of_train() -> None:
    train, test = make_split(20), make_split(5, first_identifier=1000)
    params = SplitParams(method="official", test_size=0.5, val_size=0.25)

    splits = split_data(train, test, params, seed=0)

    assert {name: len(split.labels) for name, split in splits.items()} == {
        "train": 150,
        "val": 50,
        "test": 50,
    }
    np.testing.assert_array_equal(splits["test"].images, test.images)
    np.testing.assert_array_equal(splits["test"].labels, test.labels)
    assert identifiers(splits["train"]) | identifiers(splits["val"]) == identifiers(train)
    assert identifiers(splits["train"]).isdisjoint(identifiers(splits["val"]))
    assert np.all(np.bincount(splits["val"].labels, minlength=NUM_CLASSES) == 5)
    for split in splits.values():
        assert_paired(split)


def test_split_data_resplit_pools_then_holds_out_test_and_validation() -> None:
    train, test = make_split(20), make_split(5, first_identifier=1000)
    params = SplitParams(method="resplit", test_size=0.2, val_size=0.25)

    splits = split_data(train, test, params, seed=0)

    # 250 pooled: 20% (50) to test, then 25% of the remaining 200 (50) to validation.
    assert {name: len(split.labels) for name, split in splits.items()} == {
        "train": 150,
        "val": 50,
        "test": 50,
    }
    pooled = identifiers(train) | identifiers(test)
    parts = [identifiers(splits[name]) for name in ("train", "val", "test")]
    assert set().union(*parts) == pooled
    assert sum(len(part) for part in parts) == len(pooled)
    assert not identifiers(splits["test"]) <= identifiers(test)
    assert np.all(np.bincount(splits["test"].labels, minlength=NUM_CLASSES) == 5)
    for split in splits.values():
        assert_paired(split)


def test_split_data_is_determined_by_the_seed() -> None:
    train, test = make_split(20), make_split(5, first_identifier=1000)
    params = SplitParams(method="resplit", test_size=0.2, val_size=0.25)

    first = split_data(train, test, params, seed=5)
    again = split_data(train, test, params, seed=5)
    other = split_data(train, test, params, seed=6)

    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(first[name].images, again[name].images)
    assert identifiers(first["test"]) != identifiers(other["test"])


def test_save_split_then_load_split_round_trips(tmp_path: Path) -> None:
    split = make_split(3)
    path = tmp_path / "train.npz"

    save_split(path, split)
    loaded = load_split(path)

    assert loaded.images.dtype == np.uint8
    assert loaded.labels.dtype == np.uint8
    np.testing.assert_array_equal(loaded.images, split.images)
    np.testing.assert_array_equal(loaded.labels, split.labels)
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["train.npz"]


def test_load_split_rejects_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.npz"

    with pytest.raises(DataError) as caught:
        load_split(path)

    assert str(caught.value) == f"{path}: not found (run the stage that writes it: dvc repro)"


def test_load_split_rejects_a_file_that_is_not_npz(tmp_path: Path) -> None:
    path = tmp_path / "train.npz"
    path.write_text("images,labels\n", encoding="utf-8")

    with pytest.raises(DataError) as caught:
        load_split(path)

    assert str(caught.value).startswith(f"{path}: not a valid split file (")


def test_load_split_rejects_a_truncated_npz(tmp_path: Path) -> None:
    path = tmp_path / "train.npz"
    save_split(path, make_split(3))
    path.write_bytes(path.read_bytes()[:200])

    with pytest.raises(DataError, match="not a valid split file"):
        load_split(path)


def test_load_split_rejects_an_npz_without_labels(tmp_path: Path) -> None:
    path = tmp_path / "train.npz"
    np.savez(path, images=make_split(1).images)

    with pytest.raises(DataError, match="labels is not a file in the archive"):
        load_split(path)


@pytest.mark.parametrize(
    ("images", "labels", "found"),
    [
        (
            np.zeros((2, 28, 28), np.float32),
            np.zeros(2, np.uint8),
            "float32 (2, 28, 28) and uint8 (2,)",
        ),
        (
            np.zeros((2, 27, 28), np.uint8),
            np.zeros(2, np.uint8),
            "uint8 (2, 27, 28) and uint8 (2,)",
        ),
        (
            np.zeros((2, 28, 28), np.uint8),
            np.zeros(3, np.uint8),
            "uint8 (2, 28, 28) and uint8 (3,)",
        ),
        (np.zeros((2, 784), np.uint8), np.zeros(2, np.uint8), "uint8 (2, 784) and uint8 (2,)"),
    ],
    ids=["float-images", "27x28-images", "label-count", "flat-images"],
)
def test_load_split_rejects_wrong_dtypes_and_shapes(
    tmp_path: Path, images: np.ndarray, labels: np.ndarray, found: str
) -> None:
    path = tmp_path / "train.npz"
    np.savez(path, images=images, labels=labels)

    with pytest.raises(DataError) as caught:
        load_split(path)

    assert str(caught.value) == (
        f"{path}: expected uint8 images (n, 28, 28) and n uint8 labels, found {found}"
    )


def test_load_split_rejects_labels_that_are_not_uint8(tmp_path: Path) -> None:
    path = tmp_path / "train.npz"
    np.savez(path, images=np.zeros((2, 28, 28), np.uint8), labels=np.array([0.5, 1.5]))

    with pytest.raises(DataError, match="labels"):
        load_split(path)


def test_load_split_rejects_a_npy_file(tmp_path: Path) -> None:
    path = tmp_path / "train.npy"
    np.save(path, np.zeros((2, 28, 28), np.uint8))

    with pytest.raises(DataError, match="not a split file"):
        load_split(path)


def test_class_counts_names_every_class_in_order() -> None:
    counts = class_counts(np.array([0, 0, 3, 9, 0], dtype=np.uint8))

    assert list(counts) == list(CLASS_NAMES)
    assert counts == {
        "T-shirt/top": 3,
        "Trouser": 0,
        "Pullover": 0,
        "Dress": 1,
        "Coat": 0,
        "Sandal": 0,
        "Shirt": 0,
        "Sneaker": 0,
        "Bag": 0,
        "Ankle boot": 1,
    }


def test_summarize_reports_size_pixel_statistics_and_counts() -> None:
    images = np.stack([np.zeros((28, 28)), np.full((28, 28), 255), np.full((28, 28), 255)])
    split = Split(images.astype(np.uint8), np.array([7, 7, 1], dtype=np.uint8))

    summary = summarize(split)

    # Pixels: one third 0, two thirds 255 -> mean 170, std sqrt(2/3 * 255**2 - 170**2).
    assert summary["images"] == 3
    assert summary["pixel_mean"] == 170.0
    assert summary["pixel_std"] == round(math.sqrt(14450), 3) == 120.208
    assert summary["class_counts"]["Sneaker"] == 2
    assert summary["class_counts"]["Trouser"] == 1
    assert sum(summary["class_counts"].values()) == 3
