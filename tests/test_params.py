"""Tests of the params.yaml schema: the real file loads, and every mutation fails by name."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from dvc.utils.serialize import parse_yaml
from pydantic import ValidationError

from fmnist.errors import ParamsError
from fmnist.params import Params, load_params, parse_params, read_yaml, read_yaml_file
from tools.dvc_cli import get_dotted, set_dotted

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
REPOSITORY_PARAMS = REPOSITORY_ROOT / "params.yaml"
DOCUMENT = read_yaml(REPOSITORY_PARAMS.read_text(encoding="utf-8"))
DELETE = object()  # marks a key that a mutation removes


def mutate(changes: dict[str, object]) -> dict:
    """A deep copy of the repository's params with dotted keys set to values or deleted."""
    document = copy.deepcopy(DOCUMENT)
    for dotted_key, value in changes.items():
        if value is DELETE:
            parent, _, key = dotted_key.rpartition(".")
            del (get_dotted(document, parent) if parent else document)[key]
        else:
            set_dotted(document, dotted_key, value)
    return document


def write_params(directory: Path, document: object) -> Path:
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def test_repository_params_load_unchanged() -> None:
    params = load_params(REPOSITORY_PARAMS)

    assert isinstance(params, Params)
    assert params.model_dump() == DOCUMENT


