"""Fetch stage: put the data set's files, decompressed and verified, in ``--out``."""

from __future__ import annotations

import argparse
from pathlib import Path

from fmnist.cli import run_stage
from fmnist.fetch import fetch_dataset
from fmnist.params import load_params
from stages import exit_now


def main() -> None:
    """Fetch the data set into the directory given by ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the raw files")
    arguments = parser.parse_args()
    params = load_params().fetch
    fetch_dataset(params.sources, arguments.out, timeout=params.timeout, attempts=params.attempts)


if __name__ == "__main__":
    run_stage("fetch", main)
    exit_now()
