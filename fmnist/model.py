"""The network, built from its hyperparameters, and the training loop around it."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from fmnist import IMAGE_SHAPE, NUM_CLASSES
from fmnist.data import Split
from fmnist.errors import DataError, TrainingError
from fmnist.params import TrainParams

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TensorFlow's ops deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def build_model(params: TrainParams) -> keras.Model:
    """A dense classifier: uint8 image in, class probabilities out.

    Pixel scaling to [0, 1] is the model's first layer, so training, evaluation and anyone
    loading the saved model feed raw uint8 images and cannot disagree about normalisation.
    """
    inputs = keras.Input(shape=IMAGE_SHAPE, dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255, name="scale_pixels")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    for index, units in enumerate(params.hidden_units, start=1):
        x = keras.layers.Dense(units, activation=params.activation, name=f"dense_{index}")(x)
        if params.dropout > 0:
            x = keras.layers.Dropout(params.dropout, name=f"dropout_{index}")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="dense_classifier")


def build_optimizer(params: TrainParams) -> keras.optimizers.Optimizer:
    """The optimiser that ``params.optimizer`` names, at ``params.learning_rate``."""
    optimizers = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}
    return optimizers[params.optimizer](learning_rate=params.learning_rate)


def compile_model(model: keras.Model, params: TrainParams) -> keras.Model:
    model.compile(
        optimizer=build_optimizer(params),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def train_model(
    params: TrainParams,
    train: Split,
    val: Split,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Build, compile and fit a model; return it with its per-epoch history.

    Raises TrainingError if the loss stops being finite, so a diverged model is never saved.
    """
    model = compile_model(build_model(params), params)
    log.info(
        "training %s parameters on %s images, validating on %s, %d epochs of batch %d",
        f"{model.count_params():,}",
        f"{len(train.labels):,}",
        f"{len(val.labels):,}",
        params.epochs,
        params.batch_size,
    )
    history = model.fit(
        train.images,
        train.labels,
        validation_data=(val.images, val.labels),
        batch_size=params.batch_size,
        epochs=params.epochs,
        shuffle=True,
        callbacks=[keras.callbacks.TerminateOnNaN(), *callbacks],
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


def predict_probabilities(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Class probabilities ``(n, 10)`` for uint8 images."""
    return model.predict(images, batch_size=1024, verbose=0)


def load_model(path: str | os.PathLike[str]) -> keras.Model:
    """Load a model saved by the train stage."""
    if not os.path.exists(path):
        raise DataError(f"{path}: not found (run the train stage: dvc repro train)")
    try:
        return keras.saving.load_model(path)
    except (ValueError, OSError) as error:
        raise DataError(f"{path}: not a loadable Keras model ({error})") from None
