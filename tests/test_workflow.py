"""The pull-request workflow parses and names only commands this repository has."""

from __future__ import annotations

import importlib.util
import re
import shlex
from typing import Any

import pytest
import yaml

from tests.conftest import REPOSITORY_ROOT

WORKFLOW_PATH = REPOSITORY_ROOT / ".github/workflows/pull-request.yml"
MAKEFILE = (REPOSITORY_ROOT / "Makefile").read_text()


def load_workflow() -> dict[Any, Any]:
    return yaml.safe_load(WORKFLOW_PATH.read_text())


def steps() -> list[dict[str, Any]]:
    return [step for job in load_workflow()["jobs"].values() for step in job["steps"]]


def commands() -> list[str]:
    """Each line of each step's `run` script, with continuation lines joined."""
    lines = []
    for step in steps():
        script = step.get("run", "").replace("\\\n", " ")
        lines += [line.strip() for line in script.splitlines() if line.strip()]
    return lines


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9_.-]+):(?!=)", MAKEFILE, flags=re.MULTILINE))


def makefile_recipe(target: str) -> list[str]:
    """The command lines of a Makefile target."""
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n?)*)", MAKEFILE, flags=re.MULTILINE)
    return [line.strip() for line in match.group(1).splitlines()] if match else []


def make_targets(line: str) -> list[str]:
    """The targets of a `make` command line (not its VARIABLE=value assignments or options)."""
    words = shlex.split(line.replace("${{", "'${{").replace("}}", "}}'"))
    if "make" not in words:
        return []
    following = words[words.index("make") + 1 :]
    return [word for word in following if "=" not in word and not word.startswith("-")]


def python_modules(line: str) -> list[str]:
    return re.findall(r"\bpython3? -m ([\w.]+)", line)


def test_the_workflow_parses_and_runs_on_pull_requests() -> None:
    workflow = load_workflow()
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "pull_request" in triggers
    assert workflow["permissions"]["pull-requests"] == "write"


def test_every_make_target_it_runs_exists() -> None:
    named = [target for line in commands() for target in make_targets(line)]
    assert {"check-lock", "repro", "review"} <= set(named)
    assert set(named) <= makefile_targets()


def test_every_python_module_it_runs_exists() -> None:
    lines = commands()
    for line in list(lines):
        for target in make_targets(line):
            lines += makefile_recipe(target)
    modules = {module for line in lines for module in python_modules(line)}
    assert {"fmnist.staleness", "fmnist.review"} <= modules
    for module in modules:
        assert importlib.util.find_spec(module) is not None, module


def test_checkout_has_the_base_branch_history_and_python_is_pinned() -> None:
    uses = {step["uses"].split("@")[0]: step.get("with", {}) for step in steps() if "uses" in step}
    assert uses["actions/checkout"]["fetch-depth"] == 0
    python = uses["actions/setup-python"]
    assert str(python["python-version"]) == "3.11"
    assert python["cache"] == "pip"
    assert "requirements.txt" in python["cache-dependency-path"]


@pytest.mark.parametrize(
    "earlier, later",
    [
        ("dataset-fashion-mnist", "make repro"),
        ("make check-lock", "make repro"),
        ("make repro", "git diff --exit-code"),
        ("git diff --exit-code", "make review"),
        ("make review", "cml comment update"),
    ],
)
def test_steps_run_in_order(earlier: str, later: str) -> None:
    scripts = [step.get("run", "") for step in steps()]
    position = {
        text: next(index for index, script in enumerate(scripts) if text in script)
        for text in (earlier, later)
    }
    assert position[earlier] < position[later]


def test_committed_results_are_compared_with_the_run() -> None:
    [line] = [line for line in commands() if "git diff --exit-code" in line]
    assert "dvc.lock" in line
    assert "metrics/" in line


def test_the_comment_is_updated_not_added() -> None:
    [line] = [line for line in commands() if line.startswith("cml comment")]
    assert "cml comment update" in line
    assert "--publish" in line
