"""Tests of the params.yaml schema: the real file loads, and every bad value fails by name."""

from __future__ import annotations

import copy
import functools
import logging
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from dvc.utils.serialize import parse_yaml
from pydantic import ValidationError

from fmnist import params as schema
from fmnist.errors import ParamsError, PipelineError
from fmnist.params import (
    compute_precision,
    describe_memory,
    load_params,
    parse_params,
    read_yaml,
    read_yaml_file,
    training_memory,
)
from tests.conftest import make_train_params

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
REPOSITORY_PARAMS = REPOSITORY_ROOT / "params.yaml"
TEXT = REPOSITORY_PARAMS.read_text(encoding="utf-8")
DOCUMENT = read_yaml(TEXT)
DELETE = object()  # marks a key that a change removes
ACTIVATIONS = "Input should be 'relu', 'sigmoid', 'tanh', 'elu' or 'gelu'"
DID_YOU_MEAN = "unknown key (did you mean 'activation'?)"


def mutate(changes: dict[str, object]) -> dict:
    """The repository's params with dotted keys (``train.cnn.filters``) set or deleted."""
    document = copy.deepcopy(DOCUMENT)
    for dotted, value in changes.items():
        *sections, key = dotted.split(".")
        section = functools.reduce(dict.__getitem__, sections, document)
        section[key] = value
        if value is DELETE:
            del section[key]
    return document


def problems(changes: dict[str, object]) -> list[str]:
    """The lines of the ParamsError that parse_params raises for the changed params."""
    with pytest.raises(ParamsError) as caught:
        parse_params(mutate(changes))
    return str(caught.value).splitlines()


def test_the_repository_params_load_unchanged_and_frozen() -> None:
    params = load_params(REPOSITORY_PARAMS)

    assert params.model_dump() == DOCUMENT
    with pytest.raises(ValidationError, match="frozen"):
        params.train.epochs = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("split.method", "random", "Input should be 'official' or 'resplit'"),
        ("train.model", "mlp", "Input should be 'dense' or 'cnn'"),
        ("train.activation", "sigmod", ACTIVATIONS),
        ("train.cnn.padding", "full", "Input should be 'valid' or 'same'"),
        ("train.optimizer", "adagrad", "Input should be 'sgd', 'adam', 'adamw' or 'rmsprop'"),
        ("train.schedule", "linear", "Input should be 'constant', 'cosine' or 'step'"),
        ("train.precision", "float16", "Input should be 'float32', 'bfloat16' or 'auto'"),
        ("train.epochs", "15", "Input should be a valid integer"),
        ("train.batch_size", True, "Input should be a valid integer"),
        ("train.epochs", 15.0, "Input should be a valid integer"),
        ("train.nesterov", "yes", "Input should be a valid boolean"),
        ("fetch.sources", [], "List should have at least 1 item after validation, not 0"),
        ("train.learning_rate", float("inf"), "Input should be a finite number"),
        ("split.val_size", 1.5, "Input should be less than 1"),
        ("train.cnn.kernel_size", 29, "Input should be less than or equal to 28"),
    ],
)
def test_a_wrong_choice_type_or_value_is_named(key: str, value: object, message: str) -> None:
    assert problems({key: value}) == [f"params.yaml: {key}: {message} (got {value!r})"]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"sede": 42}, ["sede: unknown key (did you mean 'seed'?)"]),
        ({"train.cnn.kernel": 3}, ["train.cnn.kernel: unknown key (did you mean 'kernel_size'?)"]),
        ({"fetch.retry": 3}, ["fetch.retry: unknown key (allowed: sources, timeout, attempts)"]),
        ({"report": DELETE}, ["report: Field required"]),
        ({"train.warmup_epochs": 30}, ["train: warmup_epochs 30 must be less than 30"]),
        (
            {"train.activation": DELETE, "train.activaton": "relu"},
            ["train.activation: Field required", f"train.activaton: {DID_YOU_MEAN}"],
        ),
    ],
)
def test_an_unknown_or_missing_key_is_named_with_a_hint(changes: dict, expected: list) -> None:
    assert problems(changes) == [f"params.yaml: {line}" for line in expected]


