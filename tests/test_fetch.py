"""Tests of fetching: local directories, HTTP mirrors on 127.0.0.1, and the stage's entry point.

Every test uses a few KB of random bytes named like the data set's files, with their own
checksums; tests/test_real_data.py verifies the real files.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import random
import re
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from fmnist.errors import FetchError
from fmnist.fetch import fetch_dataset
from stages import fetch as fetch_stage

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
MEBIBYTE = 1024 * 1024
_random = random.Random(0)
FILES = {
    "train-images-idx3-ubyte": _random.randbytes(6000),
    "train-labels-idx1-ubyte": _random.randbytes(600),
    "t10k-images-idx3-ubyte": _random.randbytes(3000),
    "t10k-labels-idx1-ubyte": _random.randbytes(300),
}
CHECKSUMS = {name: (len(data), hashlib.sha256(data).hexdigest()) for name, data in FILES.items()}
# Timeouts far longer than any test needs: only the trickle test waits for one.
QUICK = {"checksums": CHECKSUMS, "timeout": 10, "attempts": 2}


def corrupted(name: str) -> dict[str, bytes]:
    """The files with the last byte of ``name`` flipped: same size, another checksum."""
    data = FILES[name]
    return {**FILES, name: data[:-1] + bytes([data[-1] ^ 0xFF])}


def write_source(directory: Path, files: dict[str, bytes] = FILES, gzipped: bool = True) -> Path:
    directory.mkdir(parents=True)
    for name, data in files.items():
        if gzipped:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return directory


def read_outputs(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in directory.iterdir()}


def gzip_bomb(mebibytes: int) -> bytes:
    """A gzip stream of that many MiB of zeros, compressed a MiB at a time (about 1 KB each)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(MEBIBYTE)
    return b"".join(compressor.compress(zeros) for _ in range(mebibytes)) + compressor.flush()


