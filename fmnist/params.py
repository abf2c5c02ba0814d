"""The schema of params.yaml: one frozen, validated section per stage plus the shared seed.

Validation happens as the file is loaded, before any stage does heavy work (and before
TensorFlow is imported). Every problem becomes one line naming the key and what is allowed, for
example::

    params.yaml: train.activation: 'sigmod' is not one of relu, sigmoid, tanh, elu, gelu

Every size, count and duration has an upper bound, so that a typo (an extra zero, ``1e9``) is
refused here rather than found by running out of memory, time or patience later.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, ScalarEvent

from fmnist import IMAGE_SHAPE, NUM_CLASSES
from fmnist.cli import summarize_error
from fmnist.errors import ParamsError, PipelineError

PARAMS_FILE = Path("params.yaml")

# A feature map runs out along its shorter side first.
IMAGE_SIDE = min(IMAGE_SHAPE)
PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]

# The repository's params.yaml is about 3 KB. Twenty times that leaves room for comments and
# long source lists; anything larger is another file given by mistake. With aliases refused
# (below), what loading costs grows with the text, so this bounds it.
MAX_PARAMS_CHARACTERS = 65_536
# params.yaml nests four levels (the document, train, cnn, filters). ruamel.yaml's composer
# recurses once per level and fails with RecursionError at a few hundred: refuse long before.
MAX_NESTING = 16
# No value is longer than a path, and Linux refuses paths over PATH_MAX (4,096). This also keeps
# integers under Python's 4,300-digit limit on reading them from text.
MAX_VALUE_CHARACTERS = 4096

# NumPy's seeding (np.random.seed, which keras.utils.set_random_seed calls, and scikit-learn's
# random_state in the split) accepts 0 to 2**32 - 1 and raises beyond.
MAX_SEED = 2**32 - 1
# The study trains 10 to 40 epochs of 3 to 18 s each on two cores (dense-best 130 s, cnn-best
# 716 s for 40): 1,000 epochs is already hours, more is a typo. Patience and decay_every count
# epochs too, and could never take effect beyond the epochs a run can have.
MAX_EPOCHS = 1000
# All 70,000 images of the data set: no split holds more, and a larger batch is the same single
# batch per epoch.
MAX_BATCH_SIZE = 70_000
# Eight times the widest layer tried (dense-best's 1,024); MAX_WEIGHTS bounds their product.
MAX_UNITS = 8192
MAX_HIDDEN_LAYERS = 8
MAX_FILTERS = 1024
# Pooling by 2 or more leaves a 1x1 map after at most four blocks, so more only fit with
# pool_size 1; six leaves room for that while bounding the depth of a network whose every block
# then works on all 28x28 positions.
MAX_CONV_BLOCKS = 6
# 75 times the largest network of the study (dense-best, 1.3 million). Training holds about four
# float32 copies (weights, gradients, Adam's two moments): 1.6 GB at this bound, which a
# laptop still has. Per-layer bounds alone allow 6.6 billion (28x28x1024 maps into 8,192 units).
MAX_WEIGHTS = 100_000_000
# Seconds one download attempt may take, whole: an hour for a 26 MB file is a mirror that is
# down. (Sockets refuse more than about 9.2e9 s, int64 nanoseconds, with an OverflowError.)
MAX_TIMEOUT = 3600
# Tries per URL: waits between them double but never exceed the timeout, and a source gets at
# most (2 x attempts - 1) x timeout for all its files; ten failures is a mirror that is down.
MAX_ATTEMPTS = 10
# The three sources in params.yaml and every mirror known fit many times over.
MAX_SOURCES = 16
# A penalty of 1 per squared weight already outweighs the cross-entropy (2.3 at the start) and
# drives every weight to 0; larger values are a misplaced exponent (1e4 for 1e-4).
MAX_PENALTY = 1.0

# An error line shows this much of a bad value, and an error at most this many problems: a
# pasted data file or a long list must not turn the error into megabytes of text.
SHOWN_CHARACTERS = 200
SHOWN_PROBLEMS = 20

Fraction = Annotated[float, Field(gt=0, lt=1)]
PositiveInt = Annotated[int, Field(gt=0)]
Epochs = Annotated[int, Field(gt=0, le=MAX_EPOCHS)]
Units = Annotated[int, Field(gt=0, le=MAX_UNITS)]
Penalty = Annotated[float, Field(ge=0, le=MAX_PENALTY)]


class Section(BaseModel):
    """A params.yaml section: unknown keys, wrong types and coercions are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class FetchParams(Section):
    sources: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=MAX_VALUE_CHARACTERS)]],
        Field(min_length=1, max_length=MAX_SOURCES),
    ]
    """Local directories and base URLs, tried in order until one serves all four files."""
    timeout: Annotated[float, Field(gt=0, le=MAX_TIMEOUT)]
    """Seconds one download attempt may take, from the request to the last byte."""
    attempts: Annotated[int, Field(gt=0, le=MAX_ATTEMPTS)]
    """Tries per download URL; waits double between tries, each at most ``timeout``."""


