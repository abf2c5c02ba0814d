"""Export the trained model to TensorFlow Lite for phones, checked against the Keras model.

``python -m fmnist.export`` (``make export``) converts models/model.keras to
models/model.tflite, which takes the same input (uint8 images ``(n, 28, 28)``, light on black)
and gives the same ten probabilities, and writes the class names beside it, one a line in
output order (models/model.labels.txt). Before anything is written, both models classify the
test split: the export fails, writing nothing, if they agree on fewer than MINIMUM_AGREEMENT of
the images. Its temporary files live beside the output and are removed on any exit, and the
model and its labels are replaced together or not at all.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fmnist.cli import run_stage, summarize_error
from fmnist.data import load_split
from fmnist.errors import PipelineError
from fmnist.files import atomic_path, refuse_links_out, temporary_files_beside

if TYPE_CHECKING:
    import keras

log = logging.getLogger("export")

MODEL_FILE = "models/model.keras"
TEST_FILE = "data/split/test.npz"
EXPORT_FILE = "models/model.tflite"
# TensorFlow and TensorFlow Lite add up in different orders, so an image whose two best
# classes are all but tied may swap; a conversion that changes more than 0.5% went wrong.
MINIMUM_AGREEMENT = 0.995
# How a layer's config names mixed bfloat16 precision.
MIXED_POLICY = '"mixed_bfloat16"'
# Images per call of the TensorFlow Lite interpreter: bounds its working memory for a CNN.
BATCH_SIZE = 500


def labels_path(export_path: Path) -> Path:
    """Where the class names go beside an export: model.tflite -> model.labels.txt."""
    return export_path.with_suffix(".labels.txt")


def computing_in_float32(model: keras.Model) -> keras.Model:
    """``model`` itself, or for a mixed bfloat16 model (train.precision) the same network and
    weights computing in float32: TensorFlow Lite has no bfloat16 kernels.
    """
    config = json.dumps(model.get_config())
    if MIXED_POLICY not in config:
        return model
    # The weights of a mixed-precision model are float32 already; only the policy changes.
    copy = type(model).from_config(json.loads(config.replace(MIXED_POLICY, '"float32"')))
    copy.set_weights(model.get_weights())
    return copy


def convert_to_tflite(model: keras.Model) -> bytes:
    """The model as a TensorFlow Lite flat buffer, with the model's input: uint8 images of any
    batch size, in inference mode (dropout and augmentation off).
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(computing_in_float32(model))
    try:
        # The converter goes through a temporary SavedModel and prints its signature: noise on
        # the standard output of a command whose log already says what happened.
        with contextlib.redirect_stdout(io.StringIO()):
            return converter.convert()
    except Exception as error:  # the converter raises its own error types, many of them
        raise PipelineError(
            f"TensorFlow Lite cannot convert this model: {summarize_error(error)}"
        ) from None


def tflite_probabilities(content: bytes, images: np.ndarray) -> np.ndarray:
    """Class probabilities ``(n, 10)`` that the TensorFlow Lite model ``content`` gives."""
    import tensorflow as tf

    # tf.lite.Interpreter warns that it moves to the ai-edge-litert package; it is the same
    # runtime with the same interface, and this way needs no second dependency.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_content=content)
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    batches = []
    for start in range(0, len(images), BATCH_SIZE):
        batch = images[start : start + BATCH_SIZE]
        interpreter.resize_tensor_input(input_index, batch.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(input_index, batch)
        interpreter.invoke()
        batches.append(interpreter.get_tensor(output_index))
    return np.concatenate(batches)


def compare_predictions(expected: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    """The share of rows whose most probable class is the same, and the largest difference
    between any two probabilities."""
    agreement = float((expected.argmax(axis=1) == actual.argmax(axis=1)).mean())
    return agreement, float(np.abs(expected - actual).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", type=Path, default=Path(MODEL_FILE), help=f"trained model ({MODEL_FILE})"
    )
    parser.add_argument(
        "--data", type=Path, default=Path(TEST_FILE), help=f"test split to check on ({TEST_FILE})"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(EXPORT_FILE), help=f"TensorFlow Lite model ({EXPORT_FILE})"
    )
    args = parser.parse_args()
    refuse_links_out(args.out)
    refuse_links_out(labels_path(args.out))
    test = load_split(args.data)

    # TensorFlow takes seconds to import: only once the arguments and data are checked.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from fmnist.model import load_model, predict_probabilities, read_class_names

    class_names = read_class_names(args.model)
    model = load_model(args.model)
    started = time.perf_counter()
    with temporary_files_beside(args.out):
        content = convert_to_tflite(model)
    log.info(
        "converted %s in %.1f s: %s bytes",
        args.model,
        time.perf_counter() - started,
        f"{len(content):,}",
    )
    started = time.perf_counter()
    agreement, difference = compare_predictions(
        predict_probabilities(model, test.images), tflite_probabilities(content, test.images)
    )
    log.info(
        "agreement: %.2f%% of %s test images get the same class; largest probability "
        "difference %.1g (checked in %.1f s)",
        100 * agreement,
        f"{len(test.labels):,}",
        difference,
        time.perf_counter() - started,
    )
    if agreement < MINIMUM_AGREEMENT:
        raise PipelineError(
            f"the TensorFlow Lite model agrees with {args.model} on {agreement:.2%} of the test "
            f"images, fewer than {MINIMUM_AGREEMENT:.1%}; nothing was written"
        )
    # Both files are written before either is moved into place: a full disk changes neither.
    with atomic_path(args.out) as model_file, atomic_path(labels_path(args.out)) as labels_file:
        model_file.write_bytes(content)
        labels_file.write_text("".join(f"{name}\n" for name in class_names), encoding="utf-8")
    log.info("wrote %s and %s", args.out, labels_path(args.out))


if __name__ == "__main__":
    run_stage("export", main)
