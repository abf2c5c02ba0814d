"""Tests of the fetch stage: local directories, HTTP mirrors on 127.0.0.1, and the entry point.

All but the last test use tiny synthetic IDX files with their own checksums; the last one
verifies the real files of Debian's dataset-fashion-mnist package. The bounds on what a source
may send (gzip bombs, endless bodies, trickling servers) have a section of their own.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from fmnist.errors import FetchError
from fmnist.fetch import (
    CHECKSUMS_FILE,
    MAX_COMPRESSED_BYTES,
    BoundedPayload,
    fetch_dataset,
    read_checksums,
    retry_wait,
    source_time_limit,
)
from fmnist.idx import encode_idx
from tests.conftest import debian_data

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
QUICK = {"timeout": 0.5, "attempts": 2, "backoff": 0.01}


def make_payloads() -> dict[str, bytes]:
    """Four small IDX files named like the real ones."""
    generator = np.random.default_rng(0)
    return {
        "train-images-idx3-ubyte": encode_idx(generator.integers(0, 256, (3, 28, 28), np.uint8)),
        "train-labels-idx1-ubyte": encode_idx(generator.integers(0, 10, 3, np.uint8)),
        "t10k-images-idx3-ubyte": encode_idx(generator.integers(0, 256, (2, 28, 28), np.uint8)),
        "t10k-labels-idx1-ubyte": encode_idx(generator.integers(0, 10, 2, np.uint8)),
    }


PAYLOADS = make_payloads()
EXPECTED = {name: hashlib.sha256(data).hexdigest() for name, data in PAYLOADS.items()}


def with_corrupted(name: str) -> dict[str, bytes]:
    """The payloads with the last byte of ``name`` flipped: same size, different checksum."""
    data = PAYLOADS[name]
    return dict(PAYLOADS, **{name: data[:-1] + bytes([data[-1] ^ 0xFF])})


def write_directory(directory: Path, files: dict[str, bytes], gzipped: bool) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if gzipped:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return directory


def read_outputs(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def assert_outputs_match(directory: Path) -> None:
    assert read_outputs(directory) == dict(sorted(PAYLOADS.items()))


# --- local directories -------------------------------------------------------------------


def test_gzipped_and_raw_directories_give_identical_outputs(tmp_path: Path) -> None:
    gzipped = write_directory(tmp_path / "gzipped", PAYLOADS, gzipped=True)
    raw = write_directory(tmp_path / "raw", PAYLOADS, gzipped=False)

    used_gzipped = fetch_dataset([str(gzipped)], tmp_path / "out1", sha256=EXPECTED, **QUICK)
    used_raw = fetch_dataset([str(raw)], tmp_path / "out2", sha256=EXPECTED, **QUICK)

    assert (used_gzipped, used_raw) == (str(gzipped), str(raw))
    assert_outputs_match(tmp_path / "out1")
    assert read_outputs(tmp_path / "out1") == read_outputs(tmp_path / "out2")


def test_first_working_source_in_order_is_used(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    incomplete = write_directory(
        tmp_path / "incomplete", dict(list(PAYLOADS.items())[:3]), gzipped=True
    )
    good = write_directory(tmp_path / "good", PAYLOADS, gzipped=True)
    also_good = write_directory(tmp_path / "also-good", PAYLOADS, gzipped=False)

    used = fetch_dataset(
        [str(missing), str(incomplete), str(good), str(also_good)],
        tmp_path / "out",
        sha256=EXPECTED,
        **QUICK,
    )

    assert used == str(good)
    assert_outputs_match(tmp_path / "out")


def test_checksum_mismatch_fails_and_writes_nothing(tmp_path: Path) -> None:
    source = write_directory(
        tmp_path / "source", with_corrupted("t10k-labels-idx1-ubyte"), gzipped=True
    )
    out = tmp_path / "out"
    out.mkdir()

    with pytest.raises(FetchError) as caught:
        fetch_dataset([str(source)], out, sha256=EXPECTED, **QUICK)

    message = str(caught.value)
    assert f"{source}: t10k-labels-idx1-ubyte: checksum mismatch: " in message
    assert list(out.iterdir()) == []  # the three good files are not written, nor temp files


def test_truncated_file_is_a_checksum_mismatch_with_its_size(tmp_path: Path) -> None:
    files = dict(PAYLOADS, **{"train-labels-idx1-ubyte": PAYLOADS["train-labels-idx1-ubyte"][:-1]})
    source = write_directory(tmp_path / "source", files, gzipped=False)

    with pytest.raises(FetchError, match=r"train-labels-idx1-ubyte: checksum mismatch: 10 bytes"):
        fetch_dataset([str(source)], tmp_path / "out", sha256=EXPECTED, **QUICK)
    assert not (tmp_path / "out").exists()


def test_every_source_failing_lists_each_reason_and_the_fixes(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    truncated = write_directory(tmp_path / "truncated", PAYLOADS, gzipped=True)
    whole = (truncated / "train-labels-idx1-ubyte.gz").read_bytes()
    (truncated / "train-labels-idx1-ubyte.gz").write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "out"
    out.mkdir()

    with pytest.raises(FetchError) as caught:
        fetch_dataset([str(missing), str(truncated)], out, sha256=EXPECTED, **QUICK)

    lines = str(caught.value).splitlines()
    assert f"  {missing}: no such directory" in lines
    assert f"  {truncated}: train-labels-idx1-ubyte.gz: corrupt or truncated gzip data" in lines[2]
    assert any("sudo apt-get install dataset-fashion-mnist" in line for line in lines)
    assert any("fetch.sources in params.yaml" in line for line in lines)
    assert list(out.iterdir()) == []


# --- HTTP mirrors on 127.0.0.1 ------------------------------------------------------------


class Mirror:
    """A base URL served by a handler, with the paths it was asked for and the body bytes it
    sent; ``stopped`` tells streaming handlers to end (the test is over).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.requests: list[str] = []
        self.sent_bytes = 0
        self.stopped = threading.Event()


