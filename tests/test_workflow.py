"""The GitHub workflows parse, name only commands this repository has, and pass zizmor."""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPOSITORY_ROOT

WORKFLOWS_DIR = REPOSITORY_ROOT / ".github/workflows"
WORKFLOW_PATHS = sorted(WORKFLOWS_DIR.glob("*.yml"))
MAKEFILE = (REPOSITORY_ROOT / "Makefile").read_text()

# What each workflow must run at least (through scripts it calls and Makefile recipes).
EXPECTED_TARGETS = {
    "pull-request.yml": {"setup", "check-lock", "check-pushed", "review", "check-retrain"},
    "sweep.yml": {"setup"},
    "ci.yml": {"check-lock", "test"},
}
EXPECTED_MODULES = {
    "pull-request.yml": {"tools.staleness", "tools.review"},
    "sweep.yml": {"tools.study", "tools.run_cache"},
    "ci.yml": {"tools.staleness", "pytest"},
}
# Commands that train: the review of a pull request runs none of them.
TRAINING = re.compile(r"\b(dvc repro|dvc exp run|make (repro|exp|study|check-retrain))\b")
SHA_PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")

by_name = pytest.mark.parametrize(
    "path", WORKFLOW_PATHS, ids=[path.name for path in WORKFLOW_PATHS]
)


def load(name: str | Path) -> dict[Any, Any]:
    return yaml.safe_load((WORKFLOWS_DIR / name).read_text())


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    return workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true


def steps(workflow: dict[Any, Any], job: str | None = None) -> list[dict[str, Any]]:
    jobs = [workflow["jobs"][job]] if job else workflow["jobs"].values()
    return [step for each in jobs for step in each.get("steps", [])]


def script_lines(script: str) -> list[str]:
    """The command lines of a shell script, with continuation lines joined, without comments."""
    lines = [line.strip() for line in script.replace("\\\n", " ").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def commands(step_list: list[dict[str, Any]]) -> list[str]:
    """Each command line of the steps' `run` scripts, and of the repository scripts they run."""
    lines = []
    for step in step_list:
        for line in script_lines(step.get("run", "")):
            lines.append(line)
            for script in re.findall(r"(?:^|\s)(\.ci/[\w.-]+)", line):
                lines += script_lines((REPOSITORY_ROOT / script).read_text())
    return lines


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9_.-]+):(?!=)", MAKEFILE, flags=re.MULTILINE))


def makefile_rule(target: str) -> tuple[list[str], list[str]]:
    """The prerequisites and the command lines of a Makefile target."""
    match = re.search(
        rf"^{re.escape(target)}:(?!=)([^\n#]*).*\n((?:\t.*\n?)*)", MAKEFILE, flags=re.MULTILINE
    )
    if not match:
        return [], []
    recipe = match.group(2).replace("\\\n", " ")  # continuation lines joined
    return match.group(1).split(), [line.strip() for line in recipe.splitlines()]


def make_targets(line: str) -> list[str]:
    """The targets of the `make` commands of a line (not VARIABLE=value words or options)."""
    targets = []
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError:  # not a line shlex reads (shell syntax of a Makefile recipe)
        words = line.split()
    separators = {";", "&&", "||", "|", "&"}
    starts = [0] + [index + 1 for index, word in enumerate(words) if word in separators]
    for start in starts:
        command = words[start:]
        command = command[: next((i for i, w in enumerate(command) if w in separators), None)]
        if command[:1] == ["make"]:
            targets += [w for w in command[1:] if "=" not in w and not w.startswith("-")]
    return targets


def with_recipes(lines: list[str]) -> list[str]:
    """The lines, and the recipes of the make targets they run, their prerequisites' too."""
    lines, seen = list(lines), set()
    pending = [target for line in lines for target in make_targets(line)]
    while pending:
        target = pending.pop()
        if target in seen:
            continue
        seen.add(target)
        prerequisites, recipe = makefile_rule(target)
        lines += recipe
        pending += prerequisites + [t for line in recipe for t in make_targets(line)]
    return lines


def python_modules(line: str) -> list[str]:
    return re.findall(r"\bpython3? -m ([\w.]+)", line)


def test_the_three_workflows_are_there() -> None:
    assert {"pull-request.yml", "sweep.yml", "ci.yml"} <= {path.name for path in WORKFLOW_PATHS}


@by_name
def test_the_workflow_parses_and_every_job_is_bounded(path: Path) -> None:
    workflow = load(path)
    assert workflow["name"]
    assert triggers(workflow)
    assert workflow["permissions"] == {}, "each job asks for its own permissions"
    for name, job in workflow["jobs"].items():
        assert job["runs-on"] == "ubuntu-latest", name
        assert job["timeout-minutes"] > 0, name
        assert isinstance(job["permissions"], dict), name
        assert job["permissions"].get("contents") in {"read", "write"}, name
        assert job["steps"], name


