"""Every shell block a user copies from README.md and docs/*.md runs as written, on the small
synthetic pipeline: each document's blocks in order, in a copy of the baseline repository, as a
reader going through it would. A block marked ``<!-- skip: REASON -->`` is skipped only where
the reason is the real data or a network. Three documents' blocks run in the tests that check
what they promise: docs/sharing.md's against an S3 server (test_sharing.py), docs/pipeline.md's
run-cache (test_experiments.py) and docs/reviewing.md's review (test_review.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPOSITORY_ROOT
from tests.helpers import copy_workspace, dvc, git, run_block, shell_blocks

RUN_ELSEWHERE = ("docs/sharing.md", "docs/pipeline.md", "docs/reviewing.md")
DOCUMENTS = [
    "README.md",
    *(f"docs/{path.name}" for path in sorted(REPOSITORY_ROOT.glob("docs/*.md"))),
]


def test_only_blocks_that_need_the_real_data_or_a_network_are_skipped() -> None:
    reasons = [skip for document in DOCUMENTS for skip, _ in shell_blocks(document) if skip]

    assert reasons, "no skipped block: has the marker's spelling changed?"
    for reason in reasons:
        assert "real data" in reason or "network" in reason, reason


def write_pictures(repository: Path) -> None:
    """coat.png and sneaker.png, two of the synthetic test images as pictures."""
    from fmnist.data import load_split

    test = load_split(repository / "data/split/test.npz")
    for name, index in (("coat.png", 0), ("sneaker.png", 1)):
        Image.fromarray(np.asarray(test.images[index])).save(repository / name)


@pytest.mark.slow
@pytest.mark.parametrize(
    "document", [d for d in DOCUMENTS if d not in RUN_ELSEWHERE and shell_blocks(d)]
)
def test_every_shell_block_runs_as_written(
    document: str, baseline_repository: Path, tmp_path: Path
) -> None:
    repository = copy_workspace(baseline_repository, tmp_path / "repository")
    (repository / ".venv").symlink_to(Path(sys.executable).parent.parent)  # git-ignored
    write_pictures(repository)

    for number, (skip, script) in enumerate(shell_blocks(document), start=1):
        if skip:
            continue
        result = run_block(script, repository, check=False)
        assert result.returncode == 0, (
            f"{document}, block {number} failed:\n{script}\n{result.stdout[-3000:]}"
            f"\n{result.stderr[-3000:]}"
        )
    # A document leaves its reader with a clean workspace: nothing half run, nothing unstaged.
    assert dvc("status", cwd=repository).stdout.strip() == "Data and pipelines are up to date."
    assert git("status", "--porcelain", "--untracked-files=no", cwd=repository) == ""