class SplitParams(Section):
    method: Literal["official", "resplit"]
    """official: the published 60,000/10,000 split; resplit: pool all 70,000 and split anew."""
    test_size: Fraction
    """Fraction of the pooled images held out for testing (resplit only)."""
    val_size: Fraction
    """Fraction of the training images held out for validation."""


def _fit_conv_blocks(
    blocks: int, kernel_size: int, padding: str, pool_size: int
) -> tuple[int, int]:
    """How many of ``blocks`` conv blocks, as model.build_model stacks them, fit the images, and
    the side of the feature maps after those: the input of the first block that does not fit.

    Each block is Conv2D (valid padding takes kernel_size - 1 pixels, same none), then
    MaxPooling2D with Keras's defaults (strides of pool_size, valid padding), which needs at
    least pool_size pixels and keeps one per whole window.
    """
    side = IMAGE_SIDE
    for fitted in range(blocks):
        convolved = side - kernel_size + 1 if padding == "valid" else side
        if convolved < pool_size:
            return fitted, side
        side = (convolved - pool_size) // pool_size + 1
    return blocks, side


def _fits(blocks: int, kernel_size: int, padding: str, pool_size: int) -> bool:
    return _fit_conv_blocks(blocks, kernel_size, padding, pool_size)[0] == blocks


def _either(choices: list[str]) -> str:
    return choices[0] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"


def _dense_weights(inputs: int, units: list[int]) -> int:
    """Kernel and bias weights of Dense layers of ``units`` on ``inputs`` values, then softmax."""
    weights = 0
    for width in [*units, NUM_CLASSES]:
        weights += (inputs + 1) * width
        inputs = width
    return weights


