"""Decode the raw IDX files into compact uint8 arrays, a data summary and a sample grid."""

import argparse
import logging
from pathlib import Path

from fmnist.cli import run_stage
from fmnist.data import Split, save_split, summarize
from fmnist.dataset import CLASS_NAMES, IMAGE_SHAPE, NAME, RAW_FILES
from fmnist.files import empty_directory, write_json
from fmnist.idx import read_split
from fmnist.plots import plot_image_grid, save_figure
from stages import exit_now

log = logging.getLogger("preprocess")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raw", type=Path, required=True, help="directory of the IDX files")
    parser.add_argument("--out", type=Path, required=True, help="directory for <split>.npz")
    parser.add_argument("--summary", type=Path, required=True, help="data summary (JSON)")
    parser.add_argument("--samples", type=Path, required=True, help="sample image grid (PNG)")
    args = parser.parse_args()

    splits = {
        name: Split(*read_split(args.raw / images, args.raw / labels))
        for name, (images, labels) in RAW_FILES.items()
    }
    out = empty_directory(args.out)
    for name, split in splits.items():
        save_split(out / f"{name}.npz", split)
        log.info("%s: %s images of %s", name, f"{len(split.labels):,}", IMAGE_SHAPE)
    write_json(args.summary, {name: summarize(split) for name, split in splits.items()})

    first = splits["train"]
    grid = plot_image_grid(
        first.images[:25],
        [CLASS_NAMES[label] for label in first.labels[:25]],
        title=f"{NAME}: the first 25 training images",
    )
    save_figure(grid, args.samples)


if __name__ == "__main__":
    run_stage("preprocess", main)
    exit_now()
