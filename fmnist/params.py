"""The schema of params.yaml: one frozen section per stage plus the shared seed, validated as
it loads (``python -m fmnist.params [FILE ...]`` checks files), one line per problem. Every size,
count and duration is bounded: a typo (an extra zero, ``1e9``) fails here, not hours later."""

from __future__ import annotations

import difflib
import functools
import itertools
import logging
import math
import os
import reprlib
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, ScalarEvent

from fmnist.cli import run_stage, summarize_error
from fmnist.dataset import CHANNELS, IMAGE_SIZE, NUM_CLASSES
from fmnist.errors import ParamsError, PipelineError

PARAMS_FILE = Path("params.yaml")
# params.yaml is about 3 KB: twenty times that is another file given by mistake.
MAX_PARAMS_CHARACTERS = 65_536
# params.yaml nests 4 deep; ruamel's composer recurses per level and fails at a few hundred.
MAX_NESTING = 16
# No value is longer than a path (PATH_MAX); keeps integers under Python's 4,300 digits too.
MAX_VALUE_CHARACTERS = 4096
# An epoch takes 3 to 18 s on two cores: 1,000 is hours, more is a typo.
MAX_EPOCHS = 1000
# What a training step may hold (training_memory): a twelfth of the 24 GiB of the machines this
# runs on, as TensorFlow's own buffers come on top; 18 times what cnn-best needs (116 MB).
MAX_TRAINING_BYTES = 2 * 2**30
# The CPU features, as Linux names them, that compute bfloat16 natively: AVX-512 BF16 and AMX.
NATIVE_BFLOAT16 = ("avx512_bf16", "amx_bf16")
# An error quotes this much of a value and lists this many problems, however large the input.
SHOWN_CHARACTERS = 200
SHOWN_PROBLEMS = 20

Fraction = Annotated[float, Field(gt=0, lt=1)]
Rate = Annotated[float, Field(ge=0, lt=1)]
Epochs = Annotated[int, Field(gt=0, le=MAX_EPOCHS)]
# Eight times the study's widest layer (1,024); MAX_TRAINING_BYTES bounds the whole network.
Units = Annotated[int, Field(gt=0, le=8192)]
# A penalty of 1 per squared weight already drives every weight to 0: more is a typo.
Penalty = Annotated[float, Field(ge=0, le=1)]
# A window larger than the image would see nothing but padding.
Window = Annotated[int, Field(gt=0, le=min(IMAGE_SIZE))]
# Sixteen times the study's widest convolution (64).
Filters = Annotated[int, Field(gt=0, le=1024)]
Source = Annotated[str, Field(min_length=1, max_length=MAX_VALUE_CHARACTERS)]


class Section(BaseModel):
    # Refuse unknown keys, wrong types, coercions ("1" for 1) and inf/nan.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class FetchParams(Section):
    # Three sources are in use; sixteen hold every known mirror.
    sources: Annotated[list[Source], Field(min_length=1, max_length=16)]
    # Seconds, and tries per URL: an hour for 26 MB, or ten failures, is a mirror that is down.
    timeout: Annotated[float, Field(gt=0, le=3600)]
    attempts: Annotated[int, Field(gt=0, le=10)]


class SplitParams(Section):
    method: Literal["official", "resplit"]
    test_size: Fraction
    val_size: Fraction


