"""Train the network on the train split, validating on the validation split.

dvclive writes the per-epoch curves and the summary into ``--live`` as training goes, so DVC's
plots (and VS Code's DVC extension, DVC Studio) show them while the model trains.
"""

import argparse
import logging
from pathlib import Path

from fmnist.cli import run_stage
from fmnist.data import load_split
from fmnist.evaluation import DIGITS
from fmnist.files import refuse_links_out
from fmnist.params import compute_precision, describe_memory, load_params
from stages import exit_now, filter_tensorflow_noise

log = logging.getLogger("train")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="directory of the splits")
    parser.add_argument("--model", type=Path, required=True, help="trained model (.keras)")
    parser.add_argument("--live", type=Path, required=True, help="dvclive directory")
    args = parser.parse_args()
    params = load_params()
    log.info("%s", describe_memory(params.train))
    precision = compute_precision(params.train.precision)
    log.info("computing in %s (train.precision: %s)", precision, params.train.precision)
    refuse_links_out(args.live)
    refuse_links_out(args.model)
    train, val = load_split(args.data / "train.npz"), load_split(args.data / "val.npz")

    # TensorFlow takes seconds to import: only after the params and data have been checked,
    # so that a bad value fails at once.
    filter_tensorflow_noise()
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    from fmnist.model import kept_epoch, save_model, seed_everything, train_model

    seed_everything(params.seed)
    with Live(str(args.live), save_dvc_exp=False, dvcyaml=None) as live:
        # dvclive counts steps from 0; Keras, the report and people count epochs from 1. The
        # curves start at step 1 so that DVC's plots and the report name each epoch alike.
        live.step = 1
        model, history = train_model(params.train, train, val, [DVCLiveCallback(live=live)])
        epoch = kept_epoch(history, params.train)
        # The summary is what `dvc exp show` lists: the validation scores of the model that is
        # saved (with early stopping and restore_best, an earlier epoch than the last), that
        # epoch, and dvclive's last step. The per-epoch curves keep everything else.
        live.summary = {
            "eval": {
                name: round(float(history[f"val_{name}"][epoch - 1]), DIGITS)
                for name in ("loss", "accuracy")
            },
            "kept_epoch": epoch,
            "dtype": precision,  # what train.precision came to on this CPU
            "step": len(history["loss"]),  # dvclive's last step: the last epoch
        }
        save_model(model, args.model)
    log.info(
        "validation accuracy %.4f (epoch %d of %d)",
        history["val_accuracy"][epoch - 1],
        epoch,
        len(history["loss"]),
    )


if __name__ == "__main__":
    run_stage("train", main)
    exit_now()