@by_name
def test_every_make_target_it_runs_exists(path: Path) -> None:
    named = {target for line in commands(steps(load(path))) for target in make_targets(line)}
    assert EXPECTED_TARGETS.get(path.name, set()) <= named
    assert named <= makefile_targets(), sorted(named - makefile_targets())


@by_name
def test_every_python_module_it_runs_exists(path: Path) -> None:
    lines = with_recipes(commands(steps(load(path))))
    modules = {module for line in lines for module in python_modules(line)}
    assert EXPECTED_MODULES.get(path.name, set()) <= modules
    for module in modules:
        assert importlib.util.find_spec(module) is not None, module


@by_name
def test_every_action_is_pinned_to_a_commit_with_its_version(path: Path) -> None:
    workflow = load(path)
    used = [job["uses"] for job in workflow["jobs"].values() if "uses" in job]
    used += [step["uses"] for step in steps(workflow) if "uses" in step]
    assert used
    for uses in used:
        assert SHA_PINNED.match(uses), uses
    lines = [line for line in path.read_text().splitlines() if re.match(r"\s*(- )?uses:", line)]
    assert len(lines) == len(used)
    for line in lines:
        assert re.search(r"@[0-9a-f]{40}\s+#\s*v\d+(\.\d+)*$", line), line


@by_name
def test_no_run_script_expands_an_expression(path: Path) -> None:
    """Values reach scripts through `env:`, never pasted into the script by GitHub."""
    for step in steps(load(path)):
        assert "${{" not in step.get("run", ""), step.get("name")


@by_name
def test_every_checkout_keeps_no_credentials(path: Path) -> None:
    checkouts = [s for s in steps(load(path)) if s.get("uses", "").startswith("actions/checkout@")]
    assert checkouts
    for step in checkouts:
        assert step.get("with", {}).get("persist-credentials") is False, step.get("name")


@by_name
def test_secrets_are_given_to_steps_only(path: Path) -> None:
    workflow = load(path)
    assert "secrets." not in yaml.safe_dump(workflow.get("env", {}))
    for name, job in workflow["jobs"].items():
        assert "secrets." not in yaml.safe_dump(job.get("env", {})), name


@by_name
def test_python_is_set_up_with_the_pip_cache(path: Path) -> None:
    pythons = [s for s in steps(load(path)) if s.get("uses", "").startswith("actions/setup-python")]
    assert pythons
    for step in pythons:
        assert str(step["with"]["python-version"]) == "3.11"
        assert step["with"]["cache"] == "pip"
        assert "requirements.txt" in step["with"]["cache-dependency-path"]