def serve_files(
    files: dict[str, bytes],
    *,
    failures_first: int = 0,
    drop_midway: bool = False,
    delay: float = 0.0,
) -> Callable[[Mirror], type[http.server.BaseHTTPRequestHandler]]:
    """A handler factory serving ``<name>.gz`` for each file, gzipped, and 404 for the rest.

    The first ``failures_first`` requests get a 503; with ``drop_midway`` every body stops
    halfway through the length its Content-Length announces; every answer comes ``delay``
    seconds after its request.
    """
    bodies = {f"/{name}.gz": gzip.compress(data) for name, data in files.items()}

    def make_handler(mirror: Mirror) -> type[http.server.BaseHTTPRequestHandler]:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                mirror.requests.append(self.path)
                body = bodies.get(self.path)
                time.sleep(delay)
                if len(mirror.requests) <= failures_first:
                    self.send_error(503)
                elif body is None:
                    self.send_error(404)
                else:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/gzip")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2] if drop_midway else body)
                    self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep the test output clean

        return Handler

    return make_handler


def serve_stream(
    make_body: Callable[[], Iterable[bytes]], *, length: int | None = None, interval: float = 0.0
) -> Callable[[Mirror], type[http.server.BaseHTTPRequestHandler]]:
    """A handler factory answering every path with the chunks of ``make_body()``, one every
    ``interval`` seconds, announcing ``length`` as Content-Length if given.

    It stops at the end of the chunks, when the client hangs up, or when the test is over.
    """

    def make_handler(mirror: Mirror) -> type[http.server.BaseHTTPRequestHandler]:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                mirror.requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                if length is not None:
                    self.send_header("Content-Length", str(length))
                self.end_headers()
                self.close_connection = True
                for chunk in make_body():
                    if mirror.stopped.wait(interval):
                        return
                    try:
                        self.wfile.write(chunk)
                    except OSError:  # the client hung up: what the test expects of it
                        return
                    mirror.sent_bytes += len(chunk)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    return make_handler


