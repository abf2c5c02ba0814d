"""Whether the committed dvc.lock still describes params.yaml, dvc.yaml and the code git holds.

``dvc status`` answers the same question but needs the data and the model: on a fresh clone
(CI, with no DVC remote) it reports every data output as missing. This check compares only
what git holds, so it runs anywhere in a second and never trains: for each stage of dvc.yaml
its command, its params' values, the md5 of its git-tracked dependencies (stage scripts,
``fmnist/*.py``, committed metrics and plots) and of its git-tracked outputs, against dvc.lock.
Paths git does not hold (``data/``, ``models/``) are skipped: their hashes come from the DVC
cache, which a fresh clone does not have.

``python -m fmnist.staleness`` (``make check-lock``) prints one line per problem and exits 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fmnist.cli import run_stage
from fmnist.errors import PipelineError

log = logging.getLogger("check-lock")

DEFAULT_PARAMS_FILE = "params.yaml"
# dvc.yaml sections whose entries dvc.lock records under `outs`.
OUTPUT_SECTIONS = ("outs", "metrics", "plots")
INTERPOLATION = re.compile(r"\$\{\s*([^}\s]+)\s*\}")
_MISSING = object()


class StaleLockError(PipelineError):
    """dvc.lock does not match dvc.yaml, params.yaml or the code: the results are stale."""


@dataclass(frozen=True)
class Finding:
    """One way in which a stage's entry in dvc.lock no longer matches the repository."""

    stage: str
    message: str

    def __str__(self) -> str:
        return f"{self.stage}: {self.message}"


def file_md5(path: Path) -> str:
    """The md5 DVC 3 records for a file: the md5 of its bytes."""
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def directory_md5(root: Path, relative_paths: Iterable[str]) -> str:
    """The md5 DVC 3 records for a directory: of its sorted file list, suffixed ``.dir``."""
    entries = sorted(
        ({"md5": file_md5(root / path), "relpath": path} for path in relative_paths),
        key=lambda entry: entry["relpath"],
    )
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def describe(value: Any) -> str:
    """A param value as one short line, the way YAML shows it."""
    if isinstance(value, str):
        return repr(value)
    return json.dumps(value)


def lookup(document: Any, dotted_key: str) -> Any:
    """``document["a"]["b"]`` for ``"a.b"``; _MISSING where any part is absent."""
    value = document
    for part in dotted_key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def differences(key: str, locked: Any, current: Any) -> list[str]:
    """Each leaf under ``key`` whose value in dvc.lock differs from the current one."""
    if isinstance(locked, Mapping) and isinstance(current, Mapping):
        found = []
        for name in [*locked, *(name for name in current if name not in locked)]:
            found += differences(
                f"{key}.{name}", locked.get(name, _MISSING), current.get(name, _MISSING)
            )
        return found
    if locked is _MISSING:
        return [f"{key} = {describe(current)} is new since dvc.lock"]
    if current is _MISSING:
        return [f"{key} is gone (dvc.lock has {describe(locked)})"]
    if locked != current:
        return [f"{key} changed: {describe(locked)} in dvc.lock, {describe(current)} now"]
    return []


def declared_params(declaration: list[Any] | None) -> dict[str, list[str] | None]:
    """A stage's ``params`` list as file -> keys (None: every key of the file)."""
    declared: dict[str, list[str] | None] = {}
    for entry in declaration or []:
        if isinstance(entry, str):
            keys = declared.setdefault(DEFAULT_PARAMS_FILE, [])
            if keys is not None:
                keys.append(entry)
        elif isinstance(entry, Mapping):
            for file, keys in entry.items():
                declared[file] = list(keys) if keys else None
        else:
            raise StaleLockError(f"dvc.yaml: a params entry must be a key or a mapping: {entry!r}")
    return declared


def compare_params(
    stage: str,
    declaration: list[Any] | None,
    locked: Mapping[str, Mapping[str, Any]] | None,
    params_files: Mapping[str, Any],
) -> list[Finding]:
    """The stage's params whose values (or the set of which) differ from dvc.lock."""
    findings = []
    locked = locked or {}
    declared = declared_params(declaration)
    for file in sorted(set(declared) | set(locked)):
        locked_values = locked.get(file) or {}
        current = params_files.get(file, _MISSING)
        if current is _MISSING:
            findings.append(Finding(stage, f"{file}: the params file is missing"))
            continue
        keys = declared.get(file, _MISSING)
        if keys is _MISSING:
            findings.append(Finding(stage, f"{file} is no longer declared in dvc.yaml"))
            continue
        keys = list(current or {}) if keys is None else keys
        for key in [*keys, *(key for key in locked_values if key not in keys)]:
            if key not in keys:
                findings.append(Finding(stage, f"{file}: {key} is no longer declared in dvc.yaml"))
            elif key not in locked_values:
                findings.append(Finding(stage, f"{file}: {key} is declared but not in dvc.lock"))
            else:
                value = lookup(current, key)
                findings += [
                    Finding(stage, f"{file}: {difference}")
                    for difference in differences(key, locked_values[key], value)
                ]
    return findings


def resolve_command(command: str | list[str], params: Any) -> str | list[str]:
    """The command with ``${key}`` replaced from params.yaml, as DVC runs and records it."""

    def substitute(text: str) -> str:
        def value(match: re.Match[str]) -> str:
            found = lookup(params, match.group(1))
            return match.group(0) if found is _MISSING else str(found)

        return INTERPOLATION.sub(value, text)

    if isinstance(command, list):
        return [substitute(part) for part in command]
    return substitute(command)


