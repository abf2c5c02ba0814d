"""Write the markdown report with its figures (curves, confusion matrix, misclassified images)
and the model card."""

import argparse
import logging
import os
from pathlib import Path

import numpy as np

from fmnist.cli import run_stage
from fmnist.data import load_split
from fmnist.dataset import CLASS_NAMES
from fmnist.evaluation import confusion
from fmnist.files import read_json, refuse_links_out, write_text
from fmnist.params import load_params
from fmnist.plots import plot_confusion, plot_curves, plot_image_grid, save_figure
from fmnist.report import read_history, read_kept_epoch, read_predictions, render_checked
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
    parser.add_argument("--card", type=Path, required=True, help="the model card (markdown)")
    args = parser.parse_args()
    params = load_params()
    refuse_links_out(args.figures)
    refuse_links_out(args.out)
    refuse_links_out(args.card)

    # Every input is read and checked before the first figure is written, so that a damaged one
    # fails the stage with the earlier figures untouched.
    test = load_split(args.test)
    actual, predicted, probability = read_predictions(args.predictions, len(test.labels))
    history = read_history(args.live)
    kept_epoch = read_kept_epoch(args.live / "metrics.json", len(history))
    inputs = {
        path: read_json(path)
        for path in (args.test_metrics, args.classes, args.confused, args.split_counts)
    }

    # The surest mistakes first (ties in test-set order): the ones worth a look.
    mistakes = np.flatnonzero(actual != predicted)
    wrong = mistakes[np.argsort(-probability[mistakes], kind="stable")][
        : params.report.misclassified
    ]
    figures = {
        "curves": plot_curves(history),
        "confusion": plot_confusion(confusion(actual, predicted), CLASS_NAMES),
        "misclassified": plot_image_grid(
            test.images[wrong],
            [
                f"{CLASS_NAMES[actual[i]]}\n→ {CLASS_NAMES[predicted[i]]} {probability[i]:.1%}"
                for i in wrong
            ],
        ),
    }
    paths = {name: args.figures / f"{name}.png" for name in figures}
    links = {
        name: Path(os.path.relpath(path, args.out.parent)).as_posix()
        for name, path in paths.items()
    }
    markdown, card = render_checked(params, history, kept_epoch, inputs, links)
    for name, figure in figures.items():
        save_figure(figure, paths[name])
    write_text(args.out, markdown)
    write_text(args.card, card)
    log.info("wrote %s with %d figures, and %s", args.out, len(figures), args.card)


if __name__ == "__main__":
    run_stage("report", main)
    exit_now()