MUTATIONS = [
    pytest.param(
        {"sede": 42},
        [("sede", "unknown key (allowed: seed, fetch, split, train, report)")],
        id="unknown-top-level-key",
    ),
    pytest.param(
        {"fetch.attempts": DELETE, "fetch.atempts": 3},
        [
            ("fetch.atempts", "unknown key (allowed: sources, timeout, attempts)"),
            ("fetch.attempts", "missing"),
        ],
        id="misspelt-fetch-key",
    ),
    pytest.param(
        {"split.val_size": DELETE, "split.val_fraction": 0.2},
        [
            ("split.val_fraction", "unknown key (allowed: method, test_size, val_size)"),
            ("split.val_size", "missing"),
        ],
        id="misspelt-split-key",
    ),
    pytest.param(
        {"train.hidden_units": DELETE, "train.hiden_units": [64]},
        [
            (
                "train.hiden_units",
                "unknown key (allowed: model, hidden_units, activation, dropout, batch_norm, "
                "l2, cnn, optimizer, learning_rate, momentum, nesterov, weight_decay, "
                "schedule, warmup_epochs, decay_every, decay_factor, label_smoothing, "
                "early_stopping, augment, batch_size, epochs, precision)",
            ),
            ("train.hidden_units", "missing"),
        ],
        id="misspelt-train-key",
    ),
    pytest.param(
        {"report.misclassified": DELETE, "report.misclasified": 25},
        [
            ("report.misclasified", "unknown key (allowed: misclassified)"),
            ("report.misclassified", "missing"),
        ],
        id="misspelt-report-key",
    ),
    pytest.param(
        {"train.epochs": "15"},
        [("train.epochs", "'15': must be a valid integer")],
        id="string-for-int",
    ),
    pytest.param(
        {"report.misclassified": "25"},
        [("report.misclassified", "'25': must be a valid integer")],
        id="string-for-int-in-report",
    ),
    pytest.param(
        {"train.batch_size": True},
        [("train.batch_size", "True: must be a valid integer")],
        id="bool-for-int",
    ),
    pytest.param({"seed": False}, [("seed", "False: must be a valid integer")], id="bool-for-seed"),
    pytest.param(
        {"train.epochs": 15.0},
        [("train.epochs", "15.0: must be a valid integer")],
        id="float-for-int",
    ),
    pytest.param(
        {"fetch.attempts": 2.5},
        [("fetch.attempts", "2.5: must be a valid integer")],
        id="float-for-attempts",
    ),
    pytest.param(
        {"train.hidden_units": 128},
        [("train.hidden_units", "128: must be a valid list")],
        id="int-for-list",
    ),
    pytest.param(
        {"fetch.sources": "/usr/share/datasets/fashion-mnist"},
        [("fetch.sources", "'/usr/share/datasets/fashion-mnist': must be a valid list")],
        id="string-for-list",
    ),
    pytest.param(
        {"train.hidden_units": []},
        [("train.hidden_units", "[]: must have at least 1 item, not 0")],
        id="empty-hidden-units",
    ),
    pytest.param(
        {"train.hidden_units": [256, 0]},
        [("train.hidden_units.1", "0: must be greater than 0")],
        id="zero-hidden-unit",
    ),
    pytest.param(
        {"fetch.sources": []},
        [("fetch.sources", "[]: must have at least 1 item, not 0")],
        id="no-sources",
    ),
    pytest.param(
        {"train.batch_size": 0},
        [("train.batch_size", "0: must be greater than 0")],
        id="zero-batch",
    ),
    pytest.param(
        {"train.epochs": -1}, [("train.epochs", "-1: must be greater than 0")], id="negative-epochs"
    ),
    pytest.param(
        {"train.learning_rate": 0.0},
        [("train.learning_rate", "0.0: must be greater than 0")],
        id="zero-learning-rate",
    ),
    pytest.param(
        {"train.learning_rate": -0.001},
        [("train.learning_rate", "-0.001: must be greater than 0")],
        id="negative-learning-rate",
    ),
    pytest.param(
        {"fetch.timeout": 0}, [("fetch.timeout", "0: must be greater than 0")], id="zero-timeout"
    ),
    pytest.param(
        {"fetch.attempts": 0}, [("fetch.attempts", "0: must be greater than 0")], id="zero-attempts"
    ),
    pytest.param(
        {"seed": -1}, [("seed", "-1: must be greater than or equal to 0")], id="negative-seed"
    ),
    pytest.param(
        {"report.misclassified": 0},
        [("report.misclassified", "0: must be greater than or equal to 1")],
        id="no-misclassified",
    ),
    pytest.param(
        {"report.misclassified": 101},
        [("report.misclassified", "101: must be less than or equal to 100")],
        id="too-many-misclassified",
    ),
    pytest.param(
        {"split.test_size": 0.0},
        [("split.test_size", "0.0: must be greater than 0")],
        id="test-size-zero",
    ),
    pytest.param(
        {"split.test_size": 1.0},
        [("split.test_size", "1.0: must be less than 1")],
        id="test-size-one",
    ),
    pytest.param(
        {"split.test_size": -0.2},
        [("split.test_size", "-0.2: must be greater than 0")],
        id="test-size-negative",
    ),
    pytest.param(
        {"split.val_size": 0.0},
        [("split.val_size", "0.0: must be greater than 0")],
        id="val-size-zero",
    ),
    pytest.param(
        {"split.val_size": 1.5},
        [("split.val_size", "1.5: must be less than 1")],
        id="val-size-above-one",
    ),
    pytest.param(
        {"train.dropout": 1.0}, [("train.dropout", "1.0: must be less than 1")], id="dropout-one"
    ),
    pytest.param(
        {"train.dropout": -0.1},
        [("train.dropout", "-0.1: must be greater than or equal to 0")],
        id="dropout-negative",
    ),
    pytest.param(
        {"train.optimizer": "adagrad"},
        [("train.optimizer", "'adagrad' is not one of sgd, adam, adamw, rmsprop")],
        id="unknown-optimizer",
    ),
    pytest.param(
        {"train.model": "mlp"},
        [("train.model", "'mlp' is not one of dense, cnn")],
        id="unknown-model",
    ),
    pytest.param(
        {"train.schedule": "linear"},
        [("train.schedule", "'linear' is not one of constant, cosine, step")],
        id="unknown-schedule",
    ),
    pytest.param(
        {"train.cnn.filters": []},
        [("train.cnn.filters", "[]: must have at least 1 item, not 0")],
        id="no-conv-blocks",
    ),
    pytest.param(
        {"train.cnn.padding": "full"},
        [("train.cnn.padding", "'full' is not one of valid, same")],
        id="unknown-padding",
    ),
    pytest.param(
        {"train.cnn.kernel_size": 0},
        [("train.cnn.kernel_size", "0: must be greater than 0")],
        id="zero-kernel",
    ),
    pytest.param(
        {"train.cnn.kernel": 3},
        [
            (
                "train.cnn.kernel",
                "unknown key (allowed: filters, kernel_size, padding, pool_size, dense_units)",
            )
        ],
        id="misspelt-cnn-key",
    ),
    pytest.param(
        {"train.momentum": 1.0},
        [("train.momentum", "1.0: must be less than 1")],
        id="momentum-one",
    ),
    pytest.param(
        {"train.nesterov": "yes"},
        [("train.nesterov", "'yes': must be a valid boolean")],
        id="nesterov-not-bool",
    ),
    pytest.param(
        {"train.decay_factor": 1.0},
        [("train.decay_factor", "1.0: must be less than 1")],
        id="decay-factor-one",
    ),
    pytest.param(
        {"train.label_smoothing": -0.1},
        [("train.label_smoothing", "-0.1: must be greater than or equal to 0")],
        id="negative-label-smoothing",
    ),
    pytest.param(
        {"train.l2": -1e-4},
        [("train.l2", "-0.0001: must be greater than or equal to 0")],
        id="negative-l2",
    ),
    pytest.param(
        {"train.early_stopping.patience": -1},
        [("train.early_stopping.patience", "-1: must be greater than or equal to 0")],
        id="negative-patience",
    ),
    pytest.param(
        {"train.augment.shift": 0.5},
        [("train.augment.shift", "0.5: must be less than 0.5")],
        id="shift-half-the-image",
    ),
    pytest.param(
        {"train.augment.flip": 1},
        [("train.augment.flip", "1: must be a valid boolean")],
        id="flip-not-bool",
    ),
    pytest.param(
        {"split.method": "random"},
        [("split.method", "'random' is not one of official, resplit")],
        id="unknown-split-method",
    ),
    pytest.param(
        {"train.activation": "ReLU"},
        [("train.activation", "'ReLU' is not one of relu, sigmoid, tanh, elu, gelu")],
        id="activation-in-capitals",
    ),
    pytest.param({"train.epochs": DELETE}, [("train.epochs", "missing")], id="missing-key"),
    pytest.param({"report": DELETE}, [("report", "missing")], id="missing-section"),
]


