"""Shared fixtures: a small synthetic Fashion-MNIST look-alike and the repository's paths."""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from fmnist.dataset import IMAGE_SHAPE, NUM_CLASSES, RAW_FILES
from fmnist.params import TrainParams, load_params
from tests.helpers import STAGES, dvc, encode_idx, git, make_pipeline_repository, stages_run
from tools.workspace import REPOSITORY_ROOT


def debian_data() -> Path:
    """Debian's copy of Fashion-MNIST (dataset-fashion-mnist): skip the calling test where it is
    missing, fail it under CI, which must run the real-data tests.
    """
    directory = Path("/usr/share/datasets/fashion-mnist")
    if not directory.is_dir():
        message = f"{directory} is missing: sudo apt-get install dataset-fashion-mnist"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return directory


def make_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """Noisy images in which each class lights up its own band of rows: learnable in 1 epoch."""
    generator = np.random.default_rng(seed)
    images = generator.integers(0, 60, (len(labels), *IMAGE_SHAPE), dtype=np.uint8)
    for index, label in enumerate(labels):
        top = 2 + 2 * int(label)
        images[index, top : top + 3, 4:24] = generator.integers(180, 256, (3, 20), dtype=np.uint8)
    return images


def write_synthetic_source(
    directory: Path, train_per_class: int = 40, test_per_class: int = 10
) -> dict[str, tuple[int, str]]:
    """Write the four IDX files, gzipped, to ``directory``; return their size and SHA-256 by
    name, as fmnist.dataset.CHECKSUMS holds them."""
    directory.mkdir(parents=True, exist_ok=True)
    sha256 = {}
    counts = {"train": train_per_class, "test": test_per_class}
    for seed, (split, (images_name, labels_name)) in enumerate(RAW_FILES.items()):
        labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.uint8), counts[split])
        labels = np.random.default_rng(seed).permutation(labels)
        for name, array in ((images_name, make_images(labels, seed)), (labels_name, labels)):
            payload = encode_idx(array)
            (directory / f"{name}.gz").write_bytes(gzip.compress(payload, mtime=0))
            sha256[name] = (len(payload), hashlib.sha256(payload).hexdigest())
    return sha256


@pytest.fixture(scope="session")
def synthetic_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A directory of small synthetic IDX files and their checksums, shared by the session."""
    directory = tmp_path_factory.mktemp("synthetic-fashion-mnist")
    return directory, write_synthetic_source(directory)


def make_train_params(**overrides: object) -> TrainParams:
    """The repository's ``train`` params with ``overrides``, validated like params.yaml.

    Nested sections (``cnn``, ``early_stopping``, ``augment``) take a dict of the keys to change.
    """
    values = load_params(REPOSITORY_ROOT / "params.yaml").train.model_dump()
    for key, value in overrides.items():
        if isinstance(value, dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return TrainParams.model_validate(values)


@pytest.fixture(scope="session")
def baseline_repository(
    tmp_path_factory: pytest.TempPathFactory, synthetic_source: tuple[Path, dict]
) -> Path:
    """A pipeline repository on synthetic data with its first `dvc repro` committed on main.

    Built once for the run, by whichever parallel worker asks first while the others wait, and
    shared: tests copy it (tests.helpers.copy_workspace) rather than change it.
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # this run's own
    root = shared / "baseline"
    with open(shared / "baseline.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "baseline.built").exists():
            source, sha256 = synthetic_source
            root.mkdir()
            make_pipeline_repository(root, source, sha256)
            first = dvc("repro", cwd=root)
            assert stages_run(first.stdout) == set(STAGES)
            git("add", "-A", cwd=root)
            git("commit", "-q", "-m", "baseline run", cwd=root)
            (shared / "baseline.built").touch()
    return root


# The longest end-to-end tests first, so that parallel workers do not wait on one at the end;
# `make test` gives each worker whole files (`--dist loadfile`), so a module's fixtures are made
# once. The second needs no baseline: its worker works while the first builds it.
LONGEST_FIRST = (
    "test_docs.py",
    "test_your_own_data.py",
    "test_sharing.py",
    "test_first_hour.py",
    "test_study.py",
    "test_experiments.py",
    "test_pipeline.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file keeps its own order
