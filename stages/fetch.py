"""Fetch stage: put the four Fashion-MNIST files, decompressed and verified, in ``--out``.

Run from the repository root:
``python -m stages.fetch --checksums fmnist/fashion-mnist.sha256 --out data/raw``. The sources,
the timeout and the number of attempts come from the ``fetch`` section of params.yaml.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fmnist.cli import run_stage
from fmnist.fetch import fetch_dataset, read_checksums
from fmnist.params import load_params
from stages import exit_now


def main() -> None:
    """Fetch the data set into the directory given by ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checksums", type=Path, required=True, help="SHA-256 of each file (sha256sum format)"
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the raw files")
    arguments = parser.parse_args()
    params = load_params()
    checksums = read_checksums(arguments.checksums)
    fetch_dataset(
        params.fetch.sources,
        arguments.out,
        checksums,
        timeout=params.fetch.timeout,
        attempts=params.fetch.attempts,
    )


if __name__ == "__main__":
    run_stage("fetch", main)
    exit_now()
