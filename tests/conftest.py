"""Shared fixtures: media folders with generated clips, servers on port 0, a tiny RTSP client."""

from __future__ import annotations

import gc
import io
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from xvfb import start_xvfb, stop_process  # noqa: E402

from mjpeg_rtsp.ports import bind_rtp_pair  # noqa: E402
from mjpeg_rtsp.rtsp import (  # noqa: E402
    NEED_DATA,
    InterleavedFrame,
    Request,
    Response,
    RtspReader,
    format_request,
)
from Server import StreamingServer  # noqa: E402

SAMPLE = ROOT / "movie.Mjpeg"
PEER_TIMEOUT = 45.0  # seconds; a peer run takes about 1-3 s on an idle machine


def make_clip(path: Path, frames: int, fmt: str = "textbook", size: str = "384x288") -> Path:
    """A clip of the sample's test pattern, made by the repo's own generator."""
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_sample.py"), "-o", str(path),
         "--frames", str(frames), "--format", fmt, "--size", size],
        check=True, capture_output=True,
    )
    return path


@pytest.fixture(scope="session")
def media_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """movie.Mjpeg plus short clips in both layouts and a 1280x720 one."""
    root = tmp_path_factory.mktemp("media")
    shutil.copy(SAMPLE, root / "movie.Mjpeg")
    make_clip(root / "short.Mjpeg", 40)
    make_clip(root / "short.mjpeg", 40, fmt="raw")
    make_clip(root / "hd.mjpeg", 150, fmt="raw", size="1280x720")
    return root


@pytest.fixture
def server_factory(media_root: Path) -> Iterator:
    servers: list[StreamingServer] = []

    def start(root: Path | None = None, **options) -> StreamingServer:
        options.setdefault("host", "127.0.0.1")
        options.setdefault("port", 0)
        server = StreamingServer(root=str(root or media_root), **options)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()


@pytest.fixture
def server(server_factory) -> StreamingServer:
    return server_factory()


class RtspTestClient:
    """A minimal standard-dialect RTSP client over a real socket, for end-to-end tests."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.reader = RtspReader()
        self.cseq = 0
        self.base = f"rtsp://{host}:{port}"
        self.frames: list[InterleavedFrame] = []

    def request(self, method: str, path: str, **headers: str) -> Response:
        self.cseq += 1
        fields = [("CSeq", str(self.cseq))]
        fields += [(k.replace("_", "-"), v) for k, v in headers.items()]
        target = path if path == "*" or "://" in path else f"{self.base}/{path}"
        from mjpeg_rtsp.rtsp import Headers

        self.send(format_request(Request(method, target, Headers(fields))))
        return self.response()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> Response:
        while True:
            event = self.reader.next_event()
            if isinstance(event, Response):
                return event
            if isinstance(event, InterleavedFrame):
                self.frames.append(event)
                continue
            if event is NEED_DATA:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("server closed the connection")
                self.reader.receive_data(data)

    def interleaved(self, count: int) -> list[InterleavedFrame]:
        """Read until ``count`` interleaved frames have arrived in total."""
        while len(self.frames) < count:
            event = self.reader.next_event()
            if isinstance(event, InterleavedFrame):
                self.frames.append(event)
            elif event is NEED_DATA:
                data = self.sock.recv(65536)
                if not data:
                    break
                self.reader.receive_data(data)
        return self.frames

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def rtsp_client() -> Iterator:
    clients: list[RtspTestClient] = []

    def connect(port: int) -> RtspTestClient:
        client = RtspTestClient(port)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


def udp_pair() -> tuple[socket.socket, socket.socket]:
    """Client RTP/RTCP sockets on an even/odd port pair."""
    return bind_rtp_pair("127.0.0.1")


def arrivals_after_drain(sock: socket.socket, seconds: float) -> int:
    """Throw away what is queued on ``sock``, then count datagrams arriving within ``seconds``."""
    sock.settimeout(0.05)
    try:
        while True:
            sock.recv(65536)
    except TimeoutError:
        pass
    count = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            sock.recv(65536)
            count += 1
        except TimeoutError:
            pass
    return count


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextmanager
def no_leaks(server: StreamingServer, timeout: float) -> Iterator[None]:
    """Around a block that opens and drops connections: afterwards no session is left and
    threads and open descriptors are back to their count before the block (within
    ``timeout``). The server indexes movie.Mjpeg first, since the index and its descriptor
    are shared and kept. Garbage is collected before each count: descriptors of earlier
    tests' dropped objects must not be counted, or be closed by the collector mid-block."""
    before = set(threading.enumerate())
    client = RtspTestClient(server.port)
    client.request("DESCRIBE", "movie.Mjpeg")
    client.close()
    # The connection's worker thread exists (it answered): wait for it to see the close.
    wait_for(lambda: set(threading.enumerate()) <= before, timeout)
    gc.collect()
    threads, fds = threading.active_count(), open_fds()
    yield

    def settled() -> bool:
        gc.collect()
        return not (len(server.registry) or threading.active_count() > threads
                    or open_fds() > fds)

    wait_for(settled, timeout, 0.1)
    assert len(server.registry) == 0
    assert threading.active_count() == threads
    assert open_fds() == fds