def test_every_problem_gets_its_own_line_and_the_count_is_capped() -> None:
    lines = problems({"seed": "42", **{f"unknown_{number}": 0 for number in range(30)}})

    assert len(lines) == 21
    assert lines[0] == "params.yaml: seed: Input should be a valid integer (got '42')"
    assert lines[-1] == "params.yaml: and 11 more problems"


@pytest.mark.parametrize(
    ("key", "largest"),
    [
        ("seed", 2**32 - 1),
        ("fetch.timeout", 3600),
        ("fetch.attempts", 10),
        ("train.epochs", 1000),
        ("train.batch_size", 65_536),
        ("train.early_stopping.patience", 1000),
        ("train.decay_every", 1000),
        ("train.l2", 1),
        ("train.weight_decay", 1),
        ("train.cnn.dense_units", 8192),
        ("report.misclassified", 100),
    ],
)
def test_every_size_count_and_duration_has_an_upper_bound(key: str, largest: int) -> None:
    parse_params(mutate({key: largest}))

    assert problems({key: 10**10}) == [
        f"params.yaml: {key}: Input should be less than or equal to {largest} (got {10**10})"
    ]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("train.hidden_units", [16] * 9, "List should have at most 8 items after validation"),
        ("train.cnn.filters", [8] * 7, "List should have at most 6 items after validation"),
        ("fetch.sources", ["/srv"] * 17, "List should have at most 16 items after validation"),
        ("fetch.sources", ["/" + "a" * 4096], "String should have at most 4096 characters"),
        ("train.activation", "relu" * 1000, ACTIVATIONS),
        # 10**10 strings, sharing one list per level: its repr would take gigabytes.
        ("seed", functools.reduce(lambda value, _: [value] * 10, range(10), "lol"), "integer"),
    ],
)
def test_a_huge_value_is_quoted_briefly(key: str, value: object, message: str) -> None:
    [line] = problems({key: value})

    prefix, _, quoted = line.partition(" (got ")
    assert prefix.startswith(f"params.yaml: {key}") and message in prefix
    assert 20 < len(quoted) <= 201  # 200 and the closing parenthesis


@pytest.mark.parametrize(
    ("filters", "kernel_size", "padding", "pool_size", "refused"),
    [
        ([32], 28, "valid", 2, "block 1 of 1 does not fit: its 28x28 input"),
        ([32], 3, "valid", 28, "block 1 of 1 does not fit: its 28x28 input"),
        ([8] * 4, 3, "valid", 2, "block 4 of 4 does not fit: its 1x1 input"),
        ([8] * 5, 3, "same", 2, "block 5 of 5 does not fit: its 1x1 input"),
        ([8] * 3, 3, "valid", 2, None),
        ([8] * 6, 3, "same", 1, None),
        ([32], 27, "valid", 2, None),
        ([32], 28, "same", 28, None),
    ],
)
def test_a_cnn_that_shrinks_the_images_to_nothing_is_refused_naming_the_block(
    filters: list[int], kernel_size: int, padding: str, pool_size: int, refused: str | None
) -> None:
    # Checked for a dense run too (train.model stays dense): -S train.model=cnn builds it.
    cnn = {
        "filters": filters,
        "kernel_size": kernel_size,
        "padding": padding,
        "pool_size": pool_size,
    }
    changes = {f"train.cnn.{key}": value for key, value in cnn.items()}
    if refused is None:
        parse_params(mutate(changes))
    else:
        [line] = problems(changes)
        assert line.startswith(f"params.yaml: train.cnn: {refused} is too small for kernel_size")