@pytest.mark.parametrize(("changes", "expected_problems"), MUTATIONS)
def test_load_params_names_the_key_and_what_is_allowed(
    tmp_path: Path, changes: dict[str, object], expected_problems: list[tuple[str, str]]
) -> None:
    """Each problem is one line: the file, the dotted key, then the value and what is allowed."""
    path = write_params(tmp_path, mutate(changes))

    with pytest.raises(ParamsError) as caught:
        load_params(path)

    lines = str(caught.value).splitlines()
    assert len(lines) == len(expected_problems)
    for key, message in expected_problems:
        prefix = f"{path}: {key}: "
        assert any(line.startswith(prefix) and line.endswith(message) for line in lines), lines


def test_misspelt_activation_gives_the_exact_message(tmp_path: Path) -> None:
    path = write_params(tmp_path, mutate({"train.activation": "sigmod"}))

    with pytest.raises(ParamsError) as caught:
        load_params(path)

    assert str(caught.value) == (
        f"{path}: train.activation: 'sigmod' is not one of relu, sigmoid, tanh, elu, gelu"
    )


def test_parse_params_reports_every_problem_on_its_own_line() -> None:
    document = mutate({"seed": "42", "train.optimizer": "adagrad", "split.val_size": 2})

    with pytest.raises(ParamsError) as caught:
        parse_params(document, "custom.yaml")

    assert str(caught.value).splitlines() == [
        "custom.yaml: seed: '42': must be a valid integer",
        "custom.yaml: split.val_size: 2: must be less than 1",
        "custom.yaml: train.optimizer: 'adagrad' is not one of sgd, adam, adamw, rmsprop",
    ]