class CnnParams(Section):
    """The convolutional network: conv blocks, then one hidden Dense layer.

    The section is checked whatever train.model says: it describes the network that
    ``-S train.model=cnn`` builds from it, and a geometry that cannot fit the images is as
    wrong in a dense run's params as a kernel_size of 0, which the field bounds refuse anyway.
    """

    filters: Annotated[
        list[Annotated[int, Field(gt=0, le=MAX_FILTERS)]],
        Field(min_length=1, max_length=MAX_CONV_BLOCKS),
    ]
    """One block per entry: Conv2D with that many filters, then max pooling."""
    # A window wider than the image would see nothing but padding.
    kernel_size: Annotated[int, Field(gt=0, le=IMAGE_SIDE)]
    padding: Literal["valid", "same"]
    """valid shrinks each feature map by the kernel; same keeps its size until pooling."""
    pool_size: Annotated[int, Field(gt=0, le=IMAGE_SIDE)]
    dense_units: Units

    @model_validator(mode="after")
    def _fits_the_images(self) -> CnnParams:
        """Refuse blocks that shrink the images to nothing, and networks past MAX_WEIGHTS.

        Keras finds the first only as it builds the model, after TensorFlow's start-up, in a
        traceback; the second only by running out of memory.
        """
        blocks = len(self.filters)
        fitted, side = _fit_conv_blocks(blocks, self.kernel_size, self.padding, self.pool_size)
        if fitted < blocks:
            raise ValueError(self._what_fits(fitted, side))
        flattened = side * side * self.filters[-1]
        dense = _dense_weights(flattened, [self.dense_units])
        weights = dense
        channels = 1
        for filters in self.filters:
            weights += (self.kernel_size**2 * channels + 1) * filters
            channels = filters
        if weights > MAX_WEIGHTS:
            raise ValueError(
                f"the network has {weights:,} weights, {dense:,} of them from the "
                f"{flattened:,} values of the last block into dense_units {self.dense_units}; "
                f"at most {MAX_WEIGHTS:,}: use fewer filters, fewer dense_units or more pooling"
            )
        return self

    def _what_fits(self, fitted: int, side: int) -> str:
        """One line: which block does not fit, what it needs, and what would fit instead."""
        blocks, kernel, padding, pool = (
            len(self.filters),
            self.kernel_size,
            self.padding,
            self.pool_size,
        )
        needed = kernel + pool - 1 if padding == "valid" else pool
        choices = [f"{fitted} block{'s' if fitted > 1 else ''}"] if fitted else []
        if padding == "valid" and _fits(blocks, kernel, "same", pool):
            choices.append("padding same")
        if padding == "valid":
            choices += [
                f"kernel_size {smaller}"
                for smaller in range(kernel - 1, 0, -1)
                if _fits(blocks, smaller, padding, pool)
            ][:1]
        choices += [
            f"pool_size {smaller}"
            for smaller in range(pool - 1, 0, -1)
            if _fits(blocks, kernel, padding, smaller)
        ][:1]
        return (
            f"block {fitted + 1} of {blocks} does not fit the {IMAGE_SIDE}x{IMAGE_SIDE} images: "
            f"kernel_size {kernel} (padding {padding}) then pool_size {pool} need "
            f"{needed}x{needed} feature maps and {side}x{side} reach it; "
            f"fits with the rest unchanged: {_either(choices)}"
        )


class EarlyStoppingParams(Section):
    patience: Annotated[int, Field(ge=0, le=MAX_EPOCHS)]
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
    hidden_units: Annotated[list[Units], Field(min_length=1, max_length=MAX_HIDDEN_LAYERS)]
    """dense: one Dense layer per entry."""
    activation: Literal["relu", "sigmoid", "tanh", "elu", "gelu"]
    dropout: Annotated[float, Field(ge=0, lt=1)]
    """Fraction of units dropped after each hidden layer in training; 0 for none."""
    batch_norm: bool
    """Batch normalisation before each hidden activation."""
    l2: Penalty
    """L2 penalty on the kernels of the hidden layers; 0 for none."""
    cnn: CnnParams
    optimizer: Literal["sgd", "adam", "adamw", "rmsprop"]
    # No upper bound: a rate is not a size, so a huge one costs no memory or time; training
    # diverges in its first epoch and stops with an error naming train.learning_rate.
    learning_rate: Annotated[float, Field(gt=0)]
    momentum: Annotated[float, Field(ge=0, lt=1)]
    """sgd only."""
    nesterov: bool
    """sgd only."""
    weight_decay: Penalty
    """adamw only: decoupled weight decay."""
    schedule: Literal["constant", "cosine", "step"]
    """Learning rate over training: constant, cosine decay to 0, or step decay."""
    warmup_epochs: Annotated[int, Field(ge=0, le=MAX_EPOCHS)]
    """cosine only: epochs in which the rate rises linearly from 0 before the decay; 0 for none."""
    decay_every: Epochs
    """step only: epochs between decays."""
    decay_factor: Fraction
    """step only: the learning rate is multiplied by this at each decay."""
    label_smoothing: Annotated[float, Field(ge=0, lt=1)]
    early_stopping: EarlyStoppingParams
    augment: AugmentParams
    batch_size: Annotated[int, Field(gt=0, le=MAX_BATCH_SIZE)]
    epochs: Epochs
    precision: Literal["float32", "bfloat16"]
    """bfloat16: Keras's mixed precision (bfloat16 compute, float32 weights and softmax), faster
    on CPUs with AVX-512 BF16 or AMX; float32 everywhere else."""

    @model_validator(mode="after")
    def _warmup_within_training(self) -> TrainParams:
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise ValueError(
                f"warmup_epochs {self.warmup_epochs} leaves no epoch of the {self.epochs} "
                "to decay in: use fewer"
            )
        return self

    @field_validator("hidden_units")
    @classmethod
    def _within_max_weights(cls, hidden_units: list[int]) -> list[int]:
        """Checked whatever train.model says, as the cnn section is."""
        weights = _dense_weights(PIXELS, hidden_units)
        if weights > MAX_WEIGHTS:
            raise ValueError(
                f"the network has {weights:,} weights; at most {MAX_WEIGHTS:,}: "
                "use fewer or narrower layers"
            )
        return hidden_units


