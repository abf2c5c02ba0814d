"""Tests of the params.yaml schema: the real file loads, and every mutation fails by name."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from dvc.utils.serialize import parse_yaml
from pydantic import ValidationError

from fmnist.errors import ParamsError
from fmnist.params import Params, load_params, parse_params, read_yaml

REPOSITORY_PARAMS = Path(__file__).resolve().parent.parent / "params.yaml"
DOCUMENT = read_yaml(REPOSITORY_PARAMS.read_text(encoding="utf-8"))
DELETE = object()  # marks a key that a mutation removes


def mutate(changes: dict[str, object]) -> dict:
    """A deep copy of the repository's params with dotted keys set to values or deleted."""
    document = copy.deepcopy(DOCUMENT)
    for dotted_key, value in changes.items():
        *parents, key = dotted_key.split(".")
        section = document
        for parent in parents:
            section = section[parent]
        if value is DELETE:
            del section[key]
        else:
            section[key] = value
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
                "schedule, decay_every, decay_factor, label_smoothing, early_stopping, "
                "augment, batch_size, epochs)",
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

    assert str(caught.value).startswith(f"{path}: not valid YAML: ")


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
