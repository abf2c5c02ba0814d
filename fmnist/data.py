"""Data set arrays on disk, their summaries, and the train/validation/test split."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fmnist.dataset import CLASS_NAMES, IMAGE_SHAPE
from fmnist.errors import DataError
from fmnist.files import write_arrays
from fmnist.params import SplitParams

# Pixels counted per bincount call: bounds its int64 working copy to 8 MB, whatever the split size.
HISTOGRAM_CHUNK = 1 << 20


class Split(NamedTuple):
    """Images ``(n, *IMAGE_SHAPE)`` and labels ``(n,)``, both uint8, in matching order."""

    images: np.ndarray
    labels: np.ndarray


def save_split(path: str | os.PathLike[str], split: Split) -> None:
    """Write a split as an uncompressed ``.npz`` (uint8 keeps the DVC cache small)."""
    write_arrays(path, images=split.images, labels=split.labels)


def load_split(path: str | os.PathLike[str]) -> Split:
    """Read a split written by ``save_split``, checking that it is what the pipeline wrote."""
    path = Path(path)
    try:
        arrays = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: not found (run the stage that writes it: dvc repro)") from None
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a valid split file ({error})") from None
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: not a split file (.npz with images and labels)")
    with arrays:
        try:
            images, labels = arrays["images"], arrays["labels"]
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as error:
            raise DataError(f"{path}: not a valid split file ({error})") from None
    if (
        images.dtype != np.uint8
        or labels.dtype != np.uint8
        or images.shape[1:] != IMAGE_SHAPE
        or labels.shape != (len(images),)
    ):
        raise DataError(
            f"{path}: expected uint8 images (n, {', '.join(map(str, IMAGE_SHAPE))}) and n uint8 "
            "labels, found "
            f"{images.dtype} {images.shape} and {labels.dtype} {labels.shape}"
        )
    return Split(images, labels)


def class_counts(labels: np.ndarray) -> dict[str, int]:
    """Number of examples of each class, by class name."""
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    return {name: int(count) for name, count in zip(CLASS_NAMES, counts, strict=True)}


def pixel_histogram(images: np.ndarray) -> np.ndarray:
    """How many pixels take each value 0-255, counted without a wider copy of ``images``."""
    pixels = images.reshape(-1)
    counts = np.zeros(256, dtype=np.int64)
    for start in range(0, pixels.size, HISTOGRAM_CHUNK):
        counts += np.bincount(pixels[start : start + HISTOGRAM_CHUNK], minlength=256)
    return counts


def summarize(split: Split) -> dict:
    """Size, pixel statistics (0-255 scale) and class counts of a split.

    The statistics come from the 256-bin histogram: the same values as from the pixels
    themselves, without a float copy of every pixel (188 MB for the training images).
    """
    counts = pixel_histogram(split.images)
    values = np.arange(256, dtype=np.float64)
    total = counts.sum()
    mean = (counts @ values) / total
    std = np.sqrt((counts @ (values - mean) ** 2) / total)
    return {
        "images": len(split.labels),
        "pixel_mean": round(float(mean), 3),
        "pixel_std": round(float(std), 3),
        "class_counts": class_counts(split.labels),
    }


def split_indices(
    labels: np.ndarray, holdout_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of ``range(len(labels))`` into (kept, held out) sorted index arrays."""
    # Imported here, not at the top: scikit-learn takes a second to import and only the split
    # stage needs it; preprocess and report import this module too.
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    try:
        kept, held_out = train_test_split(
            indices, test_size=holdout_fraction, random_state=seed, stratify=labels
        )
    except ValueError as error:
        raise DataError(f"cannot split {len(labels):,} examples stratified: {error}") from None
    return np.sort(kept), np.sort(held_out)


def _take(split: Split, indices: np.ndarray) -> Split:
    return Split(split.images[indices], split.labels[indices])


def split_data(train: Split, test: Split, params: SplitParams, seed: int) -> dict[str, Split]:
    """Make the train, validation and test splits that the params describe.

    ``official`` keeps the published test set and carves validation out of train;
    ``resplit`` pools all images, holds out ``test_size`` of them, then ``val_size`` of the rest.
    Every split is stratified by class and fully determined by ``seed``.
    """
    if params.method == "resplit":
        pooled = Split(
            np.concatenate([train.images, test.images]), np.concatenate([train.labels, test.labels])
        )
        kept, held_out = split_indices(pooled.labels, params.test_size, seed)
        train, test = _take(pooled, kept), _take(pooled, held_out)
    kept, held_out = split_indices(train.labels, params.val_size, seed)
    return {"train": _take(train, kept), "val": _take(train, held_out), "test": test}
