"""Train the dense network on the train split, validating on the validation split."""

import argparse
import logging
from pathlib import Path

from fmnist.cli import run_stage
from fmnist.data import load_split
from fmnist.files import atomic_directory, write_json
from fmnist.params import load_params
from stages import exit_now

log = logging.getLogger("train")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="directory of the splits")
    parser.add_argument("--model", type=Path, required=True, help="trained model (.keras)")
    parser.add_argument("--metrics", type=Path, required=True, help="last-epoch metrics (JSON)")
    parser.add_argument("--live", type=Path, required=True, help="dvclive per-epoch logs")
    args = parser.parse_args()
    params = load_params()
    train, val = load_split(args.data / "train.npz"), load_split(args.data / "val.npz")

    # TensorFlow takes seconds to import: only after the params and data have been checked,
    # so that a bad value fails at once.
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    from fmnist.model import kept_epoch, save_model, seed_everything, train_model

    seed_everything(params.seed)
    # Everything is written to temporary places first and moved into place only after
    # training succeeded, so a failed or interrupted run leaves the previous results intact.
    with atomic_directory(args.live) as live_dir:
        with Live(str(live_dir), save_dvc_exp=False, dvcyaml=None) as live:
            model, history = train_model(params.train, train, val, [DVCLiveCallback(live=live)])
        save_model(model, args.model)
    epoch = kept_epoch(history, params.train)
    kept = {name: round(float(values[epoch - 1]), 4) for name, values in history.items()}
    write_json(
        args.metrics,
        {
            "epochs": len(history["loss"]),
            "kept_epoch": epoch,
            "train_loss": kept["loss"],
            "train_accuracy": kept["accuracy"],
            "val_loss": kept["val_loss"],
            "val_accuracy": kept["val_accuracy"],
        },
    )
    log.info(
        "validation accuracy %.4f (epoch %d of %d)",
        kept["val_accuracy"],
        epoch,
        len(history["loss"]),
    )


if __name__ == "__main__":
    run_stage("train", main)
    exit_now()
