"""Getting the data set's files, decompressed and verified, from the first source that has them
all: a directory holding ``<name>`` or ``<name>.gz``, or a mirror serving ``<base>/<name>.gz``.
Each is checked against its size and SHA-256 in fmnist.dataset.CHECKSUMS, never inflated past it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import socket
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from fmnist.cli import QUOTE_LIMIT, summarize_error
from fmnist.dataset import CHECKSUMS
from fmnist.errors import DataError, FetchError
from fmnist.files import empty_directory, write_bytes

log = logging.getLogger(__name__)

CHUNK_SIZE = 64 * 1024
MEBIBYTE = 1024 * 1024
# gzip allows endless zero padding after a stream; stored without compression, a file's gzip is
# only a few bytes per 64 KiB larger than the file, so a MiB more than the file is not that file.
COMPRESSED_SLACK = MEBIBYTE
# Overload, rate limits and gateway errors pass; a 404 will not. The last answer is reported as
# it is, and no server may make us wait an hour with a Retry-After header.
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
RETRY = Retry(
    status_forcelist=RETRY_STATUSES,
    allowed_methods=["GET"],
    backoff_factor=0.5,
    respect_retry_after_header=False,
    raise_on_status=False,
)
FIXES = (
    "to fix it, do one of:",
    "  - point fetch.sources in params.yaml at a directory holding the files (gzipped or not)",
    "  - install Debian's package: sudo apt-get install dataset-fashion-mnist "
    "(it puts the files in /usr/share/datasets/fashion-mnist)",
    "  - check that the network reaches the mirrors listed in fetch.sources",
)


def find_local_file(directory: Path, name: str) -> Path:
    """``<name>`` in ``directory`` if it is a file there, else ``<name>.gz``, else FetchError."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FetchError(f"neither {name} nor {name}.gz is there")


def _verify(label: str, data: bytes, expected: tuple[int, str], compressed: int | None) -> bytes:
    """``data`` if it has the expected size and SHA-256, else FetchError naming ``label``."""
    found = (len(data), hashlib.sha256(data).hexdigest())
    if found != expected:
        raise FetchError(
            f"{label}: checksum mismatch: expected {expected[0]:,} bytes with sha256 "
            f"{expected[1]}, found {found[0]:,} bytes with sha256 {found[1]}"
        )
    sizes = f"{len(data):,} bytes" if compressed is None else f"{compressed:,} bytes, {len(data):,}"
    log.info("%s: %s decompressed, sha256 verified", label, sizes)
    return data


