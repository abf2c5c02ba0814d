"""Getting the four Fashion-MNIST files from the first source that can provide them all.

A source is a local directory holding ``<name>`` or ``<name>.gz`` (Debian's
dataset-fashion-mnist package installs the gzipped files in /usr/share/datasets/fashion-mnist)
or the base URL of a mirror serving ``<base>/<name>.gz``. Debian re-compressed the files, so
only the decompressed payload is comparable between sources: every payload is gunzipped and
checked against the SHA-256 of the published data (``fashion-mnist.sha256`` beside this module,
in ``sha256sum -c`` format) before anything is written, and the output is always the
decompressed files, byte-identical whichever source served them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import requests

from fmnist import RAW_FILES
from fmnist.errors import DataError, FetchError
from fmnist.files import empty_directory, write_bytes
from fmnist.idx import decompress

log = logging.getLogger(__name__)

# The published checksums are facts about the data set, not settings to experiment with, so they
# live in a file of their own (``sha256sum -c`` reads it too), not in params.yaml.
CHECKSUMS_FILE = Path(__file__).with_name("fashion-mnist.sha256")
DEBIAN_DIRECTORY = "/usr/share/datasets/fashion-mnist"
CHUNK_SIZE = 64 * 1024
MEGABYTE = 1024 * 1024
# Without a Content-Length there is no percentage to report, so progress goes by volume.
PROGRESS_EVERY_BYTES = 4 * MEGABYTE


class _TransientError(Exception):
    """A download failure that another attempt might not repeat."""


def is_url(source: str) -> bool:
    """Whether ``source`` names a download mirror rather than a local directory."""
    return source.startswith(("http://", "https://"))


def read_checksums(path: str | os.PathLike[str] = CHECKSUMS_FILE) -> dict[str, str]:
    """The ``{file name: sha256}`` table of a checksum file in ``sha256sum`` format.

    It must name exactly the four files of the data set, each once.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise FetchError(f"{path}: cannot read: {error}") from None
    checksums: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        match = re.fullmatch(r"([0-9a-f]{64}) [ *](\S+)", line)
        if match is None:
            raise FetchError(f"{path}:{number}: not '<sha256>  <file name>': {line[:100]!r}")
        digest, name = match.groups()
        if name in checksums:
            raise FetchError(f"{path}:{number}: {name} is listed twice")
        checksums[name] = digest
    expected = {name for pair in RAW_FILES.values() for name in pair}
    if set(checksums) != expected:
        raise FetchError(f"{path}: must list exactly the files {', '.join(sorted(expected))}")
    return checksums


def verify_payload(data: bytes, name: str, sha256: str) -> None:
    """Raise FetchError unless ``data`` has the given SHA-256."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise FetchError(
            f"{name}: checksum mismatch: {len(data):,} bytes with sha256 {digest}, "
            f"expected {sha256}"
        )


def read_local_file(directory: Path, name: str) -> tuple[Path, bytes]:
    """Return the path and bytes of ``<name>`` in ``directory``, or else of ``<name>.gz``."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            try:
                return candidate, candidate.read_bytes()
            except OSError as error:
                raise FetchError(f"{candidate.name}: cannot read: {error.strerror}") from None
    raise FetchError(f"neither {name} nor {name}.gz is there")


def _describe_request_error(error: requests.RequestException, timeout: float) -> str:
    if isinstance(error, requests.Timeout) or "timed out" in str(error):
        return f"no answer within the {timeout:g} s timeout"
    if isinstance(error, requests.exceptions.ChunkedEncodingError):
        return "connection dropped before the whole file arrived"
    reason = error.args[0] if error.args else error
    # urllib3 wraps the cause in MaxRetryError and prefixes the connection object's repr:
    # only the last part (for example "[Errno 111] Connection refused") tells the user anything.
    reason = getattr(reason, "reason", reason)
    return f"connection failed: {str(reason).rsplit(': ', 1)[-1]}"


