"""The study's CNN exactly as its blog post writes it: the reference of the accuracy figure.

Conv2D 32 3x3 (ReLU), MaxPooling 2x2, Flatten, Dense 128 (ReLU), Dense 10 (softmax); Adam with
Keras's defaults, batch 32, 10 epochs, ``validation_split=0.2``; pixels divided by 255; scored on
the official test set. Nothing of this repository's pipeline is used but the IDX reader, so
that the figure compares the pipeline with the plain script a reader would write.

    python -m bench.reference_cnn --raw data/raw

Prints the test accuracy and loss as JSON on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras

from fmnist.dataset import RAW_FILES
from fmnist.idx import read_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, required=True, help="the four decompressed IDX files")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=int, default=10, help="10, as the study (fewer: a check)")
    args = parser.parse_args()
    (x_train, y_train), (x_test, y_test) = (
        read_split(args.raw / images, args.raw / labels) for images, labels in RAW_FILES.values()
    )
    x_train = x_train.reshape(-1, 28, 28, 1) / 255.0
    x_test = x_test.reshape(-1, 28, 28, 1) / 255.0

    keras.utils.set_random_seed(args.seed)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=args.epochs, validation_split=0.2, verbose=2)
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(json.dumps({"accuracy": round(float(accuracy), 4), "loss": round(float(loss), 4)}))


if __name__ == "__main__":
    main()