def read_gzip(
    chunks: Iterable[bytes], label: str, expected: tuple[int, str], *, progress: bool = False
) -> bytes:
    """The gzip stream in ``chunks``, decompressed and verified against ``expected``.

    FetchError as soon as the output would outgrow the expected size or the input passes it by
    COMPRESSED_SLACK, so memory stays within the expected size; DataError for gzip data that is
    corrupt or ends early. Both name ``label``. ``progress`` logs every tenth of the way.
    """
    size = expected[0]
    output = bytearray()
    compressed = 0
    inflater = zlib.decompressobj(wbits=31)  # 31: a gzip header and trailer around deflate data
    for chunk in chunks:
        compressed += len(chunk)
        if compressed > size + COMPRESSED_SLACK:
            raise FetchError(f"{label}: more than {size + COMPRESSED_SLACK:,} bytes compressed")
        while chunk:
            if inflater.eof:  # gzip allows another member after this one, or zero padding
                chunk = chunk.lstrip(b"\0")
                if not chunk:
                    break
                inflater = zlib.decompressobj(wbits=31)
            before = len(output)
            try:
                output += inflater.decompress(chunk, size + 1 - before)
            except zlib.error as error:
                raise DataError(f"{label}: corrupt gzip data ({error})") from None
            if len(output) > size:
                raise FetchError(f"{label}: decompresses to more than the {size:,} bytes expected")
            if progress and len(output) * 10 // size > before * 10 // size:
                log.info("%s: %d%% of %s bytes", label, 100 * len(output) // size, f"{size:,}")
            chunk = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
    if not inflater.eof:
        raise DataError(f"{label}: truncated gzip data (it ends before its end-of-stream marker)")
    return _verify(label, bytes(output), expected, compressed)


def read_directory(directory: Path, checksums: Mapping[str, tuple[int, str]]) -> dict[str, bytes]:
    """Every file in ``checksums`` from ``directory``, decompressed and verified.

    A plain file whose size is not the expected one is refused before it is read.
    """
    if not directory.is_dir():
        raise FetchError("no such directory")
    files = {}
    for name, expected in checksums.items():
        path = find_local_file(directory, name)
        try:
            with path.open("rb") as file:
                if path.name != name:
                    chunks = iter(functools.partial(file.read, CHUNK_SIZE), b"")
                    files[name] = read_gzip(chunks, path.name, expected)
                    continue
                size = os.fstat(file.fileno()).st_size
                if size != expected[0]:
                    raise FetchError(f"{name}: {size:,} bytes, expected {expected[0]:,}")
                files[name] = _verify(name, file.read(size + 1), expected, None)
        except OSError as error:
            raise FetchError(f"{path.name}: cannot read: {error.strerror}") from None
    return files


@contextlib.contextmanager
def _cut_off_at(deadline: float, response: requests.Response) -> Iterator[None]:
    """Within the block, shut the response's connection down at ``deadline`` (a monotonic time):
    a read's timeout restarts with every byte, so a trickling server could hold it for ever. The
    timer shuts a duplicate descriptor, which no other socket can reuse while it may still fire.
    """
    with socket.socket(fileno=os.dup(response.raw.fileno())) as connection:

        def expire() -> None:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

        timer = threading.Timer(max(deadline - time.monotonic(), 0.0), expire)
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
            timer.join()


def download_file(url: str, expected: tuple[int, str], *, timeout: float, attempts: int) -> bytes:
    """The gzipped file at ``url``, decompressed and verified, in at most ``attempts`` requests.

    urllib3 retries connections and RETRY_STATUSES; this loop retries a body that stops early, cut
    off ``timeout`` seconds after its request. A 404 or a wrong whole file fails at once.
    """
    label = url.rsplit("/", 1)[-1]
    tries = 0
    while True:
        retry = RETRY.new(total=attempts - tries - 1, backoff_max=timeout)
        deadline = time.monotonic() + timeout
        with requests.Session() as session:
            session.mount(url, HTTPAdapter(max_retries=retry))
            try:
                # Identity: the body must be the .gz file itself, which read_gzip bounds.
                response = session.get(
                    url, stream=True, timeout=timeout, headers={"Accept-Encoding": "identity"}
                )
            except requests.RequestException as error:
                # urllib3 wraps the last failure of its tries, which says what went wrong.
                cause = getattr(error.args[0], "reason", error) if error.args else error
                raise FetchError(f"{label}: request failed: {summarize_error(cause)}") from None
            with response, _cut_off_at(deadline, response):
                tries += 1 + len(response.raw.retries.history)
                if response.status_code != 200:
                    status = f"HTTP {response.status_code} {response.reason}"[:QUOTE_LIMIT]
                    if response.status_code in RETRY_STATUSES:
                        status += f" (attempt {tries} of {attempts})"
                    raise FetchError(f"{label}: {status}")
                body = response.raw.stream(CHUNK_SIZE, decode_content=False)
                try:
                    return read_gzip(body, label, expected, progress=expected[0] > MEBIBYTE)
                except (urllib3.exceptions.HTTPError, OSError, DataError) as error:
                    timed_out = time.monotonic() >= deadline
                    if isinstance(error, DataError) and not timed_out:
                        raise
                    failure = error
        if timed_out:
            reason = f"not complete within the {timeout:g} s timeout"
        else:
            reason = f"connection dropped ({summarize_error(failure)})"
        if tries >= attempts:
            raise FetchError(f"{label}: {reason} (attempt {tries} of {attempts})")
        log.warning("%s: %s; trying again (attempt %d of %d)", label, reason, tries, attempts)


def fetch_dataset(
    sources: Sequence[str],
    out_dir: str | os.PathLike[str],
    checksums: Mapping[str, tuple[int, str]] = CHECKSUMS,
    *,
    timeout: float,
    attempts: int,
) -> str:
    """Write the files named in ``checksums``, decompressed, to ``out_dir``; return the source used.

    Nothing is written until every file is verified; when every source fails, FetchError lists
    each with its reason, and how to fix it.
    """
    failures = []
    for source in sources:
        log.info("trying %s", source)
        try:
            if source.startswith(("http://", "https://")):
                download = functools.partial(download_file, timeout=timeout, attempts=attempts)
                base = source.rstrip("/")
                files = {
                    name: download(f"{base}/{name}.gz", expected)
                    for name, expected in checksums.items()
                }
            else:
                files = read_directory(Path(source), checksums)
        except (FetchError, DataError) as error:
            log.warning("%s failed: %s", source, error)
            failures.append(f"  {source}: {error}")
            continue
        out_dir = empty_directory(out_dir)
        for name, data in files.items():
            write_bytes(out_dir / name, data)
        log.info("%s: wrote %d files to %s", source, len(files), out_dir)
        return source
    raise FetchError(
        "\n".join([f"no source could provide {', '.join(checksums)}:", *failures, *FIXES])
    )
