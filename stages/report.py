"""Write the markdown report with its figures: curves, confusion matrix, misclassified images."""

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from fmnist import CLASS_NAMES
from fmnist.cli import run_stage
from fmnist.data import load_split
from fmnist.evaluation import confusion
from fmnist.files import write_text
from fmnist.params import load_params
from fmnist.plots import plot_confusion, plot_curves, plot_image_grid, save_figure
from fmnist.report import read_history, render_report
from stages import exit_now

log = logging.getLogger("report")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--test", type=Path, required=True, help="the test split (.npz)")
    parser.add_argument("--predictions", type=Path, required=True, help="per-image CSV")
    parser.add_argument("--classes", type=Path, required=True, help="per-class scores (JSON)")
    parser.add_argument("--confused", type=Path, required=True, help="confused pairs (JSON)")
    parser.add_argument("--test-metrics", type=Path, required=True)
    parser.add_argument("--split-counts", type=Path, required=True, help="class counts (JSON)")
    parser.add_argument("--live", type=Path, required=True, help="the train stage's dvclive")
    parser.add_argument("--figures", type=Path, required=True, help="directory for the PNGs")
    parser.add_argument("--out", type=Path, required=True, help="the report (markdown)")
    args = parser.parse_args()
    params = load_params()

    test = load_split(args.test)
    predictions = pd.read_csv(args.predictions)
    index = {name: number for number, name in enumerate(CLASS_NAMES)}
    actual = predictions["actual"].map(index).to_numpy()
    predicted = predictions["predicted"].map(index).to_numpy()
    matrix = confusion(actual, predicted)

    history = read_history(args.live)
    wrong = np.flatnonzero(actual != predicted)[: params.report.misclassified]
    figures = {
        "curves": plot_curves(history),
        "confusion": plot_confusion(matrix, CLASS_NAMES),
        "misclassified": plot_image_grid(
            test.images[wrong],
            [f"{CLASS_NAMES[actual[i]]}\n→ {CLASS_NAMES[predicted[i]]}" for i in wrong],
        ),
    }
    links = {}
    for name, figure in figures.items():
        path = args.figures / f"{name}.png"
        save_figure(figure, path)
        links[name] = Path(os.path.relpath(path, args.out.parent)).as_posix()

    markdown = render_report(
        params,
        history,
        json.loads((args.live / "metrics.json").read_text())["kept_epoch"],
        json.loads(args.test_metrics.read_text()),
        json.loads(args.classes.read_text()),
        json.loads(args.confused.read_text()),
        json.loads(args.split_counts.read_text()),
        links,
    )
    write_text(args.out, markdown)
    log.info("wrote %s with %d figures", args.out, len(figures))


if __name__ == "__main__":
    run_stage("report", main)
    exit_now()
