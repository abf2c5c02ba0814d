"""dvc.yaml stays an accurate map: each stage depends on exactly the code it runs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPOSITORY_ROOT

DVC_YAML = yaml.safe_load((REPOSITORY_ROOT / "dvc.yaml").read_text(encoding="utf-8"))
OWN_PACKAGES = ("fmnist", "stages")


def imported_files(path: Path) -> set[str]:
    """The repository's own source files that ``path`` imports, directly or not."""
    seen: set[str] = set()
    pending = [path]
    while pending:
        current = pending.pop()
        tree = ast.parse(current.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                parts = module.split(".")
                if parts[0] not in OWN_PACKAGES:
                    continue
                # Importing a.b runs a/__init__.py first, then a/b.py.
                candidates = [Path(*parts[:1], "__init__.py"), Path(*parts).with_suffix(".py")]
                for candidate in candidates:
                    name = candidate.as_posix()
                    if (REPOSITORY_ROOT / candidate).is_file() and name not in seen:
                        seen.add(name)
                        pending.append(REPOSITORY_ROOT / candidate)
    return seen


@pytest.mark.parametrize("stage", sorted(DVC_YAML["stages"]))
def test_stage_depends_on_exactly_the_code_it_imports(stage: str) -> None:
    script = Path("stages", f"{stage}.py")
    expected = {script.as_posix(), "stages/__init__.py"} | imported_files(REPOSITORY_ROOT / script)
    declared = {
        dependency
        for dependency in DVC_YAML["stages"][stage]["deps"]
        if dependency.startswith(OWN_PACKAGES) and dependency.endswith(".py")
    }
    assert declared == expected
    assert f"python -m stages.{stage} " in DVC_YAML["stages"][stage]["cmd"]


def test_every_stage_has_a_dependency_so_none_always_reruns() -> None:
    assert all(DVC_YAML["stages"][stage].get("deps") for stage in DVC_YAML["stages"])


def test_the_six_stages_in_order() -> None:
    assert list(DVC_YAML["stages"]) == [
        "fetch",
        "preprocess",
        "split",
        "train",
        "evaluate",
        "report",
    ]
