"""The networks, built from their hyperparameters, and the training loop around them."""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from fmnist.cli import summarize_error
from fmnist.data import Split
from fmnist.dataset import CHANNELS, CLASS_NAMES, IMAGE_SHAPE, IMAGE_SIZE, NUM_CLASSES
from fmnist.errors import DataError, TrainingError
from fmnist.files import atomic_path, check_model_archive
from fmnist.params import AugmentParams, TrainParams, compute_precision

log = logging.getLogger(__name__)

# Batches per call into TensorFlow: Keras's default of 1 costs a Python round trip per batch,
# longer than a small batch takes; the trained weights are the same either way.
STEPS_PER_EXECUTION = 64
# The flip augmentation's layer: predict_probabilities knows a model trained with flips by it.
FLIP_LAYER = "random_flip"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TensorFlow's ops deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _augment(x: keras.KerasTensor, params: AugmentParams) -> keras.KerasTensor:
    """Random flips and shifts; Keras applies them in training only, never at inference."""
    if params.flip:
        x = keras.layers.RandomFlip("horizontal", name=FLIP_LAYER)(x)
    if params.shift > 0:
        # The background is black (0), so shifted-in pixels are filled with 0, not reflected.
        x = keras.layers.RandomTranslation(
            params.shift, params.shift, fill_mode="constant", name="random_shift"
        )(x)
    return x


def _hidden_layer(
    x: keras.KerasTensor,
    layer_class: type[keras.layers.Layer],
    params: TrainParams,
    name: str,
    **options: object,
) -> keras.KerasTensor:
    """A Dense or Conv2D layer with the activation, or with batch norm before the activation.

    With batch norm the layer has no bias (batch norm's own offset makes it redundant).
    """
    regularizer = keras.regularizers.L2(params.l2) if params.l2 else None
    if not params.batch_norm:
        layer = layer_class(
            activation=params.activation, kernel_regularizer=regularizer, name=name, **options
        )
        return layer(x)
    layer = layer_class(use_bias=False, kernel_regularizer=regularizer, name=name, **options)
    x = keras.layers.BatchNormalization(name=f"{name}_batch_norm")(layer(x))
    return keras.layers.Activation(params.activation, name=f"{name}_{params.activation}")(x)


def _dropout(x: keras.KerasTensor, params: TrainParams, name: str) -> keras.KerasTensor:
    if params.dropout > 0:
        x = keras.layers.Dropout(params.dropout, name=f"{name}_dropout")(x)
    return x


def build_model(params: TrainParams) -> keras.Model:
    """A classifier of uint8 images into class probabilities, as ``params`` describe it.

    Pixel scaling to [0, 1] is the model's first layer, so training, evaluation and anyone
    loading the saved model feed raw uint8 images and cannot disagree about normalisation.
    """
    # Layers take the dtype policy in force when they are made: mixed bfloat16 computes in
    # bfloat16 and keeps float32 weights; the softmax stays float32 (its sums need the range).
    previous_policy = keras.config.dtype_policy()
    bfloat16 = compute_precision(params.precision) == "bfloat16"
    keras.config.set_dtype_policy("mixed_bfloat16" if bfloat16 else "float32")
    try:
        return _build_layers(params)
    finally:
        keras.config.set_dtype_policy(previous_policy)


def _build_layers(params: TrainParams) -> keras.Model:
    inputs = keras.Input(shape=IMAGE_SHAPE, dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255, name="scale_pixels")(inputs)
    x = keras.layers.Reshape((*IMAGE_SIZE, CHANNELS), name="add_channel")(x)
    x = _augment(x, params.augment)
    if params.model == "cnn":
        cnn = params.cnn
        for index, filters in enumerate(cnn.filters, start=1):
            name = f"conv_{index}"
            x = _hidden_layer(
                x,
                keras.layers.Conv2D,
                params,
                name,
                filters=filters,
                kernel_size=cnn.kernel_size,
                padding=cnn.padding,
            )
            x = keras.layers.MaxPooling2D(cnn.pool_size, name=f"{name}_pool")(x)
            x = _dropout(x, params, name)
        hidden_units = [cnn.dense_units]
    else:
        hidden_units = params.hidden_units
    x = keras.layers.Flatten(name="flatten")(x)
    for index, units in enumerate(hidden_units, start=1):
        name = f"dense_{index}"
        x = _hidden_layer(x, keras.layers.Dense, params, name, units=units)
        x = _dropout(x, params, name)
    outputs = keras.layers.Dense(
        NUM_CLASSES, activation="softmax", dtype="float32", name="probabilities"
    )(x)
    return keras.Model(inputs, outputs, name=f"{params.model}_classifier")