@pytest.mark.parametrize("document", [None, [1, 2], "seed: 42"], ids=["empty", "list", "string"])
def test_parse_params_rejects_a_document_that_is_not_a_mapping(document: object) -> None:
    with pytest.raises(ParamsError, match=r"^params\.yaml: \(top level\): .*valid dictionary"):
        parse_params(document)


def test_load_params_rejects_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    with pytest.raises(ParamsError) as caught:
        load_params(path)

    assert str(caught.value) == f"{path}: not found (run from the repository root)"


def test_load_params_rejects_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("seed: 42\ntrain: [unclosed\n", encoding="utf-8")

    with pytest.raises(ParamsError) as caught:
        load_params(path)

    # One line, with the place where the parser gave up.
    assert str(caught.value) == (
        f"{path}:3:1: not valid YAML: expected ',' or ']', but got '<stream end>'"
    )


@pytest.mark.parametrize("kind", ["directory", "not-utf-8"])
def test_load_params_rejects_unreadable_files(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "params.yaml"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"seed: \xff\xfe\n")

    with pytest.raises(ParamsError, match=re.escape(str(path))):
        load_params(path)


def test_infinite_learning_rate_is_rejected() -> None:
    with pytest.raises(ParamsError, match=r"train\.learning_rate"):
        parse_params(mutate({"train.learning_rate": float("inf")}))


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        (None, "seed", 1),
        ("fetch", "attempts", 1),
        ("split", "method", "resplit"),
        ("train", "epochs", 1),
        ("report", "misclassified", 1),
    ],
)
def test_loaded_params_are_frozen(section: str | None, key: str, value: object) -> None:
    params = load_params(REPOSITORY_PARAMS)
    target = params if section is None else getattr(params, section)
    before = getattr(target, key)

    with pytest.raises(ValidationError, match="Instance is frozen"):
        setattr(target, key, value)

    assert getattr(target, key) == before


@pytest.mark.parametrize(
    ("line", "key", "expected"),
    [
        ("learning_rate: 1e-3", "learning_rate", 0.001),  # YAML 1.1 would read a string
        ("epochs: 010", "epochs", 10),  # YAML 1.1 would read octal 8
        ("batch_size: 0o20", "batch_size", 16),
    ],
)
def test_values_are_read_as_dvc_reads_them(
    tmp_path: Path, line: str, key: str, expected: object
) -> None:
    text = REPOSITORY_PARAMS.read_text(encoding="utf-8")
    text = re.sub(rf"^  {key}: .*$", f"  {line}", text, count=1, flags=re.MULTILINE)
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")

    value = getattr(load_params(path).train, key)

    dvc_value = parse_yaml(text, str(path))["train"][key]
    assert value == dvc_value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("nesterov: yes", "nesterov"),  # a boolean only in YAML 1.1
        ("epochs: 1:30", "epochs"),  # a base-60 integer only in YAML 1.1
        ("dropout: 5e-1x", "dropout"),
    ],
)
def test_spellings_that_yaml_versions_read_differently_are_refused_by_key(
    tmp_path: Path, line: str, key: str
) -> None:
    text = REPOSITORY_PARAMS.read_text(encoding="utf-8")
    text = re.sub(rf"^  {key}: .*$", f"  {line}", text, count=1, flags=re.MULTILINE)
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(ParamsError, match=rf"train\.{key}: '") as error:
        load_params(path)

    assert len(str(error.value).splitlines()) == 1


# --- upper bounds: a typo (an extra zero, 1e9) is refused before it costs memory or time ----

