"""Writing outputs so that a failed or killed stage never leaves a half-written file behind.

Every output is written to a temporary sibling first and moved into place in one rename once it
is complete. The sibling's name carries a marker, ``.<name>.<random>.partial<suffix>`` for a file
and ``.<name>.<random>.partial`` for a directory: a failed or interrupted stage removes it on the
way out; one killed outright (SIGKILL, a power cut) cannot, so .gitignore and .dvcignore hide such
leftovers and the next write of the same output removes them. Only one process may write a given
output at a time (DVC locks a stage's outputs while it runs).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fmnist.errors import PipelineError

log = logging.getLogger(__name__)

PARTIAL_MARKER = ".partial"
# renameat2(2) swaps two paths in one step: Linux 3.15+, most local file systems.
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _ensure_parent(path: Path) -> None:
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


def _partial_pattern(path: Path) -> re.Pattern[str]:
    """The names of the temporary siblings that writing ``path`` uses (tempfile's random part)."""
    marker = re.escape(PARTIAL_MARKER + path.suffix)
    return re.compile(
        rf"\.{re.escape(path.name)}\.[a-z0-9_]+(?:{marker}|{re.escape(PARTIAL_MARKER)})"
    )


def _remove_stale_partials(path: Path) -> None:
    """Remove temporary siblings of ``path`` that a killed earlier write left behind."""
    pattern = _partial_pattern(path)
    for entry in path.parent.iterdir():
        if not pattern.fullmatch(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        log.info("removed %s, left behind by an interrupted run", entry)


def _prepare(path: Path) -> None:
    _ensure_parent(path)
    try:
        _remove_stale_partials(path)
    except OSError as error:
        raise PipelineError(f"cannot write {path}: {error.strerror}") from error


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    The temporary name keeps the suffix of ``path`` so that writers which check it (Keras,
    NumPy) accept it. On any error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    _prepare(path)
    try:
        handle, name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_MARKER + path.suffix
        )
    except OSError as error:
        raise PipelineError(f"cannot write {path}: {error.strerror}") from error
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
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


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON with a trailing newline, atomically."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_arrays(path: str | os.PathLike[str], **arrays: np.ndarray) -> None:
    """Save arrays to an uncompressed ``.npz`` file atomically."""
    with atomic_path(path) as temporary:
        np.savez(temporary, **arrays)


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """libc's renameat2, or None where the C library has none (macOS, Windows, old glibc)."""
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic step; False where the system cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    arguments = (_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if renameat2(*arguments) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False  # the kernel or the file system does not support the exchange
    raise OSError(code, os.strerror(code), str(second))


def _move_into_place(staging: Path, path: Path) -> None:
    """Put ``staging`` at ``path``; a previous ``path`` ends up at ``staging`` or is removed.

    With an atomic exchange ``path`` is at every moment either the complete old or the complete
    new directory, even if the process is killed. Without one, a kill between the two renames
    leaves the old directory inside a ``.partial`` sibling (and DVC's cache still has it).
    """
    if not os.path.lexists(path):
        os.replace(staging, path)
    elif not _exchange(staging, path):
        aside = Path(
            tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_MARKER)
        )
        os.replace(path, aside / path.name)
        os.replace(staging, path)
        shutil.rmtree(aside)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging directory that replaces ``path`` only if the block succeeds."""
    path = Path(path)
    _prepare(path)
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
            _move_into_place(staging, path)
        except OSError as error:
            raise PipelineError(f"cannot write {path}: {error.strerror}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
