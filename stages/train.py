"""Train the dense network on the train split, validating on the validation split."""

import argparse
import logging
from pathlib import Path

from dvclive import Live
from dvclive.keras import DVCLiveCallback

from fmnist.cli import run_stage
from fmnist.data import load_split
from fmnist.files import atomic_directory, atomic_path, write_json
from fmnist.model import kept_epoch, seed_everything, train_model
from fmnist.params import load_params

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
    seed_everything(params.seed)
    # Everything is written to temporary places first and moved into place only after
    # training succeeded, so a failed or interrupted run leaves the previous results intact.
    with atomic_directory(args.live) as live_dir:
        with Live(str(live_dir), save_dvc_exp=False, dvcyaml=None) as live:
            model, history = train_model(params.train, train, val, [DVCLiveCallback(live=live)])
        with atomic_path(args.model) as model_path:
            model.save(model_path)
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
