"""forensix.download against a real loopback HTTP server (no network beyond 127.0.0.1)."""

from __future__ import annotations

import hashlib
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from forensix.download import ChecksumError, DownloadError, download, sha256_file

SIZE = 3 * (1 << 20)
DATA = random.Random(1234).randbytes(SIZE)
DIGEST = hashlib.sha256(DATA).hexdigest()
CUT = 1_000_123  # not a multiple of the 1 MiB chunk


class Server:
    """Loopback server state: what it serves, how it misbehaves per path, and what it was asked."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}  # path -> send only this many body bytes, then close
        self.ignore_range: set[str] = set()
        self.chunked: set[str] = set()  # paths sent with chunked transfer-encoding (no Content-Length)
        self.headers: dict[str, dict[str, str]] = {}  # path -> extra response headers (a Hub's X-Repo-Commit, ETag)
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.if_range: list[str] = []  # If-Range headers received
        self.ignore_if_range = False  # a server (or proxy) that serves the Range whatever version it asks for
        self.base = ""

    def reset(self) -> None:
        self.files = {"/model.bin": DATA}
        self.cut.clear()
        self.ignore_range.clear()
        self.chunked.clear()
        self.headers.clear()
        self.requests.clear()
        self.if_range.clear()
        self.ignore_if_range = False

    def url(self, path: str = "/model.bin") -> str:
        return self.base + path


def make_handler(state: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def end_headers(self) -> None:
            for name, value in state.headers.get(self.path, {}).items():
                self.send_header(name, value)
            super().end_headers()

        def do_HEAD(self) -> None:
            state.requests.append((f"HEAD {self.path}", None))
            data = state.files.get(self.path)
            if data is None:
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()

        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            state.requests.append((self.path, rng))
            data = state.files.get(self.path)
            if data is None:
                self.send_error(404, "Not Found")
                return
            start = 0
            if if_range := self.headers.get("If-Range"):
                state.if_range.append(if_range)
                if if_range != state.headers.get(self.path, {}).get("ETag") and not state.ignore_if_range:
                    rng = None  # another version now: the whole file, as RFC 9110 says
            if rng and self.path not in state.ignore_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            if self.path in state.chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.send_chunked(body, state.cut.get(self.path))
                return
            # The full length is declared even when the body is cut short.
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.path in state.cut:
                body = body[: state.cut[self.path]]
                self.close_connection = True
            self.wfile.write(body)

        def send_chunked(self, body: bytes, cut: int | None) -> None:
            step = 1 << 16
            for i in range(0, len(body), step):
                piece = body[i : i + step]
                if cut is not None and i + len(piece) > cut:
                    # Declare the whole chunk, send part of it, hang up: the client sees IncompleteRead.
                    self.wfile.write(b"%x\r\n" % len(piece) + piece[: cut - i])
                    self.close_connection = True
                    return
                self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")

    return Handler


@pytest.fixture(scope="module")
def _server():
    state = Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    httpd.daemon_threads = True
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def server(_server: Server) -> Server:
    _server.reset()
    return _server


def part_of(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def test_plain_download(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "model.bin"
    assert download(server.url(), dest, sha256=DIGEST.upper(), size=SIZE, timeout=5) == DIGEST
    assert dest.read_bytes() == DATA
    assert not part_of(dest).exists()
    assert sha256_file(dest) == DIGEST
    assert server.requests == [("/model.bin", None)]


def test_wrong_sha256(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as info:
        download(server.url(), dest, sha256=wrong, timeout=5)
    assert wrong in str(info.value) and DIGEST in str(info.value)
    assert not dest.exists()
    assert not part_of(dest).exists()


def test_truncated_then_resumed(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    server.cut["/model.bin"] = CUT
    with pytest.raises(DownloadError) as info:
        download(server.url(), dest, sha256=DIGEST, timeout=5)
    msg = str(info.value)
    assert f"{CUT} of {SIZE}" in msg and "resume" in msg
    assert not dest.exists()
    assert part_of(dest).stat().st_size == CUT

    server.cut.clear()
    calls: list[tuple[int, int | None]] = []
    digest = download(server.url(), dest, sha256=DIGEST, progress=lambda d, t: calls.append((d, t)), timeout=5)
    assert digest == DIGEST
    assert server.requests[-1] == ("/model.bin", f"bytes={CUT}-")
    assert dest.read_bytes() == DATA
    assert not part_of(dest).exists()
    assert calls[0][0] >= CUT and calls[-1] == (SIZE, SIZE)


def test_incomplete_chunked_read_then_resumed(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    server.chunked.add("/model.bin")
    server.cut["/model.bin"] = CUT
    with pytest.raises(DownloadError, match="re-running resumes"):
        download(server.url(), dest, sha256=DIGEST, timeout=5)
    kept = part_of(dest).stat().st_size
    assert 0 < kept <= CUT and not dest.exists()

    server.cut.clear()
    assert download(server.url(), dest, sha256=DIGEST, timeout=5) == DIGEST
    assert server.requests[-1] == ("/model.bin", f"bytes={kept}-")
    assert dest.read_bytes() == DATA


def test_server_ignoring_range_restarts(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    part_of(dest).write_bytes(b"\xff" * 5000)  # garbage: appending to it would corrupt the file
    server.ignore_range.add("/model.bin")
    assert download(server.url(), dest, sha256=DIGEST, timeout=5) == DIGEST
    assert server.requests == [("/model.bin", "bytes=5000-")]
    assert dest.read_bytes() == DATA
    assert not part_of(dest).exists()


def test_404(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "missing.bin"
    with pytest.raises(DownloadError) as info:
        download(server.url("/missing.bin"), dest, timeout=5)
    assert "404" in str(info.value) and server.url("/missing.bin") in str(info.value)
    assert not dest.exists() and not part_of(dest).exists()


def test_existing_dest_makes_no_request(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    dest.write_bytes(DATA)
    assert download(server.url(), dest, sha256=DIGEST, timeout=5) == DIGEST
    assert download(server.url(), dest, timeout=5) == DIGEST
    assert server.requests == []


def test_existing_wrong_dest_is_replaced(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    dest.write_bytes(b"stale")
    assert download(server.url(), dest, sha256=DIGEST, timeout=5) == DIGEST
    assert dest.read_bytes() == DATA


def test_complete_part_needs_no_request(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    part_of(dest).write_bytes(DATA)
    assert download(server.url(), dest, sha256=DIGEST, size=SIZE, timeout=5) == DIGEST
    assert server.requests == []
    assert dest.read_bytes() == DATA


def test_complete_part_without_size_gets_416(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    part_of(dest).write_bytes(DATA)
    assert download(server.url(), dest, sha256=DIGEST, timeout=5) == DIGEST
    assert server.requests == [("/model.bin", f"bytes={SIZE}-")]
    assert dest.read_bytes() == DATA


def test_progress_ends_with_total(server: Server, tmp_path: Path) -> None:
    calls: list[tuple[int, int | None]] = []
    download(server.url(), tmp_path / "model.bin", progress=lambda d, t: calls.append((d, t)), timeout=5)
    assert calls[-1] == (SIZE, SIZE)
    done = [d for d, _ in calls]
    assert done == sorted(done)


def test_size_mismatch(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "model.bin"
    with pytest.raises(DownloadError) as info:
        download(server.url(), dest, size=SIZE + 1, timeout=5)
    assert str(SIZE + 1) in str(info.value)
    assert not dest.exists()


def test_file_url(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(DATA[:4096])
    dest = tmp_path / "out" / "copy.bin"
    expected = hashlib.sha256(DATA[:4096]).hexdigest()
    assert download(src.as_uri(), dest, sha256=expected) == expected
    assert dest.read_bytes() == DATA[:4096]


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/model.bin", "model.bin", "data:,hello"])
def test_unsupported_scheme(url: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="scheme"):
        download(url, tmp_path / "x.bin")


def test_connection_refused(tmp_path: Path) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = httpd.server_address[1]
    httpd.server_close()  # nothing listens on this port now
    with pytest.raises(DownloadError, match=str(port)):
        download(f"http://127.0.0.1:{port}/x.bin", tmp_path / "x.bin", timeout=5)
