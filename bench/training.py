"""Training speed inside one process, on the train and validation splits and the params in
``--data`` (written by bench.figures.prepare_splits: the same as the split stage's).

``throughput``: the train stage's training loop (fmnist.model.train_model) against the same
loop at Keras's default of one batch per call into TensorFlow (``steps_per_execution=1``), at
each batch size, and against the matrix multiplications alone (``tf.linalg.matmul`` of the same
shapes) at the last one.
``scaling``: the training loop on the training set repeated ``--factor`` times, one factor per
process so that its peak memory is its own.

    python -m bench.training throughput --data DIR --batch-sizes 32 256 --out FILE
    python -m bench.training scaling --data DIR --factor 4 --out FILE
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import resource
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from bench.measure import compare, in_alternating_order, median
from fmnist.data import Split, load_split
from fmnist.model import build_model, seed_everything, train_model
from fmnist.params import TrainParams, load_params

log = logging.getLogger("bench.training")


class EpochTimer(keras.callbacks.Callback):
    """Records the wall time of every epoch (training and validation)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._started)


def samples_per_second(count: int, epoch_seconds: list[float]) -> float:
    """Training images per second; the first epoch, which traces the graph, is left out."""
    return count / median(epoch_seconds[1:] or epoch_seconds)


def fit_stage(params: TrainParams, train: Split, val: Split) -> list[float]:
    """Epoch times of the train stage's own training loop."""
    timer = EpochTimer()
    train_model(params, train, val, [timer])
    return timer.seconds


def fit_plain(params: TrainParams, train: Split, val: Split) -> list[float]:
    """Epoch times of the train stage's training loop at Keras's default of one batch per call
    into TensorFlow, its only difference from ``fit_stage``.
    """
    timer = EpochTimer()
    train_model(params, train, val, [timer], steps_per_execution=1)
    return timer.seconds


def dense_shapes(params: TrainParams) -> list[tuple[int, int]]:
    """(inputs, units) of each Dense layer of the model that ``params`` describe."""
    model = build_model(params)
    return [
        tuple(layer.kernel.shape) for layer in model.layers if isinstance(layer, keras.layers.Dense)
    ]


def matmul_epoch(
    shapes: list[tuple[int, int]], batch_size: int, train_count: int, val_count: int
) -> tuple[float, float]:
    """Seconds and floating-point operations of an epoch's matrix multiplications alone.

    Per training batch, each layer's forward product and weight gradient and, above the first
    layer, its input gradient; per validation batch, the forward products.
    """
    generator = tf.random.Generator.from_seed(0)
    layers = [
        (
            generator.normal((batch_size, inputs)),
            generator.normal((inputs, units)),
            generator.normal((batch_size, units)),
        )
        for inputs, units in shapes
    ]

    @tf.function
    def training_step() -> tf.Tensor:
        total = tf.constant(0.0)
        for index, (activations, kernel, gradient) in enumerate(layers):
            products = [
                tf.linalg.matmul(activations, kernel),
                tf.linalg.matmul(activations, gradient, transpose_a=True),
            ]
            if index > 0:
                products.append(tf.linalg.matmul(gradient, kernel, transpose_b=True))
            total += sum(product[0, 0] for product in products)
        return total

    @tf.function
    def validation_step() -> tf.Tensor:
        total = tf.constant(0.0)
        for activations, kernel, _ in layers:
            total += tf.linalg.matmul(activations, kernel)[0, 0]
        return total

    training_step(), validation_step()  # trace outside the timing
    train_steps, val_steps = math.ceil(train_count / batch_size), math.ceil(val_count / batch_size)
    started = time.perf_counter()
    for _ in range(train_steps):
        training_step().numpy()
    for _ in range(val_steps):
        validation_step().numpy()
    seconds = time.perf_counter() - started
    forward = sum(2 * inputs * units for inputs, units in shapes)
    input_gradients = sum(2 * inputs * units for inputs, units in shapes[1:])
    operations = train_steps * batch_size * (2 * forward + input_gradients)
    operations += val_steps * batch_size * forward
    return seconds, float(operations)


def measure_throughput(
    params: TrainParams, train: Split, val: Split, batch_sizes: list[int], repeats: int, seed: int
) -> dict:
    """Samples per second of the stage's loop and of the plain one (``fit_plain``), side by side
    per batch size; at the last batch size also of the matrix products alone, in the same repeats.
    """
    figures: dict[str, dict] = {}
    for batch_size in batch_sizes:
        sized = params.model_copy(update={"batch_size": batch_size})
        runners: dict[str, Callable[[], list[float]]] = {
            "stage": lambda sized=sized: fit_stage(sized, train, val),
            "plain": lambda sized=sized: fit_plain(sized, train, val),
        }
        rates: dict[str, list[float]] = {"stage": [], "plain": [], "matmul": []}
        rates_of_operations = []
        shapes = dense_shapes(sized)
        for repeat in range(repeats):
            for name in in_alternating_order(repeat, "stage", "plain"):
                seed_everything(seed)
                rates[name].append(samples_per_second(len(train.labels), runners[name]()))
                log.info("batch %d, %s: %.0f samples/s", batch_size, name, rates[name][-1])
            if batch_size == batch_sizes[-1]:
                seconds, operations = matmul_epoch(
                    shapes, batch_size, len(train.labels), len(val.labels)
                )
                rates["matmul"].append(len(train.labels) / seconds)
                rates_of_operations.append(operations / seconds / 1e9)
        figures[str(batch_size)] = {
            "samples_per_second": compare(rates["stage"], rates["plain"], digits=2),
        }
    figures["matmul"] = {
        "batch_size": batch_sizes[-1],
        "layers": [list(shape) for shape in shapes],
        "samples_per_second": compare(rates["stage"], rates["matmul"], digits=2),
        "matmul_gigaflops": round(median(rates_of_operations), 1),
    }
    return figures


def resident_bytes() -> int:
    """The process's resident set now."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def peak_resident_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_scaling(params: TrainParams, train: Split, val: Split, factor: int) -> dict:
    """Samples per second and memory of the training loop on ``factor`` copies of train."""
    train = Split(np.concatenate([train.images] * factor), np.concatenate([train.labels] * factor))
    loaded = resident_bytes()
    rate = samples_per_second(len(train.labels), fit_stage(params, train, val))
    return {
        "factor": factor,
        "images": len(train.labels),
        "image_bytes": int(train.images.nbytes),
        "samples_per_second": round(rate, 1),
        "resident_bytes_before_training": loaded,
        "peak_resident_bytes": peak_resident_bytes(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("throughput", "scaling"))
    parser.add_argument("--data", type=Path, required=True, help="train.npz, val.npz, params.yaml")
    parser.add_argument("--out", type=Path, required=True, help="the figures (JSON)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32])
    parser.add_argument("--factor", type=int, default=1, help="copies of the training set")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    params = load_params(args.data / "params.yaml")
    train_params = params.train.model_copy(update={"epochs": args.epochs})
    data = args.data
    val = load_split(data / "val.npz")
    if args.mode == "throughput":
        figures = measure_throughput(
            train_params,
            load_split(data / "train.npz"),
            val,
            args.batch_sizes,
            args.repeats,
            params.seed,
        )
    else:
        seed_everything(params.seed)
        # Not kept here: measure_scaling holds only the repeated copy.
        figures = measure_scaling(train_params, load_split(data / "train.npz"), val, args.factor)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
