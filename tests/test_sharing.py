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
from tests.helpers import dvc, git, run
from tools.workspace import stages_run

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
                requests.put(f"{endpoint}/{BUCKET}", timeout=2).raise_for_status()
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


def readme_block(marker: str, **placeholders: str) -> str:
    """The shell block after ``<!-- sharing:MARKER -->`` in docs/sharing.md, placeholders filled.

    Its ``make setup`` line is left out: the tests' own virtual environment is already first on
    PATH, and a new one would be installed from the package index. ``make push`` becomes its
    recipe in the Makefile, which the temporary repositories do not hold.
    """
    readme = (REPOSITORY_ROOT / "docs" / "sharing.md").read_text()
    match = re.search(rf"<!-- sharing:{marker} -->\n```bash\n(.*?)```", readme, flags=re.DOTALL)
    assert match, f"docs/sharing.md has no sharing:{marker} block"
    lines = []
    for line in match.group(1).splitlines():
        if line.startswith("make push"):
            lines += makefile_recipe("push")
        elif not line.startswith("make setup"):
            lines.append(line)
    script = "\n".join(lines)
    for name, value in placeholders.items():
        script = script.replace(f"<{name}>", value)
    assert "<" not in re.sub(r"#.*", "", script), f"a placeholder is left in:\n{script}"
    return script


def makefile_recipe(target: str) -> list[str]:
    """The command lines of a target of this repository's Makefile."""
    makefile = (REPOSITORY_ROOT / "Makefile").read_text()
    match = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE)
    assert match, f"the Makefile has no target {target}"
    return [line.strip() for line in match.group(1).splitlines()]


def run_script(script: str, cwd: Path) -> str:
    """Run a block of the document with bash, stopping at the first failing command; its output."""
    result = run(["bash", "-euo", "pipefail", "-c", script], cwd)
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
    run_script(readme_block("setup", bucket=bucket, endpoint=s3_endpoint), author)
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
    git("checkout", "--", "params.yaml", "dvc.lock", "metrics", "plots", "reports", cwd=author)
    dvc("checkout", cwd=author)

    started = time.perf_counter()
    pushed = run_script(readme_block("push"), author)
    timed("make push + git push", started)
    started = time.perf_counter()
    cloned = run_script(readme_block("clone", **{"repository URL": str(origin)}), tmp_path)
    timed("git clone + dvc pull --run-cache + dvc status + dvc repro", started)

    colleague = tmp_path / "fashion-mnist"
    assert {"train", "evaluate"} <= stages_run(one_epoch.stdout)
    assert re.search(r"\d+ files? pushed", pushed)
    assert "Data and pipelines are up to date." in cloned
    assert not stages_run(cloned)
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


def experiment_metrics(show_json: str) -> dict[str, dict]:
    """Each named experiment of ``dvc exp show --json``: its evaluate metrics."""
    metrics = {}
    for commit in json.loads(show_json):
        for experiment in commit.get("experiments") or []:
            for revision in experiment.get("revs") or []:
                data = revision.get("data") or {}
                scores = (data.get("metrics") or {}).get("metrics/evaluate.json", {}).get("data")
                if revision.get("name") and scores:
                    metrics[revision["name"]] = scores
    return metrics


def test_two_workers_share_a_sweep_through_origin_and_the_remote(
    tmp_path: Path, pushed_origin: tuple[Path, Path]
) -> None:
    origin, author = pushed_origin
    sweep = "train.epochs=1 train.hidden_units=[8],[16]"
    names = json.loads(
        run([sys.executable, "-m", "tools.study", "plan", "--sweep", sweep], author).stdout
    )
    assert names == ["sweep-1", "sweep-2"]

    models = {}
    for name in names:  # each worker: a fresh clone that runs its share and pushes it
        worker = tmp_path / f"worker-{name}"
        run(["git", "clone", "-q", str(origin), str(worker)], tmp_path)
        dvc("pull", cwd=worker)
        exp = [sys.executable, "-m", "tools.study", "exp", name, "--sweep", sweep]
        assert {"train", "evaluate"} <= stages_run(run(exp, worker).stdout)
        models[name] = (worker / "models/model.keras").read_bytes()
        started = time.perf_counter()
        dvc("exp", "push", "--run-cache", "origin", name, cwd=worker)
        timed(f"dvc exp push {name}", started)

    reader = tmp_path / "reader"
    run(["git", "clone", "-q", str(origin), str(reader)], tmp_path)
    started = time.perf_counter()
    dvc("exp", "pull", "origin", cwd=reader)
    timed("dvc exp pull (both)", started)
    shown = experiment_metrics(dvc("exp", "show", "--json", cwd=reader).stdout)

    assert set(names) <= set(shown)
    assert all(0 <= shown[name]["accuracy"] <= 1 for name in names)
    dvc("exp", "apply", "sweep-2", cwd=reader)
    dvc("pull", cwd=reader)
    assert (reader / "models/model.keras").read_bytes() == models["sweep-2"]
    assert "hidden_units:\n  - 16" in (reader / "params.yaml").read_text()


def test_the_model_artifact_downloads_through_the_remote(
    tmp_path: Path, pushed_origin: tuple[Path, Path]
) -> None:
    origin, author = pushed_origin
    downloads = tmp_path / "downloads"
    downloads.mkdir()

    started = time.perf_counter()
    commands = readme_block("artifact", **{"repository URL": str(origin)})
    tag, *gets = commands.strip().splitlines()
    run_script(tag, author)
    run_script("\n".join(gets), downloads)
    timed("tag + dvc artifacts get (twice)", started)

    model = (author / "models/model.keras").read_bytes()
    downloaded = sorted(downloads.iterdir())
    assert [path.name for path in downloaded] == ["model-v1.0.0.keras", "model.keras"]
    assert all(path.read_bytes() == model for path in downloaded)
