"""Writing outputs so that a failed or killed stage never leaves a half-written file behind.

DVC removes a stage's outputs before it runs and records them only when it succeeds, so a
stage never has to protect earlier results. What remains is a file that is half written when
a stage fails: each file is written to a hidden temporary sibling,
``.<name>.<random>.partial<suffix>``, and renamed into place once complete. A stage killed
outright (SIGKILL, a power cut) cannot remove its sibling; .gitignore and .dvcignore hide such
leftovers, so they are never part of an output.

Nothing is written or deleted through a symbolic link that leads out of the working directory
(the repository root, where DVC runs every stage): a link such as ``plots/report ->
/home/someone`` would otherwise let a stage overwrite or remove files elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fmnist.cli import summarize_error
from fmnist.errors import DataError, PipelineError

log = logging.getLogger(__name__)

PARTIAL_MARKER = ".partial"


def refuse_links_out(path: str | os.PathLike[str]) -> None:
    """Raise PipelineError if a symbolic link on the way to ``path`` leads out of the working
    directory. Paths outside the working directory (a test's temporary files) are the caller's.
    """
    root = Path.cwd()
    absolute = Path(os.path.abspath(path))
    if not absolute.is_relative_to(root):
        return
    real_root = root.resolve()
    current = root
    for part in absolute.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            target = current.resolve()
            if not target.is_relative_to(real_root):
                relative = current.relative_to(root)
                raise PipelineError(
                    f"cannot write {path}: {relative} is a symbolic link to {target}, outside "
                    "the repository; remove the link"
                )


def _ensure_parent(path: Path) -> None:
    refuse_links_out(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        ancestors = (path.parent, *path.parent.parents)
        blocking = next((a for a in ancestors if a.exists() and not a.is_dir()), None)
        if blocking is not None:
            reason = f"{blocking} is not a directory"
        else:
            reason = f"cannot create directory {path.parent}: {error.strerror}"
        raise PipelineError(f"cannot write {path}: {reason}") from error


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    The temporary name keeps the suffix of ``path`` so that writers which check it (Keras,
    NumPy) accept it. On any error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    _ensure_parent(path)
    try:
        handle, name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_MARKER + path.suffix
        )
    except OSError as error:
        raise PipelineError(f"cannot write {path}: {error.strerror}") from error
    os.close(handle)
    temporary = Path(name)
    try:
        try:
            yield temporary
        except OSError as error:  # a full disk, a file-size limit: one line, not a traceback
            raise PipelineError(f"cannot write {path}: {error.strerror or error}") from error
        os.chmod(temporary, 0o644)
        try:
            os.replace(temporary, path)
        except OSError as error:
            raise PipelineError(f"cannot write {path}: {error.strerror}") from error
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def _non_finite(data: Any, where: str) -> str | None:
    """The dotted place of the first NaN or infinity in ``data``, if any."""
    if isinstance(data, float) and not math.isfinite(data):
        return f"{where}: {data}"
    if isinstance(data, Mapping):
        items = data.items()
    elif isinstance(data, list | tuple):
        items = enumerate(data)
    else:
        return None
    for key, value in items:
        found = _non_finite(value, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON with a trailing newline, atomically.

    JSON has no NaN or infinity (Python would write them as bare words that other readers
    reject): such a value is refused, naming where it is, and nothing is written.
    """
    found = _non_finite(data, "")
    if found:
        raise PipelineError(f"cannot write {path}: {found} is not a number JSON can hold")
    write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file that an earlier stage wrote; raise DataError naming it if it cannot."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: not found (run the stage that writes it: dvc repro)") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DataError(f"{path}: not readable JSON ({summarize_error(error)})") from None


def write_arrays(path: str | os.PathLike[str], **arrays: np.ndarray) -> None:
    """Save arrays to an uncompressed ``.npz`` file atomically."""
    with atomic_path(path) as temporary:
        np.savez(temporary, **arrays)


def empty_directory(path: str | os.PathLike[str]) -> Path:
    """Make ``path`` an empty directory for a stage's directory output and return it.

    Under DVC it does not exist yet; a stage run by hand starts from nothing all the same, so
    that no file of an earlier run ends up in the output.
    """
    path = Path(path)
    refuse_links_out(path)
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        _ensure_parent(path)
        path.mkdir()
    except OSError as error:
        raise PipelineError(f"cannot write {path}: {error.strerror}") from error
    return path


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging directory that replaces ``path`` only if the block succeeds.

    For the tools' outputs, which DVC does not manage: a failed review leaves the earlier one.
    """
    path = Path(path)
    _ensure_parent(path)
    try:
        staging = Path(
            tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_MARKER)
        )
    except OSError as error:
        raise PipelineError(f"cannot write {path}: {error.strerror}") from error
    try:
        yield staging
        staging.chmod(0o755)
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            os.replace(staging, path)
        except OSError as error:
            raise PipelineError(f"cannot write {path}: {error.strerror}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