@pytest.fixture
def start_mirror() -> Iterator[Callable[..., Mirror]]:
    """Start HTTP servers on 127.0.0.1 for the test; stop them all at the end."""
    servers: list[http.server.ThreadingHTTPServer] = []
    mirrors: list[Mirror] = []

    def start(
        make_handler: Callable[[Mirror], type[http.server.BaseHTTPRequestHandler]],
    ) -> Mirror:
        mirror = Mirror("")
        mirrors.append(mirror)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(mirror))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        mirror.url = f"http://127.0.0.1:{server.server_address[1]}/"
        return mirror

    yield start
    for mirror in mirrors:
        mirror.stopped.set()
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A URL whose server accepts connections (the kernel does) but never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def test_mirror_serving_gzipped_files_gives_identical_outputs(
    tmp_path: Path, start_mirror: Callable[..., Mirror]
) -> None:
    mirror = start_mirror(serve_files(PAYLOADS))
    raw = write_directory(tmp_path / "raw", PAYLOADS, gzipped=False)

    used = fetch_dataset([mirror.url], tmp_path / "out", sha256=EXPECTED, **QUICK)
    fetch_dataset([str(raw)], tmp_path / "local", sha256=EXPECTED, **QUICK)

    assert used == mirror.url
    assert sorted(mirror.requests) == sorted(f"/{name}.gz" for name in PAYLOADS)
    assert_outputs_match(tmp_path / "out")
    assert read_outputs(tmp_path / "out") == read_outputs(tmp_path / "local")


def test_mirror_serving_a_corrupted_file_fails_without_retrying(
    tmp_path: Path, start_mirror: Callable[..., Mirror]
) -> None:
    mirror = start_mirror(serve_files(with_corrupted("t10k-images-idx3-ubyte")))

    with pytest.raises(
        FetchError, match=r"t10k-images-idx3-ubyte: checksum mismatch: [\d,]+ bytes"
    ):
        fetch_dataset([mirror.url], tmp_path / "out", sha256=EXPECTED, **QUICK)

    assert mirror.requests.count("/t10k-images-idx3-ubyte.gz") == 1
    assert not (tmp_path / "out").exists()


def test_silent_server_fails_within_the_timeout(tmp_path: Path, silent_url: str) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        fetch_dataset([silent_url], tmp_path / "out", sha256=EXPECTED, **QUICK)
    elapsed = time.monotonic() - started

    assert elapsed < 5  # two attempts of 0.5 s each, not a hang
    message = str(caught.value)
    assert f"{silent_url}: train-images-idx3-ubyte.gz: no answer within the 0.5 s" in message
    assert "(after 2 attempts)" in message
    assert not (tmp_path / "out").exists()


def test_connection_dropped_midway_fails_and_writes_nothing(
    tmp_path: Path, start_mirror: Callable[..., Mirror]
) -> None:
    mirror = start_mirror(serve_files(PAYLOADS, drop_midway=True))
    out = tmp_path / "out"
    out.mkdir()

    with pytest.raises(FetchError, match=r"train-images-idx3-ubyte.gz: connection dropped"):
        fetch_dataset([mirror.url], out, sha256=EXPECTED, **QUICK)

    assert mirror.requests == ["/train-images-idx3-ubyte.gz"] * 2  # retried once, then given up
    assert list(out.iterdir()) == []


def test_missing_file_on_mirror_is_not_retried(
    tmp_path: Path, start_mirror: Callable[..., Mirror]
) -> None:
    files = {name: data for name, data in PAYLOADS.items() if name != "train-labels-idx1-ubyte"}
    mirror = start_mirror(serve_files(files))

    with pytest.raises(FetchError, match=r"train-labels-idx1-ubyte.gz: HTTP 404"):
        fetch_dataset([mirror.url], tmp_path / "out", sha256=EXPECTED, **QUICK)

    assert mirror.requests.count("/train-labels-idx1-ubyte.gz") == 1
    assert not (tmp_path / "out").exists()


def test_failed_first_request_is_retried(
    tmp_path: Path, start_mirror: Callable[..., Mirror]
) -> None:
    mirror = start_mirror(serve_files(PAYLOADS, failures_first=1))

    used = fetch_dataset([mirror.url], tmp_path / "out", sha256=EXPECTED, **QUICK)

    assert used == mirror.url
    assert mirror.requests.count("/train-images-idx3-ubyte.gz") == 2
    assert len(mirror.requests) == len(PAYLOADS) + 1
    assert_outputs_match(tmp_path / "out")


