"""Sharing results through a DVC remote on an S3-compatible server, as docs/sharing.md shows it.

moto's S3 server runs on 127.0.0.1 for the module. Each test starts from the session's synthetic
baseline repository as a bare git ``origin`` and gives it its own prefix in one bucket; the
document's own command blocks run against it, with its placeholders filled in.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import REPOSITORY_ROOT
from tests.helpers import dvc, git, make, run, run_block, stages_run

pytestmark = pytest.mark.slow

BUCKET = "fashion-mnist"
ARTIFACT = "fashion-mnist-classifier"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
SERVER_START_SECONDS = 30


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """The URL of an S3-compatible server on 127.0.0.1 holding an empty bucket ``BUCKET``."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            try:
                # Its first answer can take seconds on a busy machine: read timeout 30 s.
                requests.put(f"{endpoint}/{BUCKET}", timeout=(2, 30)).raise_for_status()
                break
            except requests.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto's S3 server did not start on {endpoint}")
                time.sleep(0.2)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The remote's credentials, in the environment as docs/sharing.md asks (never in git)."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


def sharing_block(marker: str, **placeholders: str) -> str:
    """The shell block after ``<!-- sharing:MARKER -->`` in docs/sharing.md, placeholders filled."""
    document = (REPOSITORY_ROOT / "docs" / "sharing.md").read_text()
    match = re.search(rf"<!-- sharing:{marker} -->\n```bash\n(.*?)```", document, re.DOTALL)
    assert match, f"docs/sharing.md has no sharing:{marker} block"
    script = match.group(1)
    for name, value in placeholders.items():
        script = script.replace(f"<{name}>", value)
    assert "<" not in re.sub(r"#.*", "", script), f"a placeholder is left in:\n{script}"
    return script


def test_every_block_of_the_document_is_run_here() -> None:
    document = (REPOSITORY_ROOT / "docs" / "sharing.md").read_text()
    markers = re.findall(r"<!-- sharing:(\w+) -->\n```bash", document)
    assert markers == ["setup", "push", "clone", "exps", "artifact"]
    assert document.count("```bash") == len(markers)


def run_script(script: str, cwd: Path) -> str:
    """Run a block of the document as a user would; its output."""
    result = run_block(script, cwd)
    return result.stdout + result.stderr


def timed(label: str, started: float) -> None:
    print(f"{label}: {time.perf_counter() - started:.1f} s")  # shown with `pytest -s`


@pytest.fixture
def origin(tmp_path: Path, baseline_repository: Path) -> Path:
    """A bare git repository holding the baseline's history, as a team's server would."""
    bare = tmp_path / "origin.git"
    run(["git", "clone", "-q", "--bare", str(baseline_repository), str(bare)], tmp_path)
    return bare


@pytest.fixture
def shared_origin(tmp_path: Path, origin: Path, s3_endpoint: str, request) -> tuple[Path, Path]:
    """``origin`` with the document's remote set-up committed, and the author's clone of it."""
    author = tmp_path / "author"
    run(["git", "clone", "-q", str(origin), str(author)], tmp_path)
    for key, value in (("user.email", "author@example.com"), ("user.name", "Author")):
        git("config", key, value, cwd=author)
    bucket = f"{BUCKET}/{request.node.name}"
    run_script(sharing_block("setup", bucket=bucket, endpoint=s3_endpoint), author)
    git("push", "-q", "origin", "main", cwd=author)
    return origin, author


def checkout_outputs(source: Path, author: Path) -> None:
    """Give ``author``'s clone the outputs its commit records, from the baseline's cache."""
    run(["cp", "-a", str(source / ".dvc" / "cache"), str(author / ".dvc" / "cache")], author)
    dvc("checkout", cwd=author)


@pytest.fixture
def pushed_origin(baseline_repository: Path, shared_origin: tuple[Path, Path]) -> tuple[Path, Path]:
    """``shared_origin`` whose author has the baseline's outputs and pushed them to the remote."""
    origin, author = shared_origin
    checkout_outputs(baseline_repository, author)
    dvc("push", cwd=author)
    return origin, author


