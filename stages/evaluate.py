"""Score the trained model on the test split: headline metrics, per-class scores, the most
confused pairs and per-image predictions."""

import argparse
import logging
from pathlib import Path

import pandas as pd

from fmnist.cli import run_stage
from fmnist.data import load_split
from fmnist.dataset import CLASS_NAMES
from fmnist.evaluation import class_scores, classification_metrics, confused_pairs, confusion
from fmnist.files import write_json, write_text
from stages import exit_now, filter_tensorflow_noise

log = logging.getLogger("evaluate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="the test split (.npz)")
    parser.add_argument("--model", type=Path, required=True, help="trained model (.keras)")
    parser.add_argument("--metrics", type=Path, required=True, help="test metrics (JSON)")
    parser.add_argument("--predictions", type=Path, required=True, help="per-image CSV")
    parser.add_argument("--classes", type=Path, required=True, help="per-class scores (JSON)")
    parser.add_argument("--confused", type=Path, required=True, help="confused pairs (JSON)")
    args = parser.parse_args()

    test = load_split(args.data)

    # TensorFlow takes seconds to import: only after the test split has been checked.
    filter_tensorflow_noise()
    from fmnist.model import load_model, predict_probabilities

    probabilities = predict_probabilities(load_model(args.model), test.images)
    metrics = classification_metrics(test.labels, probabilities)
    predicted = probabilities.argmax(1)
    names = pd.Series(CLASS_NAMES)
    predictions = pd.DataFrame(
        {
            "actual": names[test.labels].to_numpy(),
            "predicted": names[predicted].to_numpy(),
            # Label numbers, by which DVC's confusion matrix orders its rows and columns.
            "actual_label": test.labels,
            "predicted_label": predicted,
            # The model's confidence in its answer: the report shows its surest mistakes.
            "probability": probabilities.max(1).round(4),
        }
    )
    write_text(args.predictions, predictions.to_csv(index_label="index", lineterminator="\n"))
    write_json(args.classes, class_scores(test.labels, predicted))
    write_json(args.confused, confused_pairs(confusion(test.labels, predicted)))
    write_json(args.metrics, metrics)
    log.info(
        "test accuracy %.4f, loss %.4f on %s images",
        metrics["accuracy"],
        metrics["loss"],
        f"{len(test.labels):,}",
    )


if __name__ == "__main__":
    run_stage("evaluate", main)
    exit_now()