def test_server_errors_stop_after_the_given_attempts(
    tmp_path: Path, start_mirror: Callable[..., Mirror]
) -> None:
    mirror = start_mirror(serve_files(PAYLOADS, failures_first=100))

    with pytest.raises(FetchError, match=r"HTTP 503 .*\(after 3 attempts\)"):
        fetch_dataset(
            [mirror.url], tmp_path / "out", sha256=EXPECTED, timeout=0.5, attempts=3, backoff=0.01
        )

    assert len(mirror.requests) == 3


def test_every_failing_mirror_is_listed_in_order_and_nothing_is_written(
    tmp_path: Path, start_mirror: Callable[..., Mirror], silent_url: str
) -> None:
    dropping = start_mirror(serve_files(PAYLOADS, drop_midway=True))
    corrupt = start_mirror(serve_files(with_corrupted("train-images-idx3-ubyte")))
    out = tmp_path / "data" / "raw"
    out.mkdir(parents=True)
    (out / "train-images-idx3-ubyte").write_bytes(b"the previous download")

    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        fetch_dataset([dropping.url, corrupt.url, silent_url], out, sha256=EXPECTED, **QUICK)
    elapsed = time.monotonic() - started

    tried = str(caught.value).splitlines()[1:4]
    assert tried[0].startswith(f"  {dropping.url}: train-images-idx3-ubyte.gz: connection dropped")
    assert tried[0].endswith("(after 2 attempts)")
    assert tried[1].startswith(f"  {corrupt.url}: train-images-idx3-ubyte: checksum mismatch: ")
    assert tried[2] == (
        f"  {silent_url}: train-images-idx3-ubyte.gz: no answer within the 0.5 s timeout "
        "(after 2 attempts)"
    )
    # Retries stay within bounds: two tries where they may help, one for a wrong file.
    assert len(dropping.requests) == 2
    assert len(corrupt.requests) == 1
    assert elapsed < 10
    # The previous download is untouched and no partial file is left anywhere.
    assert sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*")) == [
        "data",
        "data/raw",
        "data/raw/train-images-idx3-ubyte",
    ]
    assert (out / "train-images-idx3-ubyte").read_bytes() == b"the previous download"


# --- bounds on what a source may send ----------------------------------------------------

MEBIBYTE = 1024 * 1024
# The header of the real train-images-idx3-ubyte: 60,000 images of 28 x 28, 47,040,016 bytes in
# all, the largest file a source may send.
LARGEST_HEADER = struct.pack(">BBBBIII", 0, 0, 0x08, 3, 60_000, 28, 28)
# Runs the command in its arguments and prints its peak resident set: measured from here, a
# child's peak would include the peak of pytest itself, which Linux counts in it at exec.
MEASURE_PEAK = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(child.pid, 0)
print("peak", usage.ru_maxrss * 1024, "exit", os.waitstatus_to_exitcode(status))
"""
FETCH_AND_PRINT_THE_ERROR = """
import json, sys
from fmnist.errors import FetchError
from fmnist.fetch import fetch_dataset
try:
    fetch_dataset([sys.argv[1]], sys.argv[2], json.loads(sys.argv[3]), timeout=10, attempts=1)
except FetchError as error:
    print(error)