def output_files(root: Path) -> dict[str, bytes]:
    """Every file of the DVC-cached outputs under ``root``, by relative path."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for folder in ("data", "models", "reports")
        for path in sorted((root / folder).rglob("*"))
        if path.is_file()
    }


def test_a_clone_pulls_the_pushed_results_and_has_nothing_to_rerun(
    tmp_path: Path, baseline_repository: Path, shared_origin: tuple[Path, Path]
) -> None:
    origin, author = shared_origin
    checkout_outputs(baseline_repository, author)
    one_epoch = dvc("exp", "run", "-S", "train.epochs=1", cwd=author)
    one_epoch_metrics = (author / "metrics/evaluate.json").read_bytes()
    make("reset", author)

    pushed = run_script(sharing_block("push"), author)
    cloned = run_script(sharing_block("clone", **{"repository URL": str(origin)}), tmp_path)

    colleague = tmp_path / "fashion-mnist"
    assert {"train", "evaluate"} <= stages_run(one_epoch.stdout)
    assert re.search(r"\d+ files? pushed", pushed)
    assert not stages_run(cloned)  # `make repro` pulled every result instead of running
    assert git("status", "--porcelain", cwd=colleague) == ""
    assert "Data and pipelines are up to date." in dvc("status", cwd=colleague).stdout
    assert output_files(colleague) == output_files(author)
    assert len(output_files(colleague)) >= 8  # raw, prepared, split, model, summaries

    restored = dvc("exp", "run", "--pull", "-S", "train.epochs=1", cwd=colleague)
    assert not stages_run(restored.stdout) & {"train", "evaluate"}
    assert "Stage 'train' is cached - skipping run" in restored.stdout
    assert (colleague / "metrics/evaluate.json").read_bytes() == one_epoch_metrics


def test_results_never_pushed_are_named_with_the_fix(
    tmp_path: Path, shared_origin: tuple[Path, Path]
) -> None:
    origin, _ = shared_origin  # the remote is set up, but nothing was pushed to it
    colleague = tmp_path / "colleague"
    run(["git", "clone", "-q", str(origin), str(colleague)], tmp_path)
    dvc("pull", "--allow-missing", cwd=colleague, check=False)

    result = run([sys.executable, "-m", "tools.staleness", "--pulled"], colleague, check=False)

    assert result.returncode == 1
    assert "not on the DVC remote: train: models/model.keras" in result.stderr
    assert "not on the DVC remote: split: data/split" in result.stderr
    assert "`dvc push`" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_experiment_travels_through_origin_and_the_remote(
    tmp_path: Path, pushed_origin: tuple[Path, Path]
) -> None:
    _, author = pushed_origin

    output = run_script(sharing_block("exps"), author)

    assert "lr-001" in output  # dvc exp show lists the experiment pulled back from origin
    assert "learning_rate: 0.001" in (author / "params.yaml").read_text()
    assert (author / "models/model.keras").is_file()
    shown = json.loads(dvc("exp", "show", "--json", cwd=author).stdout)
    names = {run.get("name") for entry in shown for run in entry.get("experiments") or []}
    assert "lr-001" in names


def test_the_model_artifact_downloads_through_the_remote(
    tmp_path: Path, pushed_origin: tuple[Path, Path]
) -> None:
    origin, author = pushed_origin
    downloads = tmp_path / "downloads"
    downloads.mkdir()

    started = time.perf_counter()
    commands = sharing_block("artifact", **{"repository URL": str(origin)})
    tag, *gets = commands.strip().splitlines()
    run_script(tag, author)
    run_script("\n".join(gets), downloads)
    timed("tag + dvc artifacts get (twice)", started)

    model = (author / "models/model.keras").read_bytes()
    downloaded = sorted(downloads.iterdir())
    assert [path.name for path in downloaded] == ["model-v1.0.0.keras", "model.keras"]
    assert all(path.read_bytes() == model for path in downloaded)
