"""Export the trained model for apps with Keras 3's own export, checked against the Keras model.

``python -m fmnist.export`` (``make export``) writes models/model.tflite (LiteRT),
models/model.onnx and models/model.labels.txt (docs/using-the-model.md), or nothing: unless
each runtime agrees with Keras on the test split within MINIMUM_AGREEMENT and
MAXIMUM_DIFFERENCE. Temporary files live beside the output and go on any exit.
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
from fmnist.dataset import IMAGE_SHAPE
from fmnist.errors import PipelineError
from fmnist.files import atomic_path, refuse_links_out, temporary_files_beside

if TYPE_CHECKING:
    import keras

log = logging.getLogger("export")

MODEL_FILE = "models/model.keras"
TEST_FILE = "data/split/test.npz"
EXPORT_FILE = "models/model.tflite"
# The runtimes add up in other orders than TensorFlow: an image whose two best classes are all
# but tied may swap, and probabilities move in the sixth decimal. More is a conversion gone wrong.
MINIMUM_AGREEMENT = 0.999
MAXIMUM_DIFFERENCE = 1e-5
# How a layer's config names mixed bfloat16 precision.
MIXED_POLICY = '"mixed_bfloat16"'
# Images per call of a runtime: bounds its working memory for a CNN.
BATCH_SIZE = 500


def computing_in_float32(model: keras.Model) -> keras.Model:
    """``model`` itself, or for a mixed bfloat16 model (train.precision) the same network and
    weights computing in float32: neither runtime has bfloat16 kernels for it.
    """
    config = json.dumps(model.get_config())
    if MIXED_POLICY not in config:
        return model
    # The weights of a mixed-precision model are float32 already; only the policy changes.
    copy = type(model).from_config(json.loads(config.replace(MIXED_POLICY, '"float32"')))
    copy.set_weights(model.get_weights())
    return copy


def export_files(model: keras.Model, directory: Path) -> dict[str, Path]:
    """``model`` exported to ``directory`` as model.tflite and model.onnx, by runtime name."""
    import keras

    model = computing_in_float32(model)
    # What TensorFlow and tf2onnx log of their steps, and tf2onnx's NumPy warning, is noise here.
    for name in ("tensorflow", "tf2onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"keras\.src\.export")
    files = {"LiteRT": directory / "model.tflite", "ONNX Runtime": directory / "model.onnx"}
    # ONNX traces the call without `training`, which would leave augmentation layers on: the
    # wrapper fixes it to inference, and gives the input its name and any batch size.
    inputs = keras.Input(shape=IMAGE_SHAPE, dtype="uint8", name="image")
    inference = keras.Model(inputs, model(inputs, training=False))
    signature = [keras.InputSpec(shape=(None, *IMAGE_SHAPE), dtype="uint8", name="image")]
    for runtime, path in files.items():
        try:
            # The converters print what they did: noise beside the log.
            with contextlib.redirect_stdout(io.StringIO()):
                if runtime == "LiteRT":
                    model.export(str(path), format="litert", verbose=False)
                else:
                    inference.export(
                        str(path), format="onnx", verbose=False, input_signature=signature
                    )
        except Exception as error:  # each converter raises its own error types
            raise PipelineError(f"cannot export to {runtime}: {summarize_error(error)}") from None
    return files


def litert_probabilities(path: Path, images: np.ndarray) -> np.ndarray:
    """Class probabilities ``(n, 10)`` that the LiteRT model at ``path`` gives."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
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


def onnx_probabilities(path: Path, images: np.ndarray) -> np.ndarray:
    """Class probabilities ``(n, 10)`` that the ONNX model at ``path`` gives."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batches = range(0, len(images), BATCH_SIZE)
    return np.concatenate(
        [session.run(None, {"image": images[i : i + BATCH_SIZE]})[0] for i in batches]
    )


RUNNERS = {"LiteRT": litert_probabilities, "ONNX Runtime": onnx_probabilities}


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
        "--out", type=Path, default=Path(EXPORT_FILE), help=f"LiteRT model ({EXPORT_FILE})"
    )
    args = parser.parse_args()
    outputs = [args.out, args.out.with_suffix(".onnx"), args.out.with_suffix(".labels.txt")]
    for path in outputs:
        refuse_links_out(path)
    test = load_split(args.data)

    # TensorFlow takes seconds to import: only once the arguments and data are checked.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from fmnist.model import load_model, predict_probabilities, read_class_names

    class_names = read_class_names(args.model)
    model = load_model(args.model)
    expected = predict_probabilities(model, test.images, flip=False)
    with temporary_files_beside(args.out) as scratch:
        started = time.perf_counter()
        files = export_files(model, scratch)
        log.info("exported %s in %.1f s", args.model, time.perf_counter() - started)
        for runtime, path in files.items():
            started = time.perf_counter()
            agreement, difference = compare_predictions(
                expected, RUNNERS[runtime](path, test.images)
            )
            log.info(
                "%s: %.2f%% of %s test images get the same class; largest probability "
                "difference %.1g (checked in %.1f s)",
                runtime,
                100 * agreement,
                f"{len(test.labels):,}",
                difference,
                time.perf_counter() - started,
            )
            if agreement < MINIMUM_AGREEMENT or difference > MAXIMUM_DIFFERENCE:
                raise PipelineError(
                    f"the {runtime} model agrees with {args.model} on {agreement:.2%} of the "
                    f"test images (at least {MINIMUM_AGREEMENT:.1%}), with probabilities up to "
                    f"{difference:.1g} apart (at most {MAXIMUM_DIFFERENCE:g}); nothing was written"
                )
        # Each file is written beside its place before any is moved there: a full disk
        # changes none of them.
        with contextlib.ExitStack() as stack:
            temporaries = [stack.enter_context(atomic_path(path)) for path in outputs]
            for temporary, source in zip(temporaries, files.values(), strict=False):
                temporary.write_bytes(source.read_bytes())
            temporaries[-1].write_text("".join(f"{name}\n" for name in class_names))
    log.info("wrote %s", ", ".join(map(str, outputs)))


if __name__ == "__main__":
    run_stage("export", main)