SEVENTEEN_SOURCES = [f"/srv/mirror-{number}" for number in range(17)]
BOUNDS = [
    pytest.param(
        "seed", 2**32, "seed: 4294967296: must be less than or equal to 4294967295", id="seed"
    ),
    pytest.param(
        "fetch.timeout",
        10_000_000_000,
        "fetch.timeout: 10000000000: must be less than or equal to 3600",
        id="timeout",
    ),
    pytest.param(
        "fetch.attempts", 40, "fetch.attempts: 40: must be less than or equal to 10", id="attempts"
    ),
    pytest.param(
        "fetch.sources",
        SEVENTEEN_SOURCES,
        f"fetch.sources: {repr(SEVENTEEN_SOURCES)[:200]}... (17 items): must have at most 16 "
        "items, not 17",
        id="sources",
    ),
    pytest.param(
        "train.hidden_units",
        [10_000_000],
        "train.hidden_units.0: 10000000: must be less than or equal to 8192",
        id="hidden-unit-width",
    ),
    pytest.param(
        "train.hidden_units",
        [16] * 9,
        "train.hidden_units: [16, 16, 16, 16, 16, 16, 16, 16, 16]: must have at most 8 items, "
        "not 9",
        id="hidden-layers",
    ),
    pytest.param(
        "train.hidden_units",
        [8192] * 8,
        "train.hidden_units: the network has 476,332,042 weights; at most 100,000,000: "
        "use fewer or narrower layers",
        id="dense-weights",
    ),
    pytest.param(
        "train.epochs",
        1_000_000_000,
        "train.epochs: 1000000000: must be less than or equal to 1000",
        id="epochs",
    ),
    pytest.param(
        "train.batch_size",
        100_000_000_000,
        "train.batch_size: 100000000000: must be less than or equal to 70000",
        id="batch-size",
    ),
    pytest.param(
        "train.early_stopping.patience",
        1001,
        "train.early_stopping.patience: 1001: must be less than or equal to 1000",
        id="patience",
    ),
    pytest.param(
        "train.decay_every",
        1001,
        "train.decay_every: 1001: must be less than or equal to 1000",
        id="decay-every",
    ),
    pytest.param("train.l2", 2.0, "train.l2: 2.0: must be less than or equal to 1", id="l2"),
    pytest.param(
        "train.weight_decay",
        10.0,
        "train.weight_decay: 10.0: must be less than or equal to 1",
        id="weight-decay",
    ),
    pytest.param(
        "train.cnn.filters",
        [2048],
        "train.cnn.filters.0: 2048: must be less than or equal to 1024",
        id="filters",
    ),
    pytest.param(
        "train.cnn.filters",
        [8] * 7,
        "train.cnn.filters: [8, 8, 8, 8, 8, 8, 8]: must have at most 6 items, not 7",
        id="conv-blocks",
    ),
    pytest.param(
        "train.cnn.kernel_size",
        29,
        "train.cnn.kernel_size: 29: must be less than or equal to 28",
        id="kernel-size",
    ),
    pytest.param(
        "train.cnn.pool_size",
        100,
        "train.cnn.pool_size: 100: must be less than or equal to 28",
        id="pool-size",
    ),
    pytest.param(
        "train.cnn.dense_units",
        10_000,
        "train.cnn.dense_units: 10000: must be less than or equal to 8192",
        id="dense-units",
    ),
    pytest.param(
        "train.cnn",
        {
            "filters": [1024],
            "kernel_size": 3,
            "padding": "same",
            "pool_size": 1,
            "dense_units": 8192,
        },
        "train.cnn: the network has 6,576,769,034 weights, 6,576,758,794 of them from the "
        "802,816 values of the last block into dense_units 8192; at most 100,000,000: use "
        "fewer filters, fewer dense_units or more pooling",
        id="cnn-weights",
    ),
]


@pytest.mark.parametrize(("key", "value", "expected"), BOUNDS)
def test_every_size_count_and_duration_has_an_upper_bound(
    tmp_path: Path, key: str, value: object, expected: str
) -> None:
    path = write_params(tmp_path, mutate({key: value}))

    with pytest.raises(ParamsError) as caught:
        load_params(path)

    assert str(caught.value) == f"{path}: {expected}"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("seed", 2**32 - 1),
        ("fetch.timeout", 3600),
        ("fetch.attempts", 10),
        ("train.hidden_units", [8192, 8192]),
        ("train.epochs", 1000),
        ("train.batch_size", 70_000),
        ("train.cnn.filters", [1024, 1024]),
    ],
)
def test_the_bounds_themselves_are_allowed(key: str, value: object) -> None:
    params = parse_params(mutate({key: value}))

    assert params.model_dump() == mutate({key: value})


