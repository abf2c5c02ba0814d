"""Split the images into train, validation and test sets as params.yaml's split section says."""

import argparse
import logging
from pathlib import Path

from fmnist.cli import run_stage
from fmnist.data import class_counts, load_split, save_split, split_data
from fmnist.files import empty_directory, write_json
from fmnist.params import load_params
from stages import exit_now

log = logging.getLogger("split")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", type=Path, required=True, help="train.npz and test.npz")
    parser.add_argument("--out", type=Path, required=True, help="directory for the splits")
    parser.add_argument("--counts", type=Path, required=True, help="class counts (JSON)")
    args = parser.parse_args()
    params = load_params()

    train, test = load_split(args.prepared / "train.npz"), load_split(args.prepared / "test.npz")
    splits = split_data(train, test, params.split, params.seed)
    out = empty_directory(args.out)
    for name, split in splits.items():
        save_split(out / f"{name}.npz", split)
    write_json(args.counts, {name: class_counts(split.labels) for name, split in splits.items()})
    log.info(
        "%s: %s",
        params.split.method,
        " / ".join(f"{len(split.labels):,} {name}" for name, split in splits.items()),
    )


if __name__ == "__main__":
    run_stage("split", main)
    exit_now()
