"""Writing outputs so that a failed or killed stage never leaves a half-written file behind, and
reading inputs within bounds.

Each file is written to a hidden sibling, ``.<name>.<random>.partial<suffix>``, and renamed into
place once complete; what a SIGKILL leaves is hidden by .gitignore and .dvcignore. Nothing is
written or deleted through a symbolic link that leads out of the working directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fmnist.cli import printable, summarize_error
from fmnist.errors import DataError, PipelineError
from fmnist.params import MAX_TRAINING_BYTES

log = logging.getLogger(__name__)

PARTIAL_MARKER = ".partial"
# What a saved model may inflate to (a model arrives from elsewhere through `dvc artifacts get`
# or --model): JSON members of kilobytes for any network here, and the weights of the largest
# network train accepts (a weight and its gradient in 8 bytes).
MODEL_MEMBERS = {
    "config.json": 2**20,
    "metadata.json": 2**20,
    "model.weights.h5": MAX_TRAINING_BYTES // 2,
}
# What is neither a file nor a directory, by the first letter of `ls -l`.
SPECIAL_FILES = {"p": "a FIFO", "c": "a device", "b": "a device", "s": "a socket"}


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


def require_regular_file(path: str | os.PathLike[str]) -> None:
    """DataError naming ``path`` (escaped) if it is missing, a directory, or anything but a
    regular file: a FIFO would block its reader and a device never end. Only its status is read.
    """
    shown = printable(os.fspath(path))
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"{shown}: not found") from None
    except OSError as error:
        raise DataError(f"{shown}: cannot read ({error.strerror})") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{shown}: a directory, not a file")
    if not stat.S_ISREG(mode):
        kind = SPECIAL_FILES.get(stat.filemode(mode)[0], "not a regular file")
        raise DataError(f"{shown}: {kind}, not a regular file; not read")


def check_model_archive(path: str | os.PathLike[str]) -> None:
    """DataError naming ``path`` unless it is a zip archive of MODEL_MEMBERS, each inflating to
    at most its bound. Read from the central directory, before anything is inflated (zipfile
    never inflates a member past its declared size), and before TensorFlow starts.
    """
    shown = printable(os.fspath(path))
    if not os.path.lexists(path):
        raise DataError(f"{shown}: not found (run the pipeline first: make repro)")
    require_regular_file(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        reason = summarize_error(error)
        raise DataError(f"{shown}: not a Keras model archive ({reason})") from None
    for member in members:
        name, size, limit = member.filename, member.file_size, MODEL_MEMBERS.get(member.filename)
        if limit is None or size > limit:
            allowed = "no such member" if limit is None else f"at most {limit:,} bytes"
            raise DataError(
                f"{shown}: {printable(name)} inflates to {size:,} bytes; a model of this "
                f"pipeline holds {allowed}; not read"
            )
    inflated = sum(member.file_size for member in members)
    if inflated > sum(MODEL_MEMBERS.values()):
        raise DataError(f"{shown}: inflates to {inflated:,} bytes in all; not read")


@contextlib.contextmanager
def temporary_files_beside(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Within the block, Python's temporary files (and those of libraries that use its tempfile
    module: TensorFlow's converter) go to a hidden directory beside ``path``, removed however the
    block ends: an error, Ctrl-C or SIGTERM (run_stage turns both into exceptions). Only SIGKILL
    can leave it, where .gitignore hides it, instead of a model in /tmp.
    """
    path = Path(path)
    _ensure_parent(path)
    directory = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_MARKER)
    previous, tempfile.tempdir = tempfile.tempdir, directory
    try:
        yield Path(directory)
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(directory, ignore_errors=True)


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