"""


def gzip_stream(header: bytes, zero_mebibytes: int, level: int = 9) -> Iterator[bytes]:
    """A gzip stream of ``header`` followed by that many MiB of zeros, made a MiB at a time.

    At level 9 each MiB of zeros takes about 1 KB; at level 0 (stored) a MiB.
    """
    compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    yield compressor.compress(header)
    zeros = bytes(MEBIBYTE)
    for _ in range(zero_mebibytes):
        yield compressor.compress(zeros)
    yield compressor.flush()


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """256 KB of gzip that inflates to 256 MiB behind the header of the largest file."""
    return b"".join(gzip_stream(LARGEST_HEADER, 256))


def fetch_in_child(source: str, out: Path) -> tuple[str, int]:
    """Fetch from ``source`` in a new process; return its output and its peak resident set."""
    environment = dict(os.environ, PYTHONPATH=str(REPOSITORY_ROOT))
    fetch = [
        sys.executable,
        "-c",
        FETCH_AND_PRINT_THE_ERROR,
        source,
        str(out),
        json.dumps(EXPECTED),
    ]
    result = subprocess.run(
        [sys.executable, "-c", MEASURE_PEAK, *fetch],
        cwd=out.parent,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    *output, measured = result.stdout.splitlines()
    _, peak, _, status = measured.split()
    assert status == "0", result.stderr
    return "\n".join(output), int(peak)


@pytest.mark.parametrize("where", ["directory", "mirror"])
def test_gzip_bomb_is_refused_at_its_declared_size_in_bounded_memory(
    tmp_path: Path, start_mirror: Callable[..., Mirror], gzip_bomb: bytes, where: str
) -> None:
    if where == "directory":
        source = write_directory(tmp_path / "source", PAYLOADS, gzipped=True)
        (source / "train-images-idx3-ubyte.gz").write_bytes(gzip_bomb)
        source = str(source)
    else:
        source = start_mirror(serve_stream(lambda: [gzip_bomb], length=len(gzip_bomb))).url

    output, peak = fetch_in_child(source, tmp_path / "out")

    assert output.splitlines()[1] == (
        f"  {source}: train-images-idx3-ubyte.gz: decompresses to more than the 47,040,016 "
        "bytes its IDX header declares"
    )
    # The largest file's 47 MB and the interpreter's own, not the 256 MiB it inflates to.
    assert peak < 200 * MEBIBYTE, f"peak resident set {peak / MEBIBYTE:.0f} MiB"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (
            encode_idx(np.zeros((3, 28, 28), np.uint8))[:16],
            "decompresses to more than the 2,368 bytes its IDX header declares",
        ),
        (b"", "decompresses to more than 47,040,016 bytes, larger than any Fashion-MNIST file"),
        (
            struct.pack(">BBBBIII", 0, 0, 0x08, 3, 100_000, 28, 28),
            "its IDX header declares 78,400,016 bytes (shape (100000, 28, 28)), more than any "
            "Fashion-MNIST file (47,040,016 bytes)",
        ),
    ],
    ids=["declared-size", "no-header", "header-too-large"],
)
def test_payload_is_cut_at_its_header_or_the_largest_file(
    tmp_path: Path, header: bytes, message: str
) -> None:
    source = write_directory(tmp_path / "source", PAYLOADS, gzipped=True)
    (source / "train-images-idx3-ubyte.gz").write_bytes(b"".join(gzip_stream(header, 64, 1)))

    with pytest.raises(FetchError) as caught:
        fetch_dataset([str(source)], tmp_path / "out", sha256=EXPECTED, **QUICK)

    assert str(caught.value).splitlines()[1] == f"  {source}: train-images-idx3-ubyte.gz: {message}"


def test_payload_is_the_same_whatever_the_chunks_and_gzip_members() -> None:
    data = PAYLOADS["train-images-idx3-ubyte"]
    # Two gzip members with zero padding between and after them, as gzip.decompress accepts.
    stream = gzip.compress(data[:100]) + bytes(3) + gzip.compress(data[100:]) + bytes(5)
    for chunk_size in (1, 7, len(stream)):
        payload = BoundedPayload("train-images-idx3-ubyte.gz")
        for start in range(0, len(stream), chunk_size):
            payload.feed(stream[start : start + chunk_size])
        payload.end()
        assert (
            payload.take_verified("train-images-idx3-ubyte", EXPECTED["train-images-idx3-ubyte"])
            == data
        )


def endless_gzip_after_a_good_file() -> Iterator[bytes]:
    """The train images gzipped, then a GiB of the zero padding gzip allows after a member."""
    yield gzip.compress(PAYLOADS["train-images-idx3-ubyte"])
    zeros = bytes(MEBIBYTE)
    for _ in range(1024):
        yield zeros


@pytest.mark.parametrize(
    ("make_body", "length", "message", "read_before_refusal"),
    [
        (
            lambda: gzip_stream(PAYLOADS["train-images-idx3-ubyte"][:16], 1024, level=0),
            None,
            "decompresses to more than the 2,368 bytes its IDX header declares",
            0,
        ),
        (
            endless_gzip_after_a_good_file,
            None,
            f"more than {MAX_COMPRESSED_BYTES:,} bytes, larger than any Fashion-MNIST download",
            MAX_COMPRESSED_BYTES,
        ),
        (
            lambda: [b"\x1f\x8b"],
            10**12,
            "Content-Length 1,000,000,000,000 is larger than any Fashion-MNIST download "
            f"({MAX_COMPRESSED_BYTES:,} bytes)",
            0,
        ),
    ],
    ids=["inflating-without-length", "padding-without-length", "announced-too-large"],
)
def test_a_body_too_large_is_refused_without_reading_the_rest(
    tmp_path: Path,
    start_mirror: Callable[..., Mirror],
    make_body,
    length,
    message: str,
    read_before_refusal: int,
) -> None:
    mirror = start_mirror(serve_stream(make_body, length=length))

    with pytest.raises(FetchError) as caught:
        fetch_dataset([mirror.url], tmp_path / "out", sha256=EXPECTED, **QUICK)

    assert str(caught.value).splitlines()[1] == (
        f"  {mirror.url}: train-images-idx3-ubyte.gz: {message}"
    )
    assert mirror.requests == ["/train-images-idx3-ubyte.gz"]  # too large is not retried
    # Of the GiB on offer, the server sent what was read and what the sockets' buffers took.
    assert mirror.sent_bytes < read_before_refusal + 32 * MEBIBYTE
    assert not (tmp_path / "out").exists()


def trickle(body: bytes) -> Callable[[], Iterator[bytes]]:
    return lambda: (body[index : index + 1] for index in range(len(body)))


def test_trickling_mirror_is_cut_at_the_timeout_and_the_next_source_used(
    tmp_path: Path, start_mirror: Callable[..., Mirror], caplog: pytest.LogCaptureFixture
) -> None:
    body = gzip.compress(PAYLOADS["train-images-idx3-ubyte"])
    slow = start_mirror(serve_stream(trickle(body), length=len(body), interval=0.5))
    good = write_directory(tmp_path / "good", PAYLOADS, gzipped=True)

    started = time.monotonic()
    used = fetch_dataset(
        [slow.url, str(good)],
        tmp_path / "out",
        sha256=EXPECTED,
        timeout=2,
        attempts=2,
        backoff=0.01,
    )
    elapsed = time.monotonic() - started

    # Two attempts of 2 s each: every byte came within the timeout, but no attempt may last longer.
    assert 3.5 < elapsed < 8
    assert slow.requests == ["/train-images-idx3-ubyte.gz"] * 2
    assert used == str(good)
    assert_outputs_match(tmp_path / "out")
    assert re.search(
        r"train-images-idx3-ubyte.gz: not complete within the 2 s timeout \(after 2 attempts",
        caplog.text,
    ), caplog.text


def test_trickling_body_without_length_is_cut_at_the_timeout(
    tmp_path: Path, start_mirror: Callable[..., Mirror]
) -> None:
    slow = start_mirror(serve_stream(trickle(b"\x1f\x8b" + bytes(100)), interval=0.2))

    started = time.monotonic()
    with pytest.raises(FetchError, match=r"not complete within the 1 s timeout \(after 1 attempt"):
        fetch_dataset([slow.url], tmp_path / "out", sha256=EXPECTED, timeout=1, attempts=1)

    assert time.monotonic() - started < 3


def test_time_limits_of_a_source() -> None:
    # The defaults: 3 attempts of 30 s and waits of 1 and 2 s.
    assert source_time_limit(timeout=30, attempts=3, backoff=1) == 93
    # A wait never outgrows the timeout, so a source never takes more than (2n - 1) timeouts.
    assert [retry_wait(attempt, timeout=5, backoff=1) for attempt in range(1, 6)] == [1, 2, 4, 5, 5]
    assert source_time_limit(timeout=0.5, attempts=4, backoff=10) == 3.5


def test_waits_between_attempts_never_exceed_the_timeout(
    tmp_path: Path, start_mirror: Callable[..., Mirror]
) -> None:
    mirror = start_mirror(serve_files(PAYLOADS, failures_first=100))

    started = time.monotonic()
    with pytest.raises(FetchError, match=r"HTTP 503 .*\(after 4 attempts\)"):
        fetch_dataset(
            [mirror.url], tmp_path / "out", sha256=EXPECTED, timeout=0.5, attempts=4, backoff=10
        )
    elapsed = time.monotonic() - started

    # Waits of 10, 20 and 40 s as the backoff doubles, each cut to the 0.5 s timeout.
    assert len(mirror.requests) == 4
    assert 1.4 < elapsed < 3.5


def test_all_files_of_a_mirror_share_its_time_limit(
    tmp_path: Path, start_mirror: Callable[..., Mirror]
) -> None:
    # Each file comes in 0.4 s, within the 0.5 s timeout, but the four of them take longer
    # than the 1.01 s that the mirror may take in all (2 attempts of 0.5 s and a wait).
    mirror = start_mirror(serve_files(PAYLOADS, delay=0.4))

    started = time.monotonic()
    with pytest.raises(FetchError, match=r"this source's time limit is spent\)") as caught:
        fetch_dataset([mirror.url], tmp_path / "out", sha256=EXPECTED, **QUICK)
    elapsed = time.monotonic() - started

    assert len(str(caught.value).splitlines()[1]) < 200  # one line for the source
    assert elapsed < 2
    assert not (tmp_path / "out").exists()


# --- the stage entry point and the real data ----------------------------------------------


def test_stage_reports_every_source_without_a_traceback(tmp_path: Path) -> None:
    params = yaml.safe_load((REPOSITORY_ROOT / "params.yaml").read_text(encoding="utf-8"))
    bad_source = tmp_path / "no-such-directory"
    params["fetch"]["sources"] = [str(bad_source)]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    environment = dict(os.environ, PYTHONPATH=str(REPOSITORY_ROOT))

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "stages.fetch",
            "--checksums",
            str(CHECKSUMS_FILE),
            "--out",
            "data/raw",
        ],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"fetch: error:   {bad_source}: no such directory" in result.stderr
    assert "sudo apt-get install dataset-fashion-mnist" in result.stderr
    assert not (tmp_path / "data").exists()


def test_real_files_from_debian_package_are_verified(tmp_path: Path) -> None:
    debian = debian_data()

    # The published checksums of the decompressed files, as the checksum file must carry them.
    published = {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",  # noqa: E501
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",  # noqa: E501
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",  # noqa: E501
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",  # noqa: E501
    }
    sha256 = read_checksums()
    assert sha256 == published

    used = fetch_dataset([str(debian)], tmp_path, sha256, timeout=1, attempts=1)

    assert used == str(debian)
    sizes = {path.name: path.stat().st_size for path in tmp_path.iterdir()}
    assert sizes == {
        "train-images-idx3-ubyte": 47_040_016,
        "train-labels-idx1-ubyte": 60_008,
        "t10k-images-idx3-ubyte": 7_840_016,
        "t10k-labels-idx1-ubyte": 10_008,
    }
    # The checksum file is in the format of coreutils' sha256sum.
    check = subprocess.run(
        ["sha256sum", "--check", "--strict", str(CHECKSUMS_FILE)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda lines: lines[:3], "must list exactly the files"),
        (lambda lines: [*lines, lines[0]], "is listed twice"),
        (lambda lines: [lines[0].replace("c", "z", 1), *lines[1:]], "not '<sha256>  <file name>'"),
        (lambda lines: [lines[0][:40] + lines[0][64:], *lines[1:]], "not '<sha256>  <file name>'"),
    ],
    ids=["missing-file", "duplicate", "not-hex", "too-short"],
)
def test_a_bad_checksum_file_is_refused_by_line(tmp_path: Path, edit, message: str) -> None:
    lines = CHECKSUMS_FILE.read_text().splitlines()
    path = tmp_path / "checksums.sha256"
    path.write_text("\n".join(edit(lines)) + "\n")

    with pytest.raises(FetchError, match=re.escape(message)) as error:
        read_checksums(path)

    assert str(path) in str(error.value)
