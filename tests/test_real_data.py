"""The real Fashion-MNIST files from Debian's dataset-fashion-mnist package.

Skipped where the package is missing, except in CI (CI=true), where a skip would hide that
the real data was never checked.
"""

from __future__ import annotations

import numpy as np
import pytest

from fmnist.data import Split, split_data
from fmnist.dataset import CLASS_NAMES, RAW_FILES
from fmnist.fetch import fetch_dataset
from fmnist.idx import read_split
from fmnist.params import load_params
from tests.conftest import REPOSITORY_ROOT, debian_data, make_train_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_splits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Split]:
    debian = debian_data()
    params = load_params(REPOSITORY_ROOT / "params.yaml")
    raw = tmp_path_factory.mktemp("raw")
    fetch_dataset([str(debian)], raw, timeout=1, attempts=1)
    train, test = (
        Split(*read_split(raw / images, raw / labels)) for images, labels in RAW_FILES.values()
    )
    return split_data(train, test, params.split, params.seed)


def test_official_split_sizes_and_balance(real_splits: dict[str, Split]) -> None:
    sizes = {name: len(split.labels) for name, split in real_splits.items()}
    assert sizes == {"train": 48_000, "val": 12_000, "test": 10_000}
    for name, split in real_splits.items():
        counts = np.bincount(split.labels, minlength=len(CLASS_NAMES))
        assert counts.min() == counts.max() == sizes[name] // len(CLASS_NAMES), name


def test_short_training_scores_well_above_chance(real_splits: dict[str, Split]) -> None:
    from fmnist.model import predict_probabilities, seed_everything, train_model

    params = make_train_params(
        model="dense", hidden_units=[64], dropout=0.0, optimizer="adam", batch_size=256, epochs=1
    )
    seed_everything(42)
    model, history = train_model(params, real_splits["train"], real_splits["val"])
    test = real_splits["test"]
    accuracy = float((predict_probabilities(model, test.images).argmax(1) == test.labels).mean())
    print(f"real data, one epoch: test accuracy {accuracy:.4f}")
    assert accuracy > 0.75, accuracy  # chance is 0.10
    assert history["val_accuracy"][-1] > 0.75
