"""The IDX format of the MNIST family: a 4-byte magic, big-endian dimensions, a uint8 payload.
Only unsigned-byte images of fmnist.dataset.IMAGE_SHAPE and labels are accepted (DataError)."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from fmnist.dataset import IMAGE_SHAPE, NUM_CLASSES
from fmnist.errors import DataError

UNSIGNED_BYTE = 0x08
MAX_DIMENSIONS = 4  # the MNIST family uses 1 (labels) and 3 (images)
GZIP_MAGIC = b"\x1f\x8b"


def decompress(data: bytes, name: str) -> bytes:
    """Return ``data`` gunzipped if it is a gzip stream, else unchanged."""
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as error:
        raise DataError(f"{name}: corrupt or truncated gzip data ({error})") from None


def decode_idx(data: bytes, name: str) -> np.ndarray:
    """Parse IDX bytes into a uint8 array; the payload must match the header exactly."""
    if len(data) < 4:
        raise DataError(f"{name}: {len(data)} bytes is too short for an IDX header")
    zero1, zero2, data_type, ndim = struct.unpack(">BBBB", data[:4])
    if zero1 != 0 or zero2 != 0:
        raise DataError(f"{name}: bad magic number 0x{data[:4].hex()} (not an IDX file)")
    if data_type != UNSIGNED_BYTE:
        raise DataError(f"{name}: data type 0x{data_type:02x} is not unsigned byte (0x08)")
    if not 1 <= ndim <= MAX_DIMENSIONS:
        raise DataError(f"{name}: IDX header declares {ndim} dimensions, expected 1 to 4")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"{name}: truncated header ({len(data)} of {header_size} bytes)")
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    expected = math.prod(shape)  # Python integers: a hostile header cannot overflow it
    actual = len(data) - header_size
    if actual < expected:
        raise DataError(
            f"{name}: truncated: header {shape} needs {expected:,} bytes of data, found {actual:,}"
        )
    if actual > expected:
        raise DataError(
            f"{name}: {actual - expected:,} trailing bytes after the {expected:,} that "
            f"header {shape} declares"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file, gzipped or not."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error.strerror}") from None
    if not data:
        raise DataError(f"{path}: file is empty")
    return decode_idx(decompress(data, str(path)), str(path))


def read_images(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX image file: an ``(n, *IMAGE_SHAPE)`` uint8 array."""
    images = read_idx(path)
    if images.shape[1:] != IMAGE_SHAPE:
        raise DataError(
            f"{path}: expected images of shape (n, {', '.join(map(str, IMAGE_SHAPE))}), found "
            f"{images.shape}"
        )
    return images


def read_labels(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX label file: an ``(n,)`` uint8 array of class indices."""
    labels = read_idx(path)
    if labels.ndim != 1:
        raise DataError(f"{path}: expected one dimension of labels, found shape {labels.shape}")
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DataError(f"{path}: label {int(labels.max())} is outside 0-{NUM_CLASSES - 1}")
    return labels


def read_split(images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str]):
    """Read a matching pair of image and label files; their counts must agree and not be 0.

    An empty file is valid IDX but no split: a summary of nothing has no mean,
    and every later stage needs images.
    """
    images, labels = read_images(images_path), read_labels(labels_path)
    if len(images) == 0:
        raise DataError(f"{images_path}: holds no images; the data set file is damaged")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images):,} images but {labels_path} holds "
            f"{len(labels):,} labels"
        )
    return images, labels