class ReportParams(Section):
    misclassified: Annotated[int, Field(ge=1, le=100)]
    """How many misclassified test images the report shows."""


class Params(Section):
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)]
    fetch: FetchParams
    split: SplitParams
    train: TrainParams
    report: ReportParams


def _schema_at(
    model: type[BaseModel], location: tuple[str | int, ...]
) -> tuple[type[BaseModel], object]:
    """Walk the schema from ``model`` along ``location`` (list indexes are skipped): the
    innermost section reached, and the annotation of the field where the walk left the sections
    (None if it never did).
    """
    for key in location:
        if isinstance(key, int):
            continue
        annotation = model.model_fields[key].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return model, annotation
        model = annotation
    return model, None


def _allowed(model: type[BaseModel], location: tuple[str | int, ...]) -> str:
    """Describe what the field at ``location`` accepts, from the schema itself."""
    section, _ = _schema_at(model, location[:-1])
    return ", ".join(section.model_fields)


def _literal_values(model: type[BaseModel], location: tuple[str | int, ...]) -> tuple[str, ...]:
    return typing.get_args(_schema_at(model, location)[1])


def _repr_pieces(value: object) -> Iterator[str]:
    """``repr(value)`` in pieces, so that a caller can stop without building all of it."""
    if isinstance(value, list):
        yield "["
        for index, item in enumerate(value):
            yield ", " if index else ""
            yield from _repr_pieces(item)
        yield "]"
    elif isinstance(value, dict):
        yield "{"
        for index, (key, item) in enumerate(value.items()):
            yield ", " if index else ""
            yield from _repr_pieces(key)
            yield ": "
            yield from _repr_pieces(item)
        yield "}"
    elif isinstance(value, str) and len(value) > SHOWN_CHARACTERS:
        yield repr(value[: SHOWN_CHARACTERS + 1])
    else:
        yield repr(value)


def _shown(value: object) -> str:
    """``repr(value)``, cut after SHOWN_CHARACTERS with the value's size in its place.

    Only the part shown is ever rendered, so a value whose repr would be huge (a list nested
    deep) costs no more than a short one.
    """
    text = ""
    for piece in _repr_pieces(value):
        text += piece
        if len(text) > SHOWN_CHARACTERS:
            if isinstance(value, str):
                size = f" ({len(value):,} characters)"
            elif isinstance(value, list | dict):
                size = f" ({len(value):,} items)"
            else:
                size = ""
            return f"{text[:SHOWN_CHARACTERS]}...{size}"
    return text


def _describe(error: dict, source: str) -> str:
    location = tuple(error["loc"])
    key = ".".join(str(part) for part in location) or "(top level)"
    kind = error["type"]
    value = error.get("input")
    reason = error["msg"].replace(" after validation", "")
    if kind == "extra_forbidden":
        message = f"unknown key (allowed: {_allowed(Params, location)})"
    elif kind == "missing":
        message = "missing"
    elif kind == "literal_error":
        allowed = ", ".join(_literal_values(Params, location))
        message = f"{_shown(value)} is not one of {allowed}"
    elif kind == "value_error":
        # The schema's own checks name the values they are about.
        message = reason.replace("Value error, ", "")
    else:
        reason = reason.replace("String should", "must")
        reason = reason.replace("Input should", "must").replace("List should", "must")
        message = f"{_shown(value)}: {reason}"
    return f"{source}: {key}: {message}"