def test_the_geometry_follows_images_that_are_not_square(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "IMAGE_SIZE", (32, 8))

    [line] = problems({"train.cnn.filters": [8, 8]})

    assert line.startswith("params.yaml: train.cnn: block 2 of 2 does not fit: its 15x3 input")


def test_the_memory_estimate_counts_weights_optimiser_slots_and_a_batch_of_outputs() -> None:
    # Dense 784-100-10 with Adam, batch 10: the arithmetic a reader can check by hand.
    train = make_train_params(model="dense", hidden_units=[100], dropout=0.0, batch_size=10)
    weights = 785 * 100 + 101 * 10
    augment = train.augment.flip + (train.augment.shift > 0)
    outputs = 784 * (1 + augment) + 100 * 2 + 2 * 10  # pixels, the layer twice, the softmax twice

    assert training_memory(train) == {
        "weights and gradients": 8 * weights,
        "optimiser slots": 8 * weights,  # Adam's two moments
        "layer outputs of a batch of 10": 4 * outputs * 10,
    }
    plain_sgd = make_train_params(**{**train.model_dump(), "optimizer": "sgd", "momentum": 0.0})
    assert training_memory(plain_sgd)["optimiser slots"] == 0
    assert describe_memory(train).startswith(
        f"a training step needs about {sum(training_memory(train).values()) / 1e6:.1f} MB: "
    )


@pytest.mark.parametrize(("image_size", "channels"), [((28, 28), 1), ((32, 32), 3)])
def test_a_network_too_large_to_train_is_refused_naming_its_memory_and_keys(
    monkeypatch: pytest.MonkeyPatch, image_size: tuple[int, int], channels: int
) -> None:
    # A fork edits fmnist/dataset.py: the estimate follows its image size and channels.
    monkeypatch.setattr(schema, "IMAGE_SIZE", image_size)
    monkeypatch.setattr(schema, "CHANNELS", channels)
    # Six blocks of 1,024 filters that never pool: 60 M weights, but gigabytes of outputs.
    wide_cnn = {"filters": [1024] * 6, "padding": "same", "pool_size": 1, "dense_units": 16}

    [dense] = problems({"train.hidden_units": [8192] * 8})
    [cnn] = problems({"train.model": "cnn", **{f"train.cnn.{k}": v for k, v in wide_cnn.items()}})

    for line, keys in ((dense, "train.hidden_units"), (cnn, "train.cnn")):
        assert re.fullmatch(
            r"params.yaml: train: a training step needs about [\d,.]+ MB: [\d,.]+ MB for weights "
            r"and gradients, [\d,.]+ MB for optimiser slots, [\d,.]+ MB for layer outputs of a "
            rf"batch of 256, more than 2 GiB; make the network or the batch smaller \({keys}, "
            r"train.batch_size\)",
            line,
        ), line
    parse_params(mutate({"train.model": "cnn", "train.cnn.filters": [64, 128, 256]}))
    parse_params(mutate({"train.hidden_units": [8192, 8192]}))


@pytest.mark.parametrize(
    ("line", "expected"),
    [("learning_rate: 1e-3", 0.001), ("epochs: 010", 10), ("nesterov: yes", "yes")],
    ids=["YAML 1.1 reads a string", "YAML 1.1 reads octal 8", "YAML 1.1 reads true"],
)
def test_values_are_read_as_dvc_reads_them(line: str, expected: object) -> None:
    key = line.partition(":")[0]
    text = re.sub(rf"^  {key}: .*$", f"  {line}", TEXT, count=1, flags=re.MULTILINE)

    value = read_yaml(text)["train"][key]

    assert value == parse_yaml(text, "params.yaml")["train"][key] == expected
    assert type(value) is type(expected)


