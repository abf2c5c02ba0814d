"""A fork for another data set edits fmnist/dataset.py and fetch.sources, nothing else
(docs/your-own-data.md): the whole pipeline then runs on colour images of another size and
number of classes, and the model classifies a picture."""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import dvc, encode_idx, run
from tools.workspace import make_template

pytestmark = pytest.mark.slow

CLASS_NAMES = ("red", "green", "blue", "grey")
IMAGE_SIZE = (12, 10)
FILES = {
    "train": ("train-images-idx4-ubyte", "train-labels-idx1-ubyte"),
    "test": ("test-images-idx4-ubyte", "test-labels-idx1-ubyte"),
}


def colour_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """Noisy RGB images whose class is their dominant colour channel (grey: all three)."""
    generator = np.random.default_rng(seed)
    images = generator.integers(0, 60, (len(labels), *IMAGE_SIZE, 3), dtype=np.uint8)
    for index, label in enumerate(labels):
        channels = [0, 1, 2] if label == 3 else [label]
        images[index, 2:10, 2:8, channels] = 220
    return images


def write_source(directory: Path) -> dict[str, tuple[int, str]]:
    directory.mkdir()
    checksums = {}
    for seed, (split, names) in enumerate(FILES.items()):
        labels = np.repeat(
            np.arange(len(CLASS_NAMES), dtype=np.uint8), 30 if split == "train" else 8
        )
        for name, array in zip(names, (colour_images(labels, seed), labels), strict=True):
            payload = encode_idx(array)
            (directory / f"{name}.gz").write_bytes(gzip.compress(payload, mtime=0))
            checksums[name] = (len(payload), hashlib.sha256(payload).hexdigest())
    return checksums


def test_another_data_set_runs_through_the_whole_pipeline(tmp_path: Path) -> None:
    source = tmp_path / "source"
    checksums = write_source(source)
    repository = make_template(
        tmp_path / "fork",
        {
            "fetch.sources": [str(source)],
            "train.hidden_units": [16],
            "train.epochs": 3,
            "train.batch_size": 16,
            "report.misclassified": 4,
        },
        NAME="Synthetic colours",
        CLASS_NAMES=CLASS_NAMES,
        WATCHED_PAIRS=(("red", "grey"),),
        IMAGE_SIZE=IMAGE_SIZE,
        CHANNELS=3,
        RAW_FILES=FILES,
        CHECKSUMS=checksums,
    )

    dvc("repro", cwd=repository)

    classes = json.loads((repository / "plots/classes.json").read_text())
    assert [row["class"] for row in classes] == list(CLASS_NAMES)
    accuracy = json.loads((repository / "metrics/evaluate.json").read_text())["accuracy"]
    assert accuracy > 0.5  # chance is 0.25
    assert "| grey |" in (repository / "reports/report.md").read_text()
    picture = np.zeros((40, 30, 3), dtype=np.uint8)
    picture[5:35, 5:25, 2] = 230  # a blue square
    Image.fromarray(picture).save(repository / "blue.png")
    predicted = run(
        [sys.executable, "-m", "fmnist.predict", "--json", "blue.png"], repository
    ).stdout
    (result,) = json.loads(predicted)
    assert result["class"] in CLASS_NAMES
    assert {"image", "class", "probability"} <= result.keys()