class CnnParams(Section):
    """Per entry of filters a Conv2D and a MaxPooling2D, then one hidden Dense layer."""

    # Pooling by 2 halves the images per block; six blocks leave room for pool_size 1.
    filters: Annotated[list[Filters], Field(min_length=1, max_length=6)]
    kernel_size: Window
    padding: Literal["valid", "same"]
    pool_size: Window
    dense_units: Units

    @model_validator(mode="after")
    def _fits_the_images(self) -> CnnParams:
        # Checked whatever train.model says (-S train.model=cnn builds it). Keras would find
        # these only after TensorFlow's start-up, or by running out of memory.
        size = IMAGE_SIZE
        shrink = self.kernel_size - 1 if self.padding == "valid" else 0
        for block in range(1, len(self.filters) + 1):
            if min(size) - shrink < self.pool_size:
                raise ValueError(
                    f"block {block} of {len(self.filters)} does not fit: its {size[0]}x{size[1]} "
                    f"input is too small for kernel_size {self.kernel_size} ({self.padding}) then "
                    f"pool_size {self.pool_size}; use fewer blocks, padding same or smaller windows"
                )
            size = tuple((side - shrink) // self.pool_size for side in size)
        return self


class EarlyStoppingParams(Section):
    patience: Annotated[int, Field(ge=0, le=MAX_EPOCHS)]
    restore_best: bool


class AugmentParams(Section):
    shift: Annotated[float, Field(ge=0, lt=0.5)]
    flip: bool


class TrainParams(Section):
    model: Literal["dense", "cnn"]
    hidden_units: Annotated[list[Units], Field(min_length=1, max_length=8)]
    activation: Literal["relu", "sigmoid", "tanh", "elu", "gelu"]
    dropout: Rate
    batch_norm: bool
    l2: Penalty
    cnn: CnnParams
    optimizer: Literal["sgd", "adam", "adamw", "rmsprop"]
    # Unbounded: a huge rate costs no memory or time, and training stops when it diverges.
    learning_rate: Annotated[float, Field(gt=0)]
    momentum: Rate
    nesterov: bool
    weight_decay: Penalty
    schedule: Literal["constant", "cosine", "step"]
    warmup_epochs: Annotated[int, Field(ge=0, le=MAX_EPOCHS)]
    decay_every: Epochs
    decay_factor: Fraction
    label_smoothing: Rate
    early_stopping: EarlyStoppingParams
    augment: AugmentParams
    # Large-batch training (LARS, LAMB) tops out near 64K whatever the data set; more is a typo.
    batch_size: Annotated[int, Field(gt=0, le=65_536)]
    epochs: Epochs
    # auto: bfloat16 where the CPU computes it natively (compute_precision), float32 elsewhere.
    precision: Literal["float32", "bfloat16", "auto"]

    @model_validator(mode="after")
    def _warmup_and_memory_within_bounds(self) -> TrainParams:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs {self.warmup_epochs} must be less than {self.epochs}")
        if sum(training_memory(self).values()) > MAX_TRAINING_BYTES:
            network = "hidden_units" if self.model == "dense" else "cnn"
            raise ValueError(
                f"{describe_memory(self)}, more than {MAX_TRAINING_BYTES / 2**30:.0f} GiB; "
                f"make the network or the batch smaller (train.{network}, train.batch_size)"
            )
        return self


def training_memory(train: TrainParams) -> dict[str, int]:
    """The bytes a training step holds, in float32: the weights with their gradients, the
    optimiser's slots, and the layer outputs of one batch kept for the backward pass.

    Arithmetic on the params, before TensorFlow starts; a lower bound of what it allocates.
    """
    # A hidden layer keeps its pre-activation (and normalised) output and its activation;
    # dropout keeps its output and its mask.
    per_unit = (3 if train.batch_norm else 2) + (2 if train.dropout else 0)
    inputs = math.prod(IMAGE_SIZE) * CHANNELS
    outputs = inputs * (1 + train.augment.flip + (train.augment.shift > 0))
    weights, units = 0, train.hidden_units
    if train.model == "cnn":
        cnn, size, channels = train.cnn, IMAGE_SIZE, CHANNELS
        shrink = cnn.kernel_size - 1 if cnn.padding == "valid" else 0
        for filters in cnn.filters:
            convolved = tuple(side - shrink for side in size)
            size = tuple(side // cnn.pool_size for side in convolved)
            weights += (cnn.kernel_size**2 * channels + 1) * filters
            outputs += filters * (math.prod(convolved) * per_unit + math.prod(size))
            channels = filters
        inputs, units = math.prod(size) * channels, [cnn.dense_units]
    widths = [inputs, *units, NUM_CLASSES]
    weights += sum((before + 1) * after for before, after in itertools.pairwise(widths))
    outputs += sum(units) * per_unit + 2 * NUM_CLASSES
    slots = {"sgd": int(train.momentum > 0), "rmsprop": 1}.get(train.optimizer, 2)
    return {
        "weights and gradients": 8 * weights,
        "optimiser slots": 4 * slots * weights,
        f"layer outputs of a batch of {train.batch_size}": 4 * outputs * train.batch_size,
    }


def compute_precision(precision: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The precision a run computes in: ``auto`` is bfloat16 only where the CPU has native
    bfloat16 (NATIVE_BFLOAT16); elsewhere Keras emulates it, about four times slower."""
    if precision != "auto":
        return precision
    try:
        lines = cpuinfo.read_text(encoding="utf-8").splitlines()
    except OSError:  # not Linux: no way to tell, and float32 is never the slow choice
        return "float32"
    flags = next((line.partition(":")[2].split() for line in lines if line.startswith("flags")), [])
    return "bfloat16" if set(NATIVE_BFLOAT16) & set(flags) else "float32"


def describe_memory(train: TrainParams) -> str:
    """``a training step needs about 12 MB: 4.3 MB for weights and gradients, ...``"""
    parts = training_memory(train)
    details = ", ".join(f"{size / 1e6:,.1f} MB for {name}" for name, size in parts.items())
    return f"a training step needs about {sum(parts.values()) / 1e6:,.1f} MB: {details}"


class ReportParams(Section):
    # They are shown in one grid of images.
    misclassified: Annotated[int, Field(ge=1, le=100)]


class Params(Section):
    # NumPy's and scikit-learn's seeds are 0 to 2**32 - 1.
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)]
    fetch: FetchParams
    split: SplitParams
    train: TrainParams
    report: ReportParams


_quote = reprlib.Repr()
_quote.maxlevel, _quote.maxlist, _quote.maxdict = 2, 6, 6
_quote.maxstring = _quote.maxlong = _quote.maxother = SHOWN_CHARACTERS


def _describe(error: dict, source: str) -> str:
    """One line: the dotted key, pydantic's message and the value given, quoted briefly."""
    location, message = error["loc"], error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        fields = functools.reduce(
            lambda model, key: model.model_fields[key].annotation, location[:-1], Params
        )
        allowed = list(fields.model_fields)
        guess = difflib.get_close_matches(str(location[-1]), allowed, n=1)
        hint = f"did you mean {guess[0]!r}?" if guess else f"allowed: {', '.join(allowed)}"
        message = f"unknown key ({hint})"
    elif error["type"] not in ("missing", "value_error"):
        shown = _quote.repr(error["input"])
        cut = shown[: SHOWN_CHARACTERS - 3] + "..." if len(shown) > SHOWN_CHARACTERS else shown
        message += f" (got {cut})"
    return f"{source}: {'.'.join(map(str, location)) or '(top level)'}: {message}"


def parse_params(data: object, source: str = str(PARAMS_FILE)) -> Params:
    """Validate a parsed params document; ParamsError with one line per problem."""
    try:
        return Params.model_validate(data)
    except ValidationError as error:
        problems = error.errors(include_url=False)
        lines = [_describe(problem, source) for problem in problems[:SHOWN_PROBLEMS]]
        if len(problems) > SHOWN_PROBLEMS:
            lines.append(f"{source}: and {len(problems) - SHOWN_PROBLEMS:,} more problems")
        raise ParamsError("\n".join(lines)) from None


def read_yaml(text: str) -> object:
    """Parse YAML as DVC parses params (ruamel.yaml, YAML 1.2), so a stage uses the values that
    dvc.lock records: ``1e-3`` is 0.001, ``010`` is 10, ``yes`` is a string."""
    return YAML(typ="safe").load(text)


def read_yaml_file(
    path: str | os.PathLike[str], error: type[PipelineError] = PipelineError
) -> object:
    """The document in the YAML file ``path``; ``error`` in one line if it cannot be read."""
    return _read_yaml_file(path, error, guard=False)


def load_params(path: str | os.PathLike[str] = PARAMS_FILE) -> Params:
    """Read and validate params.yaml; ParamsError naming every problem, one per line."""
    return parse_params(_read_yaml_file(path, ParamsError, guard=True), str(path))


def _read_yaml_file(
    path: str | os.PathLike[str], error: type[PipelineError], guard: bool
) -> object:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read(MAX_PARAMS_CHARACTERS + 1 if guard else -1)
        if guard:
            _refuse_expansion(text, path)
        return read_yaml(text)
    except (OSError, UnicodeDecodeError, YAMLError) as reason:
        mark = getattr(reason, "problem_mark", None)
        if isinstance(reason, FileNotFoundError):
            problem = "not found"
        elif mark is not None and getattr(reason, "problem", None):
            # ruamel's own text spans lines and quotes the document; the place is enough.
            path = f"{path}:{mark.line + 1}:{mark.column + 1}"
            problem = f"not valid YAML: {reason.problem}"
        else:
            problem = f"cannot read: {summarize_error(reason)}"
        raise error(f"{path}: {problem}") from None


def _refuse_expansion(text: str, source: object) -> None:
    """Refuse a file past MAX_PARAMS_CHARACTERS, aliases (a few KB of aliases of aliases expand
    past any memory), nesting past MAX_NESTING and values past MAX_VALUE_CHARACTERS, in time
    linear in the text."""
    if len(text) > MAX_PARAMS_CHARACTERS:
        raise ParamsError(f"{source}: more than {MAX_PARAMS_CHARACTERS:,} characters")
    depth = 0
    for event in YAML(typ="safe").parse(text):
        depth += isinstance(event, CollectionStartEvent) - isinstance(event, CollectionEndEvent)
        if isinstance(event, AliasEvent):
            problem = f"YAML alias *{event.anchor} refused: write the value out"
        elif depth > MAX_NESTING:
            problem = f"nested more than {MAX_NESTING} levels deep"
        elif isinstance(event, ScalarEvent) and len(event.value) > MAX_VALUE_CHARACTERS:
            problem = f"a value of more than {MAX_VALUE_CHARACTERS:,} characters"
        else:
            continue
        mark = event.start_mark
        raise ParamsError(f"{source}:{mark.line + 1}:{mark.column + 1}: {problem}")


def main() -> None:
    """Validate each params file named on the command line, params.yaml if none."""
    for path in sys.argv[1:] or [PARAMS_FILE]:
        load_params(path)
        logging.getLogger("params").info("%s is valid", path)


if __name__ == "__main__":
    run_stage("params", main)
