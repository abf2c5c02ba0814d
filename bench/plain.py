"""The pipeline's work as one plain Python process: the baseline of the pipeline-overhead figure.

Reads the four IDX files, splits, trains and evaluates exactly as the stages do (the same
package functions, params and seed), without DVC, intermediate files, plots or a report.
Prints the test metrics as JSON on its last line: the same numbers as metrics/evaluate.json.

    python -m bench.plain --params params.yaml
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from fmnist.evaluation import classification_metrics
from fmnist.model import predict_probabilities, seed_everything, train_model
from fmnist.params import load_params
from stages import exit_now
from tools.workspace import source_splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, required=True, help="the pipeline's params.yaml")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="plain: %(message)s")
    params = load_params(args.params)

    splits = source_splits(params)  # reads the IDX files, as fetch and preprocess do
    seed_everything(params.seed)
    model, _ = train_model(params.train, splits["train"], splits["val"])
    test = splits["test"]
    metrics = classification_metrics(test.labels, predict_probabilities(model, test.images))
    print(json.dumps({"accuracy": metrics["accuracy"], "loss": metrics["loss"]}))


if __name__ == "__main__":
    main()
    exit_now()  # as the stages do: the comparison is of the work, not of interpreter teardown