def test_a_source_longer_than_any_path_is_refused() -> None:
    source = "/" + "a" * 4096

    with pytest.raises(ParamsError) as caught:
        parse_params(mutate({"fetch.sources": [source]}))

    assert str(caught.value) == (
        f"params.yaml: fetch.sources.0: '{source[:199]}... (4,097 characters): "
        "must have at most 4096 characters"
    )


def test_a_huge_learning_rate_is_left_to_the_divergence_check() -> None:
    # A rate costs no memory or time; training stops in epoch 1 with an error naming the key.
    assert parse_params(mutate({"train.learning_rate": 1e30})).train.learning_rate == 1e30


# --- the CNN's geometry, checked against 28x28 images before TensorFlow is imported --------


def cnn(**changes: object) -> dict[str, object]:
    return {f"train.cnn.{key}": value for key, value in changes.items()}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param(
            cnn(filters=[32], kernel_size=28, padding="valid", pool_size=2),
            "block 1 of 1 does not fit the 28x28 images: kernel_size 28 (padding valid) then "
            "pool_size 2 need 29x29 feature maps and 28x28 reach it; fits with the rest "
            "unchanged: padding same, kernel_size 27 or pool_size 1",
            id="kernel-as-large-as-the-image",
        ),
        pytest.param(
            cnn(filters=[32], kernel_size=3, padding="valid", pool_size=28),
            "block 1 of 1 does not fit the 28x28 images: kernel_size 3 (padding valid) then "
            "pool_size 28 need 30x30 feature maps and 28x28 reach it; fits with the rest "
            "unchanged: padding same, kernel_size 1 or pool_size 26",
            id="pool-as-large-as-the-image",
        ),
        pytest.param(
            cnn(filters=[8, 16, 32, 64], kernel_size=3, padding="valid", pool_size=2),
            "block 4 of 4 does not fit the 28x28 images: kernel_size 3 (padding valid) then "
            "pool_size 2 need 4x4 feature maps and 1x1 reach it; fits with the rest "
            "unchanged: 3 blocks, padding same, kernel_size 1 or pool_size 1",
            id="four-valid-blocks",
        ),
        pytest.param(
            cnn(filters=[8] * 5, kernel_size=3, padding="same", pool_size=2),
            "block 5 of 5 does not fit the 28x28 images: kernel_size 3 (padding same) then "
            "pool_size 2 need 2x2 feature maps and 1x1 reach it; fits with the rest "
            "unchanged: 4 blocks or pool_size 1",
            id="five-same-blocks",
        ),
    ],
)
def test_a_cnn_that_does_not_fit_the_images_is_one_line_saying_what_fits(
    changes: dict[str, object], expected: str
) -> None:
    with pytest.raises(ParamsError) as caught:
        parse_params(mutate(changes))

    assert str(caught.value) == f"params.yaml: train.cnn: {expected}"


def test_the_cnn_geometry_is_checked_for_a_dense_run_too() -> None:
    document = mutate({"train.model": "dense", **cnn(kernel_size=28, pool_size=2)})

    with pytest.raises(ParamsError, match=r"^params\.yaml: train\.cnn: block 1 of 1 "):
        parse_params(document)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param(cnn(filters=[32, 64, 128], padding="same", pool_size=2), id="three-same"),
        pytest.param(cnn(filters=[8] * 4, padding="same", pool_size=2), id="down-to-1x1"),
        pytest.param(cnn(filters=[8] * 3, padding="valid", pool_size=2), id="three-valid"),
        pytest.param(cnn(kernel_size=27, padding="valid", pool_size=2), id="kernel-27-valid"),
        pytest.param(cnn(kernel_size=28, padding="valid", pool_size=1), id="kernel-28-no-pool"),
        pytest.param(cnn(kernel_size=28, padding="same", pool_size=28), id="pool-28-same"),
        pytest.param(cnn(filters=[8] * 6, padding="same", pool_size=1), id="six-unpooled"),
    ],
)
def test_a_cnn_that_fits_the_images_is_accepted(changes: dict[str, object]) -> None:
    parse_params(mutate({"train.model": "cnn", **changes}))