class Mirror:
    """An HTTP server on 127.0.0.1 serving ``bodies`` by path, 404 for other paths.

    ``faults`` say what the first requests get instead of their file: "503", "drop" (half the
    body announced, then the connection closed) or "trickle" (one byte every half second).
    """

    def __init__(self, bodies: dict[str, bytes], faults: list[str]) -> None:
        self.bodies = bodies
        self.faults = faults
        self.requests: list[str] = []
        self.encodings: list[str | None] = []
        self.stopped = threading.Event()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                mirror.requests.append(self.path)
                mirror.encodings.append(self.headers.get("Accept-Encoding"))
                fault = mirror.faults.pop(0) if mirror.faults else None
                body = mirror.bodies.get(self.path)
                if fault == "503" or body is None:
                    self.send_error(503 if fault == "503" else 404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(ConnectionError):  # the client hung up, as it may
                    if fault == "drop":
                        self.wfile.write(body[: len(body) // 2])
                    elif fault == "trickle":
                        for byte in body:
                            if mirror.stopped.wait(0.5):
                                return
                            self.wfile.write(bytes([byte]))
                    else:
                        self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep the test output clean

        return Handler

    def stop(self) -> None:
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Mirror]]:
    """Start mirrors serving ``<name>.gz`` for the given files; stop them after the test."""
    mirrors: list[Mirror] = []

    def start(files: dict[str, bytes] = FILES, faults: tuple[str, ...] = ()) -> Mirror:
        bodies = {f"/{name}.gz": gzip.compress(data) for name, data in files.items()}
        mirrors.append(Mirror(bodies, list(faults)))
        return mirrors[-1]

    yield start
    for mirror in mirrors:
        mirror.stop()


# --- local directories ---------------------------------------------------------------------


@pytest.mark.parametrize("gzipped", [True, False], ids=["gzipped", "plain"])
def test_directory_gives_the_decompressed_files(tmp_path: Path, gzipped: bool) -> None:
    source = write_source(tmp_path / "source", gzipped=gzipped)

    assert fetch_dataset([str(source)], tmp_path / "out", **QUICK) == str(source)
    assert read_outputs(tmp_path / "out") == FILES


@pytest.mark.parametrize("gzipped", [True, False], ids=["gzipped", "plain"])
def test_corrupt_byte_is_named_and_nothing_is_written(tmp_path: Path, gzipped: bool) -> None:
    source = write_source(tmp_path / "source", corrupted("t10k-labels-idx1-ubyte"), gzipped)
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier").write_bytes(b"an earlier download")
    digest = CHECKSUMS["t10k-labels-idx1-ubyte"][1]

    with pytest.raises(FetchError) as caught:
        fetch_dataset([str(source)], out, **QUICK)

    label = "t10k-labels-idx1-ubyte.gz" if gzipped else "t10k-labels-idx1-ubyte"
    expected = f"expected 300 bytes with sha256 {digest}, found 300 bytes with sha256 "
    assert f"  {source}: {label}: checksum mismatch: {expected}" in str(caught.value)
    assert read_outputs(out) == {"earlier": b"an earlier download"}  # no file, no temporary


def test_truncated_gzip_is_named(tmp_path: Path) -> None:
    source = write_source(tmp_path / "source")
    whole = (source / "train-labels-idx1-ubyte.gz").read_bytes()
    (source / "train-labels-idx1-ubyte.gz").write_bytes(whole[: len(whole) // 2])

    with pytest.raises(FetchError, match=r"train-labels-idx1-ubyte.gz: truncated gzip data"):
        fetch_dataset([str(source)], tmp_path / "out", **QUICK)
    assert not (tmp_path / "out").exists()


def test_plain_file_of_the_wrong_size_is_refused_without_reading_it(tmp_path: Path) -> None:
    source = write_source(tmp_path / "source", gzipped=False)
    # 64 GiB of sparse file: reading it would take minutes and more memory than there is.
    with (source / "train-images-idx3-ubyte").open("r+b") as file:
        file.truncate(64 * 1024 * MEBIBYTE)

    with pytest.raises(FetchError) as caught:
        fetch_dataset([str(source)], tmp_path / "out", **QUICK)

    assert "train-images-idx3-ubyte: 68,719,476,736 bytes, expected 6,000" in str(caught.value)


def test_gzip_padded_past_its_file_is_refused(tmp_path: Path) -> None:
    source = write_source(tmp_path / "source")
    padded = gzip.compress(FILES["t10k-labels-idx1-ubyte"]) + bytes(2 * MEBIBYTE)
    (source / "t10k-labels-idx1-ubyte.gz").write_bytes(padded)

    with pytest.raises(FetchError, match=r"t10k-labels-idx1-ubyte.gz: more than 1,048,876 bytes"):
        fetch_dataset([str(source)], tmp_path / "out", **QUICK)


@pytest.mark.parametrize("where", ["directory", "mirror"])
def test_gzip_bomb_is_refused_without_inflating_it(
    tmp_path: Path, serve: Callable[..., Mirror], where: str
) -> None:
    bomb = gzip_bomb(64)
    if where == "directory":
        source = str(write_source(tmp_path / "source"))
        (Path(source) / "train-images-idx3-ubyte.gz").write_bytes(bomb)
    else:
        mirror = serve()
        mirror.bodies["/train-images-idx3-ubyte.gz"] = bomb
        source = mirror.url

    tracemalloc.start()
    try:
        with pytest.raises(FetchError) as caught:
            fetch_dataset([source], tmp_path / "out", **QUICK)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert f"{source}: train-images-idx3-ubyte.gz: decompresses to more than the 6,000 bytes " in (
        str(caught.value)
    )
    assert peak < 8 * MEBIBYTE, f"{peak:,} bytes allocated for a bomb of 64 MiB"


# --- HTTP mirrors on 127.0.0.1 -------------------------------------------------------------


def test_mirror_gives_the_decompressed_files(tmp_path: Path, serve: Callable[..., Mirror]) -> None:
    mirror = serve()

    assert fetch_dataset([mirror.url], tmp_path / "out", **QUICK) == mirror.url
    assert read_outputs(tmp_path / "out") == FILES
    assert sorted(mirror.requests) == sorted(f"/{name}.gz" for name in FILES)
    assert mirror.encodings == ["identity"] * len(FILES)


def test_failing_sources_are_skipped_for_the_next(
    tmp_path: Path, serve: Callable[..., Mirror], caplog: pytest.LogCaptureFixture
) -> None:
    missing_file = serve({name: data for name, data in FILES.items() if "t10k" not in name})
    wrong_file = serve(corrupted("train-images-idx3-ubyte"))
    good = write_source(tmp_path / "good")

    used = fetch_dataset([missing_file.url, wrong_file.url, str(good)], tmp_path / "out", **QUICK)

    assert used == str(good)
    assert read_outputs(tmp_path / "out") == FILES
    # Neither a 404 nor a whole file with the wrong content is asked for again.
    assert missing_file.requests[-1] == "/t10k-images-idx3-ubyte.gz"
    assert len(missing_file.requests) == 3
    assert wrong_file.requests == ["/train-images-idx3-ubyte.gz"]
    assert "t10k-images-idx3-ubyte.gz: HTTP 404 Not Found" in caplog.text
    assert "train-images-idx3-ubyte.gz: checksum mismatch" in caplog.text


@pytest.mark.parametrize("fault", ["503", "drop"])
def test_server_error_or_dropped_body_is_retried(
    tmp_path: Path, serve: Callable[..., Mirror], fault: str
) -> None:
    mirror = serve(faults=[fault])

    assert fetch_dataset([mirror.url], tmp_path / "out", **QUICK) == mirror.url
    assert read_outputs(tmp_path / "out") == FILES
    assert mirror.requests[:2] == ["/train-images-idx3-ubyte.gz"] * 2
    assert len(mirror.requests) == len(FILES) + 1


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("503", "HTTP 503 Service Unavailable"), ("drop", "connection dropped (ProtocolError")],
)
def test_retries_stop_after_the_given_attempts(
    tmp_path: Path, serve: Callable[..., Mirror], fault: str, reason: str
) -> None:
    mirror = serve(faults=[fault] * 10)

    with pytest.raises(FetchError) as caught:
        fetch_dataset([mirror.url], tmp_path / "out", **{**QUICK, "attempts": 3})

    assert f"train-images-idx3-ubyte.gz: {reason}" in str(caught.value)
    assert "(attempt 3 of 3)" in str(caught.value)
    assert mirror.requests == ["/train-images-idx3-ubyte.gz"] * 3


def test_trickling_server_is_cut_at_the_timeout(
    tmp_path: Path, serve: Callable[..., Mirror]
) -> None:
    # A byte every half second: about 50 minutes for the file, each read well within the timeout.
    mirror = serve(faults=["trickle"] * 10)

    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        fetch_dataset([mirror.url], tmp_path / "out", CHECKSUMS, timeout=1, attempts=2)

    assert time.monotonic() - started < 20
    assert "train-images-idx3-ubyte.gz: not complete within the 1 s timeout (attempt 2 of 2)" in (
        str(caught.value)
    )


def test_every_source_failing_is_listed_with_the_fixes(
    tmp_path: Path, serve: Callable[..., Mirror]
) -> None:
    missing = tmp_path / "missing"
    incomplete = write_source(tmp_path / "incomplete", dict(list(FILES.items())[:3]))
    empty_mirror = serve({})
    with socket.socket() as unused:  # a port that nothing listens on once closed
        unused.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{unused.getsockname()[1]}"
    sources = [str(missing), str(incomplete), empty_mirror.url, refused]
    out = tmp_path / "out"

    with pytest.raises(FetchError) as caught:
        fetch_dataset(sources, out, **QUICK)

    lines = str(caught.value).splitlines()
    assert lines[1:4] == [
        f"  {missing}: no such directory",
        f"  {incomplete}: neither t10k-labels-idx1-ubyte nor t10k-labels-idx1-ubyte.gz is there",
        f"  {empty_mirror.url}: train-images-idx3-ubyte.gz: HTTP 404 Not Found",
    ]
    assert lines[4].startswith(f"  {refused}: train-images-idx3-ubyte.gz: request failed: ")
    assert lines[4].endswith("Connection refused")
    assert "sudo apt-get install dataset-fashion-mnist" in lines[-2]
    assert "fetch.sources in params.yaml" in str(caught.value)
    assert not out.exists()


# --- the stage's entry point ---------------------------------------------------------------


def test_stage_tries_the_sources_in_its_params(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = yaml.safe_load((REPOSITORY_ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["fetch"]["sources"] = [str(tmp_path / "missing")]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["fetch", "--out", "data/raw"])

    with pytest.raises(FetchError, match=re.escape(f"  {tmp_path / 'missing'}: no such directory")):
        fetch_stage.main()
    assert not (tmp_path / "data").exists()