def compare_command(
    stage: str, declared: str | list[str], locked: str | list[str] | None, params: Any
) -> list[Finding]:
    """A finding if the stage's command is not the one dvc.lock recorded."""
    current = resolve_command(declared, params)
    if current == locked:
        return []
    return [Finding(stage, f"cmd changed: {describe(locked)} in dvc.lock, {describe(current)} now")]


def declared_paths(stage: Mapping[str, Any], sections: Iterable[str]) -> list[str]:
    """The paths of a dvc.yaml stage's entries in ``sections`` (plain or with options)."""
    paths = []
    for section in sections:
        for entry in stage.get(section) or []:
            paths.append(next(iter(entry)) if isinstance(entry, Mapping) else str(entry))
    return paths


def compare_paths(
    stage: str,
    kind: str,
    declared: list[str],
    locked: list[Mapping[str, Any]] | None,
    repository: Path,
    tracked: set[str],
) -> tuple[list[Finding], int]:
    """Compare declared against locked paths, then each git-held path's md5 with dvc.lock.

    Returns the findings and how many paths were hashed.
    """
    findings = []
    locked_by_path = {str(entry["path"]): entry for entry in locked or []}
    for path in declared:
        if path not in locked_by_path:
            findings.append(Finding(stage, f"{kind} {path} is declared but not in dvc.lock"))
    for path in locked_by_path:
        if path not in declared:
            findings.append(Finding(stage, f"{kind} {path} is in dvc.lock but not in dvc.yaml"))
    checked = 0
    for path, entry in locked_by_path.items():
        expected = entry.get("md5")
        if path not in declared or expected is None:
            continue
        inside = sorted(
            name[len(path) + 1 :] for name in tracked if name.startswith(f"{path.rstrip('/')}/")
        )
        if path in tracked:
            if not (repository / path).is_file():
                findings.append(Finding(stage, f"{kind} {path} is missing from the working tree"))
                continue
            actual = file_md5(repository / path)
        elif inside and str(expected).endswith(".dir"):
            missing = [name for name in inside if not (repository / path / name).is_file()]
            if missing:
                findings.append(
                    Finding(stage, f"{kind} {path}/{missing[0]} is missing from the working tree")
                )
                continue
            actual = directory_md5(repository / path, inside)
        else:
            continue  # data and models: DVC's cache holds them, git does not
        checked += 1
        if actual != expected:
            change = "changed since dvc.lock" if kind == "dependency" else "differs from dvc.lock"
            findings.append(Finding(stage, f"{kind} {path} {change}"))
    return findings, checked


def git_tracked_files(repository: Path) -> set[str]:
    """The paths git tracks in ``repository``, relative to it."""
    try:
        result = subprocess.run(
            ["git", "ls-files", "-z"], cwd=repository, capture_output=True, check=False
        )
    except OSError as error:
        raise StaleLockError(f"cannot run git: {error.strerror}") from error
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise StaleLockError(
            f"{repository} is not a git checkout: {message[-1] if message else 'git failed'}"
        )
    return {name for name in result.stdout.decode().split("\0") if name}


def read_yaml(path: Path) -> Any:
    """A YAML file's content; a clear error if it is missing or malformed."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise StaleLockError(f"{path.name} is missing") from error
    except yaml.YAMLError as error:
        raise StaleLockError(f"{path.name} is not valid YAML: {error}") from error


def find_stale_stages(repository: Path) -> tuple[list[Finding], int]:
    """Every mismatch between dvc.lock and the repository; also how many files were hashed."""
    pipeline = read_yaml(repository / "dvc.yaml") or {}
    stages = pipeline.get("stages") or {}
    lock_path = repository / "dvc.lock"
    lock = read_yaml(lock_path) if lock_path.exists() else None
    locked_stages = (lock or {}).get("stages") or {}
    tracked = git_tracked_files(repository)
    params_files: dict[str, Any] = {}
    files = {DEFAULT_PARAMS_FILE} | {
        file for stage in stages.values() for file in declared_params(stage.get("params"))
    }
    for file in sorted(files):
        if (repository / file).is_file():
            params_files[file] = read_yaml(repository / file) or {}

    findings: list[Finding] = []
    hashed = 0
    for name, stage in stages.items():
        locked = locked_stages.get(name)
        if locked is None:
            findings.append(Finding(name, "not in dvc.lock: the stage has never been run"))
            continue
        findings += compare_command(
            name, stage.get("cmd", ""), locked.get("cmd"), params_files.get(DEFAULT_PARAMS_FILE)
        )
        findings += compare_params(name, stage.get("params"), locked.get("params"), params_files)
        for kind, sections, entries in (
            ("dependency", ("deps",), locked.get("deps")),
            ("output", OUTPUT_SECTIONS, locked.get("outs")),
        ):
            found, checked = compare_paths(
                name, kind, declared_paths(stage, sections), entries, repository, tracked
            )
            findings += found
            hashed += checked
    for name in locked_stages:
        if name not in stages:
            findings.append(Finding(name, "in dvc.lock but no longer in dvc.yaml"))
    return findings, hashed


def check_lock(repository: Path) -> None:
    """Raise StaleLockError, one line per finding, unless dvc.lock matches the repository."""
    findings, hashed = find_stale_stages(repository)
    if findings:
        stages = list(dict.fromkeys(finding.stage for finding in findings))
        raise StaleLockError(
            "\n".join(
                [
                    f"dvc.lock is stale for {len(stages)} stage(s) ({', '.join(stages)}):",
                    *(str(finding) for finding in findings),
                    "run `dvc repro` and commit dvc.lock with its results",
                ]
            )
        )
    log.info("dvc.lock matches dvc.yaml, the params and %d git-held files", hashed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repository", type=Path, default=Path("."), help="the repository root (default: .)"
    )
    args = parser.parse_args()
    check_lock(args.repository)


if __name__ == "__main__":
    run_stage("check-lock", main)