def _download_once(session: requests.Session, url: str, name: str, timeout: float) -> bytes:
    """Download ``url`` in one attempt, logging progress; raise on any failure."""
    # Identity encoding keeps the body byte-for-byte as stored, so Content-Length applies to it.
    headers = {"Accept-Encoding": "identity"}
    try:
        with session.get(url, stream=True, timeout=(timeout, timeout), headers=headers) as response:
            status = response.status_code
            if status != 200:
                reason = f"HTTP {status} {response.reason}"
                # Server overload and rate limits pass; 404 and its kin will not.
                if status >= 500 or status in (408, 429):
                    raise _TransientError(reason)
                raise FetchError(reason)
            length = response.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
            if "Content-Encoding" in response.headers:
                total = None  # requests decodes such a body, so its length is not comparable
            step = max(total // 10, 1) if total else PROGRESS_EVERY_BYTES
            # Small files arrive at once; progress matters only for the large ones.
            show_progress = total is None or total >= MEGABYTE
            chunks: list[bytes] = []
            received = 0
            for chunk in response.iter_content(CHUNK_SIZE):
                chunks.append(chunk)
                received += len(chunk)
                if show_progress and received // step > (received - len(chunk)) // step:
                    _log_progress(name, received, total)
    except requests.RequestException as error:
        raise _TransientError(_describe_request_error(error, timeout)) from None
    if total is not None and received != total:
        raise _TransientError(f"connection dropped after {received:,} of {total:,} bytes")
    return b"".join(chunks)


def _log_progress(name: str, received: int, total: int | None) -> None:
    if total:
        log.info(
            "%s.gz: %.1f / %.1f MB (%d%%)",
            name,
            received / MEGABYTE,
            total / MEGABYTE,
            100 * received // total,
        )
    else:
        log.info("%s.gz: %.1f MB", name, received / MEGABYTE)


def download_file(
    session: requests.Session,
    url: str,
    name: str,
    *,
    timeout: float,
    attempts: int,
    backoff: float,
) -> bytes:
    """Download ``url`` with up to ``attempts`` tries, waiting ``backoff * 2**k`` s between.

    Raise FetchError with the last reason once the tries are spent, or at once for a failure
    that would repeat (an HTTP status such as 404).
    """
    attempt = 1
    while True:
        try:
            return _download_once(session, url, name, timeout)
        except _TransientError as error:
            if attempt >= attempts:
                tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
                raise FetchError(f"{name}.gz: {error} (after {tries})") from None
            wait = backoff * 2 ** (attempt - 1)
            log.warning(
                "%s.gz: attempt %d/%d failed (%s); retrying in %.1f s",
                name,
                attempt,
                attempts,
                error,
                wait,
            )
            time.sleep(wait)
            attempt += 1
        except FetchError as error:
            raise FetchError(f"{name}.gz: {error}") from None


def fetch_from_directory(directory: Path, sha256: Mapping[str, str]) -> dict[str, bytes]:
    """Return every expected file from ``directory``, decompressed and verified."""
    if not directory.is_dir():
        raise FetchError("no such directory")
    payloads = {}
    for name, digest in sha256.items():
        path, data = read_local_file(directory, name)
        payload = decompress(data, path.name)
        verify_payload(payload, name, digest)
        log.info(
            "%s: %s bytes, %s decompressed, sha256 verified",
            path.name,
            f"{len(data):,}",
            f"{len(payload):,}",
        )
        payloads[name] = payload
    return payloads


def fetch_from_mirror(
    base_url: str,
    sha256: Mapping[str, str],
    *,
    timeout: float,
    attempts: int,
    backoff: float,
) -> dict[str, bytes]:
    """Return every expected file downloaded from ``base_url``, decompressed and verified.

    Only transport failures are retried. A complete body with the wrong size or checksum, or
    gzip data that does not decompress, means the mirror serves a different file: fetching
    it again would cost 26 MB for the same answer, so that URL (and the source) fails at once.
    """
    payloads = {}
    with requests.Session() as session:
        for name, digest in sha256.items():
            url = f"{base_url.rstrip('/')}/{name}.gz"
            data = download_file(
                session, url, name, timeout=timeout, attempts=attempts, backoff=backoff
            )
            payload = decompress(data, f"{name}.gz")
            verify_payload(payload, name, digest)
            log.info(
                "%s.gz: %s bytes downloaded, %s decompressed, sha256 verified",
                name,
                f"{len(data):,}",
                f"{len(payload):,}",
            )
            payloads[name] = payload
    return payloads


def _failure_message(failures: list[tuple[str, str]], names: Sequence[str]) -> str:
    names = ", ".join(names)
    lines = [f"no source could provide all of {names}:"]
    lines += [f"  {source}: {reason}" for source, reason in failures]
    lines += [
        "to fix it, do one of:",
        "  - install Debian's package: sudo apt-get install dataset-fashion-mnist "
        f"(it puts the files in {DEBIAN_DIRECTORY})",
        "  - point fetch.sources in params.yaml at a directory holding the four files "
        "(gzipped or not)",
        "  - check that the network reaches the download mirrors listed in fetch.sources",
    ]
    return "\n".join(lines)


def _write_outputs(payloads: dict[str, bytes], out_dir: Path) -> None:
    """Make ``out_dir`` a directory of exactly these files."""
    out_dir = empty_directory(out_dir)
    for name, payload in payloads.items():
        write_bytes(out_dir / name, payload)


def fetch_dataset(
    sources: Sequence[str],
    out_dir: str | os.PathLike[str],
    sha256: Mapping[str, str],
    *,
    timeout: float,
    attempts: int,
    backoff: float = 1.0,
) -> str:
    """Write the files named in ``sha256``, decompressed, to ``out_dir``; return the source used.

    Sources are tried in order until one provides every file with the right size and
    SHA-256; nothing is written until all of them have been verified. When every source
    fails, raise FetchError listing each source with its reason and how to fix it.
    """
    out_dir = Path(out_dir)
    failures: list[tuple[str, str]] = []
    for source in sources:
        log.info("trying %s", source)
        try:
            if is_url(source):
                payloads = fetch_from_mirror(
                    source, sha256, timeout=timeout, attempts=attempts, backoff=backoff
                )
            else:
                payloads = fetch_from_directory(Path(source), sha256)
        except (FetchError, DataError) as error:
            log.warning("%s failed: %s", source, error)
            failures.append((source, str(error)))
            continue
        _write_outputs(payloads, out_dir)
        total = sum(len(payload) for payload in payloads.values())
        log.info(
            "%s served %d files; wrote %s bytes to %s",
            source,
            len(payloads),
            f"{total:,}",
            out_dir,
        )
        return source
    raise FetchError(_failure_message(failures, list(sha256)))