def test_zizmor_finds_nothing() -> None:
    zizmor = Path(sys.executable).parent / "zizmor"
    executable = str(zizmor) if zizmor.exists() else shutil.which("zizmor")
    assert executable, "zizmor is not installed: make setup installs requirements-dev.txt"
    result = subprocess.run(
        [executable, "--offline", str(WORKFLOWS_DIR)],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# The pull-request review.


def test_the_review_runs_on_pull_requests_and_when_labelled() -> None:
    workflow = load("pull-request.yml")
    assert {"opened", "synchronize", "reopened", "labeled"} <= set(
        triggers(workflow)["pull_request"]["types"]
    )
    assert workflow["jobs"]["review"]["permissions"] == {
        "contents": "read",
        "pull-requests": "write",
    }
    assert workflow["jobs"]["retrain"]["permissions"] == {"contents": "read"}


def test_the_review_does_not_retrain() -> None:
    lines = with_recipes(commands(steps(load("pull-request.yml"), "review")))
    training = [line for line in lines if TRAINING.search(line) and not line.startswith("echo")]
    assert training == []
    assert "make check-pushed" in lines


def test_the_review_checks_out_the_branch_with_the_base_history() -> None:
    [checkout] = [
        step["with"]
        for step in steps(load("pull-request.yml"), "review")
        if step.get("uses", "").startswith("actions/checkout@")
    ]
    assert checkout["ref"] == "${{ github.event.pull_request.head.sha }}"
    assert checkout["fetch-depth"] == 0


@pytest.mark.parametrize(
    "earlier, later",
    [
        ("make setup", "make check-lock"),
        ("make check-lock", "make check-pushed"),
        ("make check-pushed", "dvc status"),
        ("dvc status", "make review"),
        ("make review", "cml comment update"),
    ],
)
def test_review_steps_run_in_order(earlier: str, later: str) -> None:
    scripts = [step.get("run", "") for step in steps(load("pull-request.yml"), "review")]
    position = {
        text: next(index for index, script in enumerate(scripts) if text in script)
        for text in (earlier, later)
    }
    assert position[earlier] < position[later]


def test_the_pushed_results_are_pulled_with_the_remote_credentials() -> None:
    workflow = load("pull-request.yml")
    for job in ("review", "retrain"):
        [step] = [s for s in steps(workflow, job) if "make check-pushed" in s.get("run", "")]
        assert set(step["env"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_the_review_is_against_the_base_branch() -> None:
    [step] = [
        s for s in steps(load("pull-request.yml"), "review") if "make review" in s.get("run", "")
    ]
    assert step["env"]["BASE_REF"] == "${{ github.base_ref }}"
    assert 'make review BASE="origin/$BASE_REF"' in commands([step])


def test_the_comment_is_updated_not_added() -> None:
    [step] = [
        s for s in steps(load("pull-request.yml"), "review") if "cml comment" in s.get("run", "")
    ]
    [line] = commands([step])
    assert "cml comment update" in line
    assert "--publish" in line
    assert '--target="pr/$PR_NUMBER"' in line
    assert step["env"]["REPO_TOKEN"] == "${{ secrets.GITHUB_TOKEN }}"
    assert "github.event.pull_request.head.repo.full_name == github.repository" in step["if"]


def test_retraining_runs_only_with_the_retrain_label() -> None:
    job = load("pull-request.yml")["jobs"]["retrain"]
    assert "contains(github.event.pull_request.labels.*.name, 'retrain')" in job["if"]
    lines = commands(job["steps"])
    assert lines.index("make check-pushed") < lines.index("make check-retrain TOLERANCE=0.01")


# The experiments run by hand.


def test_the_sweep_is_started_by_hand_with_its_inputs() -> None:
    inputs = triggers(load("sweep.yml"))["workflow_dispatch"]["inputs"]
    assert {name: spec["default"] for name, spec in inputs.items()} == {
        "experiments": "",
        "sweep": "",
        "prefix": "sweep",
    }


def test_the_sweep_plans_its_matrix() -> None:
    workflow = load("sweep.yml")
    plan, run = workflow["jobs"]["plan"], workflow["jobs"]["run"]
    assert plan["permissions"] == {"contents": "read"}
    assert plan["outputs"]["names"] == "${{ steps.plan.outputs.names }}"
    [step] = [step for step in plan["steps"] if step.get("id") == "plan"]
    assert "-m tools.study" in step["run"]
    assert '--sweep "$SWEEP"' in step["run"]
    assert '>> "$GITHUB_OUTPUT"' in step["run"]
    assert set(step["env"]) == {"EXPERIMENTS", "SWEEP", "PREFIX"}
    assert run["needs"] == "plan"
    assert run["strategy"]["matrix"]["name"] == "${{ fromJSON(needs.plan.outputs.names) }}"
    assert run["strategy"]["fail-fast"] is False


def test_each_experiment_is_run_and_pushed() -> None:
    run = load("sweep.yml")["jobs"]["run"]
    assert run["permissions"] == {"contents": "write"}
    lines = commands(run["steps"])
    order = [
        next(index for index, line in enumerate(lines) if text in line)
        for text in (
            "dataset-fashion-mnist",
            "make setup",
            "dvc pull --allow-missing",
            'tools.study exp "$NAME"',
            'dvc exp push --run-cache origin "$NAME"',
        )
    ]
    assert order == sorted(order)
    [checkout] = [s for s in run["steps"] if s.get("uses", "").startswith("actions/checkout@")]
    assert checkout["with"]["fetch-depth"] == 0


def test_only_the_push_step_gets_the_token() -> None:
    run = load("sweep.yml")["jobs"]["run"]
    with_token = [s for s in run["steps"] if "secrets.GITHUB_TOKEN" in str(s.get("env", {}))]
    assert len(with_token) == 1
    assert "dvc exp push" in with_token[0]["run"]
    assert "x-access-token:${GITHUB_TOKEN}@" in with_token[0]["run"]


# Continuous integration.


def test_ci_runs_the_repository_script_on_main_and_pull_requests() -> None:
    workflow = load("ci.yml")
    on = triggers(workflow)
    assert on["push"]["branches"] == ["main"]
    assert "pull_request" in on
    [job] = workflow["jobs"].values()
    assert job["permissions"] == {"contents": "read"}
    assert "bash .ci/run" in commands(job["steps"])