def billion_laughs(levels: int = 9) -> str:
    """params.yaml with a seed that expands to 10**levels values from a few hundred bytes."""
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]" for n in range(1, levels)]
    return "\n".join(lines) + "\n" + TEXT.replace("seed: 42", f"seed: *l{levels - 1}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (billion_laughs(), ":2:10: YAML alias *l0 refused: write the value out"),
        ("report: &r {misclassified: 3}\nx:\n  <<: *r\n", ":3:7: YAML alias *r refused"),
        ("seed: " + "[" * 500 + "]" * 500, ":1:22: nested more than 16 levels deep"),
        ("seed: " + "1" * 5000, ":1:7: a value of more than 4,096 characters"),
        (TEXT + ("# " + "x" * 98 + "\n") * 700, ": more than 65,536 characters"),
        ("seed: 1\ntrain: [\n", ":3:1: not valid YAML: expected "),
    ],
    ids=["alias-bomb", "merge-key", "nested-500-deep", "5000-digits", "huge-file", "bad-yaml"],
)
def test_hostile_or_broken_yaml_is_refused_fast(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")

    started = time.perf_counter()
    with pytest.raises(ParamsError) as caught:
        load_params(path)

    assert time.perf_counter() - started < 2  # a bomb expanded would not finish at all
    [line] = str(caught.value).splitlines()
    assert line.startswith(f"{path}{expected}")


@pytest.mark.parametrize("kind", ["missing", "directory", "not-utf-8"])
def test_an_unreadable_file_is_one_line_naming_it(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "params.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "not-utf-8":
        path.write_bytes(b"seed: \xff\xfe\n")

    with pytest.raises(ParamsError) as caught:
        load_params(path)
    with pytest.raises(PipelineError) as caught_by_reader:
        read_yaml_file(path)

    expected = rf"{re.escape(str(path))}: (not found|cannot read: \w+Error: .+)"
    assert re.fullmatch(expected, str(caught.value))
    assert str(caught_by_reader.value) == str(caught.value)


def test_main_logs_each_valid_file(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.setattr(sys, "argv", ["params", str(REPOSITORY_PARAMS), str(REPOSITORY_PARAMS)])

    with caplog.at_level(logging.INFO, logger="params"):
        schema.main()

    assert caplog.messages == [f"{REPOSITORY_PARAMS} is valid"] * 2


def test_the_command_checks_params_yaml_and_exits_1_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(TEXT.replace("tion: relu", "tion: sigmod"), "utf-8")
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY_ROOT)}

    result = subprocess.run(
        [sys.executable, "-m", "fmnist.params"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"params: error: params.yaml: train.activation: {ACTIVATIONS} (got 'sigmod')"
    ]


def test_the_train_stage_refuses_a_network_too_large_before_tensorflow_starts(
    tmp_path: Path,
) -> None:
    wide_cnn = {"filters": [1024] * 6, "padding": "same", "pool_size": 1, "dense_units": 16}
    changes = {"train.model": "cnn", **{f"train.cnn.{k}": v for k, v in wide_cnn.items()}}
    document = mutate(changes)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(document), "utf-8")
    limit = 1536 * 2**20  # TensorFlow alone would not start within it

    result = subprocess.run(
        [sys.executable, "-m", "stages.train", "--data", "d", "--model", "m.keras", "--live", "l"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
    )

    assert result.returncode == 1, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("train: error: params.yaml: train: a training step needs about 25,")
    assert "more than 2 GiB; make the network or the batch smaller (train.cnn" in line


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("fpu avx2 fma avx512f", "float32"),
        ("avx2 avx512f avx512_bf16", "bfloat16"),
        ("amx_bf16", "bfloat16"),
        (None, "float32"),
    ],
)
def test_auto_precision_is_bfloat16_only_on_a_cpu_that_computes_it_natively(
    tmp_path: Path, flags: str | None, expected: str
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    if flags is not None:  # None: no such file, as on macOS
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\n")

    assert compute_precision("auto", cpuinfo) == expected
    assert compute_precision("float32", cpuinfo) == "float32"
    assert compute_precision("bfloat16", cpuinfo) == "bfloat16"