def parse_params(data: object, source: str = str(PARAMS_FILE)) -> Params:
    """Validate a parsed params.yaml document; raise ParamsError with one line per problem.

    Past SHOWN_PROBLEMS problems, one last line counts the rest.
    """
    try:
        return Params.model_validate(data)
    except ValidationError as error:
        problems = error.errors()
        lines = [_describe(item, source) for item in problems[:SHOWN_PROBLEMS]]
        if len(problems) > SHOWN_PROBLEMS:
            lines.append(f"{source}: and {len(problems) - SHOWN_PROBLEMS:,} more problems")
        raise ParamsError("\n".join(lines)) from None


def read_yaml(text: str) -> object:
    """Parse a YAML document exactly as DVC parses params and its own files (ruamel.yaml,
    YAML 1.2), so that every value a stage uses is the value that dvc.lock, `dvc params diff`
    and `dvc exp show` record: ``1e-3`` is 0.001, ``010`` is 10, ``yes`` and ``1:30`` are
    strings.
    """
    return YAML(typ="safe").load(text)


def _file_error(
    path: str | os.PathLike[str], reason: Exception, error: type[PipelineError]
) -> PipelineError:
    """``error`` saying, in one line, why the YAML file ``path`` could not be read or parsed."""
    mark = getattr(reason, "problem_mark", None)
    if isinstance(reason, YAMLError) and mark is not None and getattr(reason, "problem", None):
        # ruamel's own text spans several lines and quotes the document; the place is enough.
        return error(f"{path}:{mark.line + 1}:{mark.column + 1}: not valid YAML: {reason.problem}")
    if isinstance(reason, YAMLError):
        return error(f"{path}: not valid YAML: {summarize_error(reason)}")
    return error(f"{path}: cannot read: {reason}")


def read_yaml_file(
    path: str | os.PathLike[str], error: type[PipelineError] = PipelineError
) -> object:
    """The document in the YAML file ``path``, parsed by ``read_yaml``; ``error`` naming the
    file, in one line, if it cannot be read or is not YAML.
    """
    try:
        return read_yaml(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, YAMLError) as reason:
        raise _file_error(path, reason, error) from None


def _check_plain_yaml(text: str, source: str) -> None:
    """Refuse aliases, deep nesting and overlong values before the text is composed.

    Each alias repeats a whole value, so a few KB of aliases of aliases ("billion laughs")
    expand to more values than memory holds as soon as anything walks them; params.yaml, written
    by people and by DVC, has no use for them. This reads YAML events one at a time, so it takes
    time and memory in proportion to the text whatever the text is.
    """
    depth = 0
    for event in YAML(typ="safe").parse(text):
        line = event.start_mark.line + 1
        if isinstance(event, AliasEvent):
            raise ParamsError(
                f"{source}:{line}: YAML aliases (*{event.anchor}) are not allowed in "
                "params.yaml: write the value out"
            )
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_NESTING:
                raise ParamsError(
                    f"{source}:{line}: values nested more than {MAX_NESTING} levels deep; "
                    "params.yaml's deepest, train.cnn.filters, is 4"
                )
        elif isinstance(event, CollectionEndEvent):
            depth -= 1
        elif isinstance(event, ScalarEvent) and len(event.value) > MAX_VALUE_CHARACTERS:
            raise ParamsError(
                f"{source}:{line}: a value of {len(event.value):,} characters; "
                f"at most {MAX_VALUE_CHARACTERS:,}, as for a path"
            )


def load_params(path: str | os.PathLike[str] = PARAMS_FILE) -> Params:
    """Read and validate params.yaml, refusing files over MAX_PARAMS_CHARACTERS."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as handle:
            text = handle.read(MAX_PARAMS_CHARACTERS + 1)
        if len(text) > MAX_PARAMS_CHARACTERS:
            raise ParamsError(
                f"{path}: more than {MAX_PARAMS_CHARACTERS:,} characters; params.yaml holds a "
                "few KB of settings (is this the right file?)"
            )
        _check_plain_yaml(text, str(path))
        data = read_yaml(text)
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the repository root)") from None
    except (OSError, UnicodeDecodeError, YAMLError) as reason:
        raise _file_error(path, reason, ParamsError) from None
    return parse_params(data, str(path))
