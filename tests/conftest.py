"""Shared fixtures: media folders with generated clips, servers on port 0, a tiny RTSP client."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

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