def test_the_best_cnn_of_the_experiments_is_accepted() -> None:
    experiments = read_yaml_file(REPOSITORY_ROOT / "experiments.yaml")

    params = parse_params(mutate(experiments["experiments"]["cnn-best"]["params"]))

    assert (params.train.model, params.train.cnn.filters) == ("cnn", [32, 64])


# --- the YAML itself: aliases, nesting and size, refused before the document is built ------


def billion_laughs(levels: int, width: int = 10) -> str:
    """The repository's params.yaml with a seed that expands to ``width ** levels`` values."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    text = REPOSITORY_PARAMS.read_text(encoding="utf-8")
    text = re.sub(r"^seed: .*$", f"seed: *l{levels - 1}", text, count=1, flags=re.MULTILINE)
    return "\n".join(lines) + "\n" + text


def test_an_alias_bomb_is_refused_at_once_in_one_short_line(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(billion_laughs(levels=9), encoding="utf-8")  # 10**9 values from 3 KB

    started = time.perf_counter()
    with pytest.raises(ParamsError) as caught:
        load_params(path)
    elapsed = time.perf_counter() - started

    assert elapsed < 1
    message = str(caught.value)
    assert (
        message
        == f"{path}:2: YAML aliases (*l0) are not allowed in params.yaml: write the value out"
    )
    assert len(message) < 300


@pytest.mark.parametrize(
    ("original", "replacement"),
    [
        ("    dense_units: 128\n", "    dense_units: *width\n"),
        ("  early_stopping:\n", "  early_stopping:\n    <<: *stopping\n"),
    ],
    ids=["alias", "merge-key"],
)
def test_a_single_alias_is_refused_with_its_line(
    tmp_path: Path, original: str, replacement: str
) -> None:
    text = REPOSITORY_PARAMS.read_text(encoding="utf-8")
    text = text.replace("  - 512\n", "  - &width 512\n", 1)
    text = text.replace("report:\n", "report: &stopping\n", 1).replace(original, replacement, 1)
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    name = replacement.split("*")[1].strip()
    line = next(number for number, row in enumerate(text.splitlines(), 1) if f"*{name}" in row)

    with pytest.raises(ParamsError) as caught:
        load_params(path)

    assert str(caught.value) == (
        f"{path}:{line}: YAML aliases (*{name}) are not allowed in params.yaml: write the value out"
    )


def test_an_anchor_without_an_alias_is_harmless_and_loads(tmp_path: Path) -> None:
    text = REPOSITORY_PARAMS.read_text(encoding="utf-8").replace("  - 512\n", "  - &width 512\n")
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")

    assert load_params(path).train.hidden_units == [512, 256]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "[" * 500 + "]" * 500,
            "values nested more than 16 levels deep; params.yaml's deepest, "
            "train.cnn.filters, is 4",
        ),
        ("1" * 5000, "a value of 5,000 characters; at most 4,096, as for a path"),
    ],
    ids=["nested-500-deep", "5000-digits"],
)
def test_values_the_yaml_reader_cannot_build_are_refused_by_line(
    tmp_path: Path, value: str, expected: str
) -> None:
    # Unchecked, these end in a RecursionError and in Python's 4,300-digit ValueError.
    text = REPOSITORY_PARAMS.read_text(encoding="utf-8")
    text = re.sub(r"^seed: .*$", lambda _: f"seed: {value}", text, count=1, flags=re.MULTILINE)
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    line = text.splitlines().index(f"seed: {value}") + 1

    with pytest.raises(ParamsError) as caught:
        load_params(path)

    assert str(caught.value) == f"{path}:{line}: {expected}"


def test_a_file_far_larger_than_any_params_file_is_refused_unparsed(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    padding = "# " + "x" * 98 + "\n"
    path.write_text(REPOSITORY_PARAMS.read_text(encoding="utf-8") + padding * 700)

    with pytest.raises(ParamsError) as caught:
        load_params(path)

    assert str(caught.value) == (
        f"{path}: more than 65,536 characters; params.yaml holds a few KB of settings "
        "(is this the right file?)"
    )


# --- error messages stay short whatever the value ------------------------------------------


def test_a_long_value_is_shown_cut_with_its_size(tmp_path: Path) -> None:
    path = write_params(tmp_path, mutate({"train.activation": "relu" * 1000}))

    with pytest.raises(ParamsError) as caught:
        load_params(path)

    message = str(caught.value)
    assert message == (
        f"{path}: train.activation: '{('relu' * 50)[:199]}... (4,000 characters) is not one of "
        "relu, sigmoid, tanh, elu, gelu"
    )
    assert len(message) - len(str(path)) < 300


def test_a_value_that_would_print_as_gigabytes_is_shown_cut_at_once() -> None:
    bomb: object = "lol"
    for _ in range(10):
        bomb = [bomb] * 10  # 10**10 strings, sharing one list per level

    started = time.perf_counter()
    with pytest.raises(ParamsError) as caught:
        parse_params(mutate({"seed": bomb}))
    elapsed = time.perf_counter() - started

    assert elapsed < 1
    [line] = str(caught.value).splitlines()
    assert line.startswith("params.yaml: seed: [[[[[[[[[['lol', 'lol', ")
    assert line.endswith("... (10 items): must be a valid integer")
    assert len(line) < 300


def test_many_problems_are_cut_to_twenty_lines_and_a_count() -> None:
    document = mutate({f"unknown_{number}": number for number in range(30)})

    with pytest.raises(ParamsError) as caught:
        parse_params(document)

    lines = str(caught.value).splitlines()
    assert len(lines) == 21
    assert lines[0].startswith("params.yaml: unknown_0: unknown key")
    assert lines[-1] == "params.yaml: and 10 more problems"


# --- end to end: the train stage refuses a bad geometry before importing TensorFlow ---------


def test_train_stage_refuses_a_bad_cnn_in_one_line_without_tensorflow(tmp_path: Path) -> None:
    write_params(tmp_path, mutate({"train.model": "cnn", **cnn(kernel_size=28, pool_size=2)}))
    # The stage as DVC runs it, in a child that reports whether TensorFlow was imported.
    code = (
        "import runpy, sys\n"
        "try:\n"
        "    runpy.run_module('stages.train', run_name='__main__')\n"
        "except SystemExit as stop:\n"
        "    print(stop.code, 'tensorflow' in sys.modules)\n"
    )
    arguments = ["--data", "data/split", "--model", "models/model.keras", "--live", "live"]
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY_ROOT)}

    result = subprocess.run(
        [sys.executable, "-c", code, *arguments],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.stdout == "1 False\n"
    assert result.stderr.splitlines() == [
        "train: error: params.yaml: train.cnn: block 1 of 1 does not fit the 28x28 images: "
        "kernel_size 28 (padding valid) then pool_size 2 need 29x29 feature maps and 28x28 "
        "reach it; fits with the rest unchanged: padding same, kernel_size 27 or pool_size 1"
    ]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["params.yaml"]


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"train.precision": "float16"}, "'float16' is not one of float32, bfloat16"),
        ({"train.warmup_epochs": -1}, "train.warmup_epochs: -1"),
        (
            {"train.warmup_epochs": 30, "train.epochs": 30},
            "warmup_epochs 30 leaves no epoch of the 30 to decay in",
        ),
    ],
)
def test_precision_and_warmup_are_checked(changes: dict, fragment: str) -> None:
    with pytest.raises(ParamsError, match=re.escape(fragment)):
        parse_params(mutate(changes))
