"""The schema of params.yaml: one frozen, validated section per stage plus the shared seed.

Validation happens as the file is loaded, before any stage does heavy work. Every problem
becomes one line naming the key and what is allowed, for example::

    params.yaml: train.activation: 'sigmod' is not one of relu, sigmoid, tanh, elu, gelu
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from fmnist.errors import ParamsError

PARAMS_FILE = Path("params.yaml")

Fraction = Annotated[float, Field(gt=0, lt=1)]
PositiveInt = Annotated[int, Field(gt=0)]


class Section(BaseModel):
    """A params.yaml section: unknown keys, wrong types and coercions are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class FetchParams(Section):
    sources: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    """Local directories and base URLs, tried in order until one serves all four files."""
    timeout: Annotated[float, Field(gt=0)]
    """Seconds to wait for a download mirror to answer or send more data."""
    attempts: PositiveInt
    """Tries per download URL; waits double between tries."""


class SplitParams(Section):
    method: Literal["official", "resplit"]
    """official: the published 60,000/10,000 split; resplit: pool all 70,000 and split anew."""
    test_size: Fraction
    """Fraction of the pooled images held out for testing (resplit only)."""
    val_size: Fraction
    """Fraction of the training images held out for validation."""


class CnnParams(Section):
    """The convolutional network: conv blocks, then one hidden Dense layer."""

    filters: Annotated[list[PositiveInt], Field(min_length=1)]
    """One block per entry: Conv2D with that many filters, then max pooling."""
    kernel_size: PositiveInt
    padding: Literal["valid", "same"]
    """valid shrinks each feature map by the kernel; same keeps its size until pooling."""
    pool_size: PositiveInt
    dense_units: PositiveInt


class EarlyStoppingParams(Section):
    patience: Annotated[int, Field(ge=0)]
    """Epochs without a lower validation loss before training stops; 0 never stops early."""
    restore_best: bool
    """Keep the weights of the epoch with the lowest validation loss."""


class AugmentParams(Section):
    """Random changes to training images only; evaluation always sees the images as they are."""

    shift: Annotated[float, Field(ge=0, lt=0.5)]
    """Largest shift, as a fraction of the image size, in each direction; 0 for none."""
    flip: bool
    """Mirror images left to right at random."""


class TrainParams(Section):
    model: Literal["dense", "cnn"]
    hidden_units: Annotated[list[PositiveInt], Field(min_length=1)]
    """dense: one Dense layer per entry."""
    activation: Literal["relu", "sigmoid", "tanh", "elu", "gelu"]
    dropout: Annotated[float, Field(ge=0, lt=1)]
    """Fraction of units dropped after each hidden layer in training; 0 for none."""
    batch_norm: bool
    """Batch normalisation before each hidden activation."""
    l2: Annotated[float, Field(ge=0)]
    """L2 penalty on the kernels of the hidden layers; 0 for none."""
    cnn: CnnParams
    optimizer: Literal["sgd", "adam", "adamw", "rmsprop"]
    learning_rate: Annotated[float, Field(gt=0)]
    momentum: Annotated[float, Field(ge=0, lt=1)]
    """sgd only."""
    nesterov: bool
    """sgd only."""
    weight_decay: Annotated[float, Field(ge=0)]
    """adamw only: decoupled weight decay."""
    schedule: Literal["constant", "cosine", "step"]
    """Learning rate over training: constant, cosine decay to 0, or step decay."""
    decay_every: PositiveInt
    """step only: epochs between decays."""
    decay_factor: Fraction
    """step only: the learning rate is multiplied by this at each decay."""
    label_smoothing: Annotated[float, Field(ge=0, lt=1)]
    early_stopping: EarlyStoppingParams
    augment: AugmentParams
    batch_size: PositiveInt
    epochs: PositiveInt


class ReportParams(Section):
    misclassified: Annotated[int, Field(ge=1, le=100)]
    """How many misclassified test images the report shows."""


class Params(Section):
    seed: Annotated[int, Field(ge=0)]
    fetch: FetchParams
    split: SplitParams
    train: TrainParams
    report: ReportParams


def _allowed(model: type[BaseModel], location: tuple[str | int, ...]) -> str:
    """Describe what the field at ``location`` accepts, from the schema itself."""
    for key in location[:-1]:
        if isinstance(key, int):
            continue
        annotation = model.model_fields[key].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return ", ".join(model.model_fields)


def _literal_values(model: type[BaseModel], location: tuple[str | int, ...]) -> tuple[str, ...]:
    for key in location:
        if isinstance(key, int):
            continue
        annotation = model.model_fields[key].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return typing.get_args(annotation)
    return ()


def _describe(error: dict, source: str) -> str:
    location = tuple(error["loc"])
    key = ".".join(str(part) for part in location) or "(top level)"
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        message = f"unknown key (allowed: {_allowed(Params, location)})"
    elif kind == "missing":
        message = "missing"
    elif kind == "literal_error":
        allowed = ", ".join(_literal_values(Params, location))
        message = f"{value!r} is not one of {allowed}"
    else:
        reason = error["msg"].replace(" after validation", "")
        reason = reason.replace("Value error, ", "").replace("String should", "must")
        reason = reason.replace("Input should", "must").replace("List should", "must")
        message = f"{value!r}: {reason}"
    return f"{source}: {key}: {message}"


def parse_params(data: object, source: str = str(PARAMS_FILE)) -> Params:
    """Validate a parsed params.yaml document; raise ParamsError with one line per problem."""
    try:
        return Params.model_validate(data)
    except ValidationError as error:
        lines = [_describe(item, source) for item in error.errors()]
        raise ParamsError("\n".join(lines)) from None


def read_yaml(text: str) -> object:
    """Parse a params document exactly as DVC does (ruamel.yaml, YAML 1.2), so that every value
    a stage uses is the value that dvc.lock, `dvc params diff` and `dvc exp show` record:
    ``1e-3`` is 0.001, ``010`` is 10, ``yes`` and ``1:30`` are strings.
    """
    return YAML(typ="safe").load(text)


def load_params(path: str | os.PathLike[str] = PARAMS_FILE) -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    try:
        data = read_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the repository root)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ParamsError(f"{path}: cannot read: {error}") from None
    except YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None
    return parse_params(data, str(path))
