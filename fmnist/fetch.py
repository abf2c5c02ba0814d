"""Getting the four Fashion-MNIST files from the first source that can provide them all.

A source is a local directory holding ``<name>`` or ``<name>.gz`` (Debian's
dataset-fashion-mnist package installs the gzipped files in /usr/share/datasets/fashion-mnist)
or the base URL of a mirror serving ``<base>/<name>.gz``. Debian re-compressed the files, so
only the decompressed payload is comparable between sources: every payload is gunzipped and
checked against the SHA-256 of the published data (``fashion-mnist.sha256`` beside this module,
in ``sha256sum -c`` format) before anything is written, and the output is always the
decompressed files, byte-identical whichever source served them.

Whatever a source sends, the stage stays bounded. Files are read and decompressed in steps of
at most 64 KiB, and a file is refused, without reading the rest, as soon as its payload grows
past what its IDX header declares or past the largest Fashion-MNIST file, or its compressed
form past the largest download (``BoundedPayload``). A download attempt lasts at most
``fetch.timeout`` seconds from request to last byte (``_download_once`` says the one
exception), and a mirror has a time limit for all of its files, retries and waits included
(``source_time_limit``); past it, the next source is tried.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import requests

from fmnist import RAW_FILES
from fmnist.errors import DataError, FetchError
from fmnist.files import empty_directory, write_bytes
from fmnist.idx import GZIP_MAGIC, MAX_DIMENSIONS, UNSIGNED_BYTE

log = logging.getLogger(__name__)

# The published checksums are facts about the data set, not settings to experiment with, so they
# live in a file of their own (``sha256sum -c`` reads it too), not in params.yaml.
CHECKSUMS_FILE = Path(__file__).with_name("fashion-mnist.sha256")
DEBIAN_DIRECTORY = "/usr/share/datasets/fashion-mnist"
CHUNK_SIZE = 64 * 1024
MEGABYTE = 1024 * 1024
# Without a Content-Length there is no percentage to report, so progress goes by volume.
PROGRESS_EVERY_BYTES = 4 * MEGABYTE
# train-images-idx3-ubyte (60,000 images of 28 x 28 bytes after a 16-byte header) is the largest
# file of the data set: a longer payload is not Fashion-MNIST, whatever its header declares.
MAX_PAYLOAD_BYTES = 47_040_016
# The largest download, train-images-idx3-ubyte.gz, is 26.4 MB from Zalando and Debian alike.
# Even stored without compression it stays under this; and gzip allows zero padding between
# members, which would otherwise let a source send an endless stream that never decompresses
# to anything.
MAX_COMPRESSED_BYTES = 64 * MEGABYTE
# Magic number and up to MAX_DIMENSIONS big-endian dimensions.
IDX_HEADER_MAX_BYTES = 4 + 4 * MAX_DIMENSIONS


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


class BoundedPayload:
    """The decompressed payload of one file, built from its bytes as they are read.

    ``feed`` takes the file's bytes in chunks, gzipped or not (the first two bytes tell), and
    decompresses at most CHUNK_SIZE bytes per step while hashing them. It raises FetchError,
    naming the file, as soon as

    - the compressed bytes pass MAX_COMPRESSED_BYTES,
    - the IDX header (the payload's first bytes) declares more than MAX_PAYLOAD_BYTES, or
    - the payload grows past what that header declares, or past MAX_PAYLOAD_BYTES when it
      does not begin with an IDX header (then the checksum rejects it if it ends sooner),

    so that a file refused costs at most its limit plus one step of memory, however much it
    would inflate to. Corrupt gzip data raises DataError.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        """The file's name as its source holds it, for messages."""
        self.read_bytes = 0
        """Bytes read so far, compressed if the file is."""
        self.size = 0
        """Bytes of payload so far."""
        self._sha256 = hashlib.sha256()
        self._chunks: list[bytes] = []
        self._start = b""
        self._gzipped: bool | None = None
        self._inflater: zlib._Decompress | None = None
        self._header = b""
        self._header_read = False
        self._limit = MAX_PAYLOAD_BYTES
        self._limit_declared = False

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of the file."""
        self.read_bytes += len(chunk)
        if self.read_bytes > MAX_COMPRESSED_BYTES:
            raise FetchError(
                f"{self.label}: more than {MAX_COMPRESSED_BYTES:,} bytes, larger than any "
                "Fashion-MNIST download"
            )
        if self._gzipped is None:
            self._start += chunk
            if len(self._start) < len(GZIP_MAGIC):
                return
            chunk, self._start = self._start, b""
            self._gzipped = chunk.startswith(GZIP_MAGIC)
        if self._gzipped:
            self._inflate(chunk)
        else:
            self._append(chunk)

    def end(self) -> None:
        """Declare the file complete; raise DataError if its gzip stream stops midway."""
        if self._gzipped is None:  # a file of fewer bytes than the gzip magic number
            self._gzipped = False
            self._append(self._start)
        elif self._gzipped and self._inflater is not None:
            raise DataError(
                f"{self.label}: corrupt or truncated gzip data (compressed file ended before "
                "the end-of-stream marker was reached)"
            )

    @property
    def sha256(self) -> str:
        """The SHA-256 (hex) of the payload read so far: of all of it once ended."""
        return self._sha256.hexdigest()

    def take_verified(self, name: str, sha256: str) -> bytes:
        """Hand over the whole payload, once ended, if it has the SHA-256 ``sha256``; else
        raise FetchError. The chunks are released, so the payload is never held twice for long.
        """
        digest = self.sha256
        if digest != sha256:
            raise FetchError(
                f"{name}: checksum mismatch: {self.size:,} bytes with sha256 {digest}, "
                f"expected {sha256}"
            )
        data = b"".join(self._chunks)
        self._chunks = []
        return data

    def _inflate(self, data: bytes) -> None:
        while True:
            if self._inflater is None:
                # Between gzip members only zero padding may come, as gzip.decompress allows.
                data = data.lstrip(b"\0")
                if not data:
                    return
                self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                output = self._inflater.decompress(data, CHUNK_SIZE)
            except zlib.error as error:
                raise DataError(f"{self.label}: corrupt or truncated gzip data ({error})") from None
            self._append(output)
            if self._inflater.eof:
                data = self._inflater.unused_data
                self._inflater = None
            else:
                data = self._inflater.unconsumed_tail
                # A full step may leave output pending inside zlib even with no input left.
                if not data and len(output) < CHUNK_SIZE:
                    return

    def _append(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if not self._header_read:
            self._header += data[: IDX_HEADER_MAX_BYTES - len(self._header)]
            self._read_header()
        if self.size > self._limit:
            verb = "decompresses to" if self._gzipped else "holds"
            if self._limit_declared:
                limit = f"the {self._limit:,} bytes its IDX header declares"
            else:
                limit = f"{MAX_PAYLOAD_BYTES:,} bytes, larger than any Fashion-MNIST file"
            raise FetchError(f"{self.label}: {verb} more than {limit}")
        self._sha256.update(data)
        self._chunks.append(data)

    def _read_header(self) -> None:
        """Lower the limit to the size that the IDX header declares, once all of it is here."""
        header = self._header
        if len(header) < 4:
            return
        zero1, zero2, data_type, ndim = header[:4]
        if (zero1, zero2, data_type) != (0, 0, UNSIGNED_BYTE) or not 1 <= ndim <= MAX_DIMENSIONS:
            self._header_read = True  # not Fashion-MNIST's kind of IDX: the checksum will say so
            return
        header_size = 4 + 4 * ndim
        if len(header) < header_size:
            return
        self._header_read = True
        shape = struct.unpack(f">{ndim}I", header[4:header_size])
        declared = header_size + math.prod(shape)
        if declared > MAX_PAYLOAD_BYTES:
            raise FetchError(
                f"{self.label}: its IDX header declares {declared:,} bytes (shape "
                f"{shape}), more than any Fashion-MNIST file ({MAX_PAYLOAD_BYTES:,} bytes)"
            )
        self._limit = declared
        self._limit_declared = True


def find_local_file(directory: Path, name: str) -> Path:
    """``<name>`` in ``directory`` if it is a file there, else ``<name>.gz``, else FetchError."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FetchError(f"neither {name} nor {name}.gz is there")


def read_bounded(path: Path) -> BoundedPayload:
    """The payload of the local file ``path``, read in chunks within BoundedPayload's limits."""
    payload = BoundedPayload(path.name)
    try:
        with path.open("rb") as file:
            while chunk := file.read(CHUNK_SIZE):
                payload.feed(chunk)
    except OSError as error:
        raise FetchError(f"{path.name}: cannot read: {error.strerror}") from None
    payload.end()
    return payload


def retry_wait(attempt: int, timeout: float, backoff: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (from 1): ``backoff * 2**(k-1)``,
    but never longer than ``timeout``, so that the waits cannot outgrow the attempts.
    """
    return min(backoff * 2 ** (attempt - 1), timeout)


def source_time_limit(timeout: float, attempts: int, backoff: float) -> float:
    """Seconds that one mirror may take for all its files, every attempt and wait included.

    It is what one file could take if each of its attempts ran to the timeout:
    ``attempts * timeout`` plus the ``attempts - 1`` waits of ``retry_wait``, so at most
    ``(2 * attempts - 1) * timeout``. The files share it, so a mirror that is slow on every
    file fails as a whole, and the next source is tried.
    """
    waits = sum(retry_wait(attempt, timeout, backoff) for attempt in range(1, attempts))
    return attempts * timeout + waits


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


@contextlib.contextmanager
def _cut_off_at(
    deadline: float, response: requests.Response, expired: threading.Event
) -> Iterator[None]:
    """Within the block, set ``expired`` at ``deadline`` and shut the response's connection down.

    requests' read timeout starts again with every byte received, and a read waits for a
    whole chunk, so a server trickling its body could hold a read for as long as it likes;
    a shut-down socket ends any read at once, plain or TLS. The timer holds a duplicate of
    the connection's descriptor, so that it never shuts down another socket that reuses the
    number once the response is closed.
    """
    connection = None
    with contextlib.suppress(AttributeError, OSError, ValueError):
        connection = socket.socket(fileno=os.dup(response.raw.fileno()))

    def expire() -> None:
        expired.set()
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(max(deadline - time.monotonic(), 0.0), expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()
        if connection is not None:
            connection.close()


def _check_response(response: requests.Response, name: str) -> int | None:
    """Raise unless ``response`` starts a usable body; return the length it announces."""
    status = response.status_code
    if status != 200:
        reason = f"HTTP {status} {response.reason}"
        # Server overload and rate limits pass; 404 and its kin will not.
        if status >= 500 or status in (408, 429):
            raise _TransientError(reason)
        raise FetchError(f"{name}.gz: {reason}")
    if "Content-Encoding" in response.headers:
        return None  # requests decodes such a body, so its length is not comparable
    length = response.headers.get("Content-Length", "")
    total = int(length) if length.isdigit() else None
    if total is not None and total > MAX_COMPRESSED_BYTES:
        raise FetchError(
            f"{name}.gz: Content-Length {total:,} is larger than any Fashion-MNIST download "
            f"({MAX_COMPRESSED_BYTES:,} bytes)"
        )
    return total


def _download_once(
    session: requests.Session, url: str, name: str, *, timeout: float, deadline: float
) -> BoundedPayload:
    """One attempt at ``url``, over by ``deadline`` (a ``time.monotonic()`` value) whatever
    the server sends; return the payload, decompressed but not yet verified. Raise
    _TransientError for a failure another attempt may not repeat, FetchError or DataError
    for one it would.

    The body is ended at the deadline by ``_cut_off_at``, and the deadline is checked between
    chunks. The status line and headers come before there is a connection to cut: connecting
    and each read of them wait at most the time left, so only a server trickling its headers
    (at most 100 lines of 64 KiB, http.client's limits) can outlast the deadline. ``timeout``
    is only named in messages.
    """
    # Identity encoding keeps the body byte-for-byte as stored, so Content-Length applies to it.
    headers = {"Accept-Encoding": "identity"}
    seconds_left = max(deadline - time.monotonic(), 0.001)
    payload = BoundedPayload(f"{name}.gz")
    expired = threading.Event()
    received = 0
    try:
        with session.get(
            url, stream=True, timeout=(seconds_left, seconds_left), headers=headers
        ) as response:
            total = _check_response(response, name)
            step = max(total // 10, 1) if total else PROGRESS_EVERY_BYTES
            # Small files arrive at once; progress matters only for the large ones.
            show_progress = total is None or total >= MEGABYTE
            with _cut_off_at(deadline, response, expired):
                for chunk in response.iter_content(CHUNK_SIZE):
                    if time.monotonic() > deadline:
                        expired.set()
                        break
                    payload.feed(chunk)
                    received += len(chunk)
                    if show_progress and received // step > (received - len(chunk)) // step:
                        _log_progress(name, received, total)
    except requests.RequestException as error:
        if not expired.is_set():
            raise _TransientError(_describe_request_error(error, timeout)) from None
    if expired.is_set():
        raise _TransientError(f"not complete within the {timeout:g} s timeout")
    if total is not None and received != total:
        raise _TransientError(f"connection dropped after {received:,} of {total:,} bytes")
    payload.end()
    return payload


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
    deadline: float = math.inf,
) -> BoundedPayload:
    """Download ``url`` in up to ``attempts`` attempts; return its payload, not yet verified.

    Each attempt lasts at most ``timeout`` seconds from the request to the last byte, and
    ends sooner at ``deadline`` (a ``time.monotonic()`` value: the source's time limit);
    between attempts it waits ``retry_wait`` seconds. Raise FetchError with the last reason
    once the attempts are spent, once the deadline leaves no time for another, or at once
    for a failure that would repeat (an HTTP status such as 404, a file that is too large).
    """
    if time.monotonic() >= deadline:
        raise FetchError(f"{name}.gz: not tried: this source's time limit is spent")
    attempt = 1
    while True:
        try:
            return _download_once(
                session,
                url,
                name,
                timeout=timeout,
                deadline=min(time.monotonic() + timeout, deadline),
            )
        except _TransientError as error:
            tries = f"{attempt} attempt{'s' if attempt > 1 else ''}"
            if attempt >= attempts:
                raise FetchError(f"{name}.gz: {error} (after {tries})") from None
            wait = retry_wait(attempt, timeout, backoff)
            if time.monotonic() + wait >= deadline:
                raise FetchError(
                    f"{name}.gz: {error} (after {tries}; this source's time limit is spent)"
                ) from None
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


def fetch_from_directory(directory: Path, sha256: Mapping[str, str]) -> dict[str, bytes]:
    """Return every expected file from ``directory``, decompressed and verified."""
    if not directory.is_dir():
        raise FetchError("no such directory")
    payloads = {}
    for name, digest in sha256.items():
        path = find_local_file(directory, name)
        payload = read_bounded(path)
        payloads[name] = payload.take_verified(name, digest)
        log.info(
            "%s: %s bytes, %s decompressed, sha256 verified",
            path.name,
            f"{payload.read_bytes:,}",
            f"{payload.size:,}",
        )
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

    All of it within ``source_time_limit(timeout, attempts, backoff)`` seconds. Only
    transport failures are retried. A complete body with the wrong size or checksum, or
    gzip data that does not decompress, means the mirror serves a different file: fetching
    it again would cost 26 MB for the same answer, so that URL (and the source) fails at once.
    """
    limit = source_time_limit(timeout, attempts, backoff)
    deadline = time.monotonic() + limit
    log.info("%s: at most %g s for all files, retries included", base_url, limit)
    payloads = {}
    with requests.Session() as session:
        for name, digest in sha256.items():
            url = f"{base_url.rstrip('/')}/{name}.gz"
            payload = download_file(
                session,
                url,
                name,
                timeout=timeout,
                attempts=attempts,
                backoff=backoff,
                deadline=deadline,
            )
            payloads[name] = payload.take_verified(name, digest)
            log.info(
                "%s.gz: %s bytes downloaded, %s decompressed, sha256 verified",
                name,
                f"{payload.read_bytes:,}",
                f"{payload.size:,}",
            )
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
    SHA-256; nothing is written until all of them have been verified. A file is refused as
    soon as it is larger than it may be (``BoundedPayload``), and a mirror is given up once
    ``source_time_limit(timeout, attempts, backoff)`` seconds have passed, so each source
    costs bounded memory and time. When every source fails, raise FetchError listing each
    source with its reason and how to fix it.
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
