"""What the speed work relies on: light imports, no float copies, and unchanged results."""

from __future__ import annotations

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from fmnist import model as model_module
from fmnist.data import Split, pixel_histogram, summarize
from fmnist.model import seed_everything, train_model
from tests.conftest import REPOSITORY_ROOT, make_train_params


def imported_modules(code: str) -> set[str]:
    """The modules that a fresh interpreter has loaded after running ``code``."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_stages_without_a_model_import_neither_tensorflow_nor_scikit_learn() -> None:
    # Seconds of start-up each: only train and evaluate need TensorFlow, split imports
    # scikit-learn when it splits.
    modules = imported_modules(
        "import stages.fetch, stages.preprocess, stages.split, stages.report"
    )
    heavy = {"tensorflow", "keras", "tf_keras", "sklearn"}
    assert sorted(name for name in modules if name.split(".")[0] in heavy) == []


def test_summary_statistics_match_those_of_the_pixels_as_floats(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("fmnist.data.HISTOGRAM_CHUNK", 1000)  # many chunks, a partial last one
    generator = np.random.default_rng(0)
    images = generator.integers(0, 256, (37, 28, 28), dtype=np.uint8)
    split = Split(images, np.zeros(37, dtype=np.uint8))

    counts = pixel_histogram(images)
    summary = summarize(split)

    assert counts.sum() == images.size
    assert np.array_equal(counts, np.bincount(images.ravel(), minlength=256))
    pixels = images.astype(np.float64)
    assert summary["pixel_mean"] == round(float(pixels.mean()), 3)
    assert summary["pixel_std"] == round(float(pixels.std()), 3)


def test_steps_per_execution_leaves_the_trained_weights_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many batches per call into TensorFlow is a speed-up only: the same batches, the same
    order, the same weights as Keras's default of one batch per call.
    """
    generator = np.random.default_rng(1)
    train = Split(
        generator.integers(0, 256, (300, 28, 28), dtype=np.uint8),
        (np.arange(300) % 10).astype(np.uint8),
    )
    val = Split(train.images[:50], train.labels[:50])
    # 10 batches an epoch: an execution of 4 batches, then 4, then the last 2.
    params = make_train_params(hidden_units=[16], dropout=0.5, batch_size=30, epochs=2)

    weights = {}
    for steps in (1, 4):
        monkeypatch.setattr(model_module, "STEPS_PER_EXECUTION", steps)
        seed_everything(7)
        model, history = train_model(params, train, val)
        weights[steps] = (model.get_weights(), history)
        keras.backend.clear_session()

    (weights_one, history_one), (weights_many, history_many) = weights[1], weights[4]
    assert history_one == history_many
    for one, many in zip(weights_one, weights_many, strict=True):
        assert np.array_equal(one, many)