def learning_rate_schedule(
    params: TrainParams, steps_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate, constant or decaying per step as ``params.schedule`` says."""
    if params.schedule == "cosine" and params.warmup_epochs:
        warmup_steps = params.warmup_epochs * steps_per_epoch
        return keras.optimizers.schedules.CosineDecay(
            0.0,
            decay_steps=params.epochs * steps_per_epoch - warmup_steps,
            warmup_target=params.learning_rate,
            warmup_steps=warmup_steps,
        )
    if params.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            params.learning_rate, decay_steps=params.epochs * steps_per_epoch
        )
    if params.schedule == "step":
        return keras.optimizers.schedules.ExponentialDecay(
            params.learning_rate,
            decay_steps=params.decay_every * steps_per_epoch,
            decay_rate=params.decay_factor,
            staircase=True,
        )
    return params.learning_rate


def build_optimizer(params: TrainParams, steps_per_epoch: int = 1) -> keras.optimizers.Optimizer:
    """The optimiser that ``params.optimizer`` names, with its settings and schedule."""
    rate = learning_rate_schedule(params, steps_per_epoch)
    if params.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=params.momentum, nesterov=params.nesterov)
    if params.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=params.weight_decay)
    if params.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(rate)
    return keras.optimizers.Adam(rate)


def compile_model(
    model: keras.Model,
    params: TrainParams,
    steps_per_epoch: int = 1,
    steps_per_execution: int = STEPS_PER_EXECUTION,
) -> None:
    """Compile with the optimiser, loss and metric of ``params`` (``steps_per_execution`` 1 is
    Keras's own default, one batch per call)."""
    # One-hot targets, because only the categorical loss supports label smoothing.
    model.compile(
        optimizer=build_optimizer(params, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=params.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        steps_per_execution=steps_per_execution,
    )


def one_hot(labels: np.ndarray) -> np.ndarray:
    """Float32 one-hot rows ``(n, 10)`` for class indices."""
    return np.eye(NUM_CLASSES, dtype=np.float32)[labels]


def kept_epoch(history: dict[str, list[float]], params: TrainParams) -> int:
    """The epoch (from 1) whose weights the trained model holds: with early stopping and
    ``restore_best``, the first with the lowest validation loss; otherwise the last."""
    if params.early_stopping.patience > 0 and params.early_stopping.restore_best:
        return int(np.argmin(history["val_loss"])) + 1
    return len(history["loss"])


def train_model(
    params: TrainParams,
    train: Split,
    val: Split,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    *,
    steps_per_execution: int = STEPS_PER_EXECUTION,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Build, compile and fit a model; return it with its per-epoch history. TrainingError if
    the loss stops being finite, so a diverged model is never saved."""
    model = build_model(params)
    steps_per_epoch = -(-len(train.labels) // params.batch_size)
    compile_model(model, params, steps_per_epoch, steps_per_execution)
    log.info(
        "training a %s network of %s parameters on %s images, validating on %s, "
        "%d epochs of batch %d, %s at learning rate %r",
        params.model,
        f"{model.count_params():,}",
        f"{len(train.labels):,}",
        f"{len(val.labels):,}",
        params.epochs,
        params.batch_size,
        params.optimizer,
        params.learning_rate,
    )
    all_callbacks: list[keras.callbacks.Callback] = [keras.callbacks.TerminateOnNaN()]
    if params.early_stopping.patience > 0:
        all_callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=params.early_stopping.patience,
                restore_best_weights=params.early_stopping.restore_best,
            )
        )
    history = model.fit(
        train.images,
        one_hot(train.labels),
        validation_data=(val.images, one_hot(val.labels)),
        batch_size=params.batch_size,
        epochs=params.epochs,
        shuffle=True,
        callbacks=[*all_callbacks, *callbacks],
        verbose=2,
    ).history
    losses = np.asarray(history["loss"], dtype=np.float64)
    if not np.all(np.isfinite(losses)):
        raise TrainingError(
            f"training diverged: the loss became {losses[-1]} in epoch {len(losses)} of "
            f"{params.epochs}; lower train.learning_rate ({params.learning_rate}) or change "
            f"train.optimizer ({params.optimizer}). No model was written."
        )
    return model, history


def predict_probabilities(model: keras.Model, images: np.ndarray, flip: bool = True) -> np.ndarray:
    """Class probabilities ``(n, 10)`` for uint8 images; DataError if any is not a number. A model
    trained with flips (a ``random_flip`` layer) gives the mean of each image's and its mirror
    image's, unless ``flip`` is False (one pass, as exported): +0.2 points for cnn-best."""
    probabilities = model.predict(images, batch_size=1024, verbose=0)
    if flip and any(layer.name == FLIP_LAYER for layer in model.layers):
        probabilities += model.predict(images[:, :, ::-1], batch_size=1024, verbose=0)
        probabilities /= 2
    if not np.isfinite(probabilities).all():
        raise DataError("the model gives NaN or infinite probabilities: its weights are damaged")
    return probabilities


def _normalise_archive(source: Path, target: Path) -> None:
    """Copy a ``.keras`` archive without what changes from one save of the same model to the
    next (the save time, Python object ids and the zip entries' dates), adding the class names.
    """
    with zipfile.ZipFile(source) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    metadata = json.loads(members["metadata.json"])
    metadata.pop("date_saved", None)
    # The names travel inside the model file, so whoever loads it can name its outputs without
    # this package; Keras ignores metadata.json when it loads an archive.
    metadata["class_names"] = list(CLASS_NAMES)
    members["metadata.json"] = json.dumps(metadata).encode()
    # Object ids only say which layers share an object: number them in order of appearance.
    numbers: dict[bytes, bytes] = {}
    members["config.json"] = re.sub(
        rb'"shared_object_id": (\d+)',
        lambda match: (
            b'"shared_object_id": ' + numbers.setdefault(match.group(1), str(len(numbers)).encode())
        ),
        members["config.json"],
    )
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = (
                zipfile.ZIP_DEFLATED if name.endswith(".json") else zipfile.ZIP_STORED
            )
            archive.writestr(info, data)


def save_model(model: keras.Model, path: str | os.PathLike[str]) -> None:
    """Save ``model`` atomically as a ``.keras`` archive whose bytes depend on the model only,
    so that the same weights give the same file and the same hash in dvc.lock.

    The archive's ``metadata.json`` holds the class names in output order (``read_class_names``).
    """
    with tempfile.TemporaryDirectory() as directory:
        saved = Path(directory) / "model.keras"
        model.save(saved)
        with atomic_path(path) as temporary:
            _normalise_archive(saved, temporary)


def read_class_names(path: str | os.PathLike[str]) -> list[str]:
    """The class names, in the order of the model's outputs, that ``save_model`` stored in the
    archive's ``metadata.json``; read with zipfile and json alone, as any other program can.
    """
    check_model_archive(path)
    try:
        with zipfile.ZipFile(path) as archive:
            metadata = json.loads(archive.read("metadata.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a Keras model archive ({summarize_error(error)})") from None
    names = metadata.get("class_names") if isinstance(metadata, dict) else None
    if not (
        isinstance(names, list)
        and len(names) == NUM_CLASSES
        and all(isinstance(name, str) for name in names)
    ):
        raise DataError(
            f"{path}: holds no list of {NUM_CLASSES} class names (saved before they were "
            "stored with the model); retrain with `dvc repro train`"
        )
    return names


def load_model(path: str | os.PathLike[str]) -> keras.Model:
    """Load a model saved by the train stage, for inference (no optimiser state)."""
    check_model_archive(path)
    try:
        # Safe mode, Keras's default, refuses code in the archive (lambda layers); stated here
        # because a model may come from elsewhere.
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # a damaged archive fails in zipfile, h5py, json or Keras itself
        raise DataError(f"{path}: not a loadable Keras model ({summarize_error(error)})") from None
    if tuple(model.input_shape[1:]) != IMAGE_SHAPE or model.output_shape[-1] != NUM_CLASSES:
        raise DataError(
            f"{path}: takes {model.input_shape[1:]} and gives {model.output_shape[-1]} scores; "
            f"this pipeline's models take {IMAGE_SHAPE} images and give {NUM_CLASSES}"
        )
    return model