# --- waiting and processes ----------------------------------------------------------------


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; return that, or the last
    (falsy) value once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# --- third-party peers and tools ------------------------------------------------------------


def _missing_peer(message: str) -> None:
    """Skip on a developer's machine; under CI (``CI`` set) a missing peer is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI is set, so every peer must be installed")
    pytest.skip(message)


def require_tools(*names: str) -> None:
    """Skip the test unless every one of ``names`` is on PATH (fail under CI)."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        _missing_peer(f"needs {', '.join(missing)} (not on PATH)")


def need_tool(tool: str) -> str:
    """The path of ``tool``; the test is skipped when it is not installed (fails under CI)."""
    path = shutil.which(tool)
    if path is None:
        _missing_peer(f"{tool} is not installed (not on PATH)")
    return path


def _tail(output: bytes | str | None) -> str:
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    return (output or "")[-2000:]


def run_peer(args: list[str], timeout: float = PEER_TIMEOUT,
             text: bool = False) -> subprocess.CompletedProcess:
    """Run a peer to completion (output as bytes, or as text with ``text``); a peer that
    hangs fails the test (and is killed)."""
    decoding = {"text": True, "errors": "replace"} if text else {}
    try:
        return subprocess.run(args, capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, **decoding)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{Path(args[0]).name} did not finish within {timeout} s: {args}\n"
                    f"stdout: {_tail(exc.stdout)}\nstderr: {_tail(exc.stderr)}")


@pytest.fixture(scope="session")
def xvfb_display() -> Iterator[str]:
    """A private Xvfb (1024x768, 24 bit) shared by the session's window tests.
    Skips when Xvfb is not installed; tests needing more tools check those themselves."""
    require_tools("Xvfb")
    try:
        xvfb, display = start_xvfb()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield display
    finally:
        stop_process(xvfb)


# --- media files --------------------------------------------------------------------------


def textbook_frames(path: Path) -> list[bytes]:
    """The course's file layout: five ASCII digits of the length, then the JPEG."""
    data = path.read_bytes()
    frames, pos = [], 0
    while pos < len(data):
        length = int(data[pos:pos + 5])
        frames.append(data[pos + 5:pos + 5 + length])
        pos += 5 + length
    return frames


def jpeg_bytes(img: Image.Image, **options: object) -> bytes:
    """``img`` saved as a JPEG by Pillow with ``options``."""
    out = io.BytesIO()
    img.save(out, "JPEG", **options)
    return out.getvalue()


# rtspsrc (GStreamer 1.22) may close its connection with a TEARDOWN from its end-of-stream
# path while the pipeline's shutdown still sends PAUSE on it; gst-launch then exits 1 with
# this error though the stream was complete. Seen about once in 20 runs over TCP.
GST_SHUTDOWN_RACE = "Could not send message. (Received end-of-file)"


def assert_gst_reached_eos(returncode: int, log: str) -> None:
    """gst-launch played to EOS, failing at most by rtspsrc's shutdown race after it."""
    assert "Got EOS" in log or "EOS received" in log, f"no EOS (RTCP BYE ignored?):\n{log}"
    if returncode == 0:
        assert "ERROR" not in log, log
        return
    eos_at = max(log.find("Got EOS"), log.find("EOS received"))
    errors = log[eos_at:].split("ERROR: ")[1:]
    assert "ERROR" not in log[:eos_at], log
    assert errors and all(
        e.startswith("from element /GstPipeline:pipeline0/GstRTSPSrc:rtspsrc0: Could not write")
        and GST_SHUTDOWN_RACE in e for e in errors
    ), f"gst-launch exited with {returncode}:\n{log}"
