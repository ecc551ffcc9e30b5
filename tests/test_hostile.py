"""Hostile input against a running server while a healthy client keeps playing."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import ROOT, RtspTestClient, arrivals_after_drain, no_leaks, udp_pair

from mjpeg_rtsp.rtp import RtpPacket


class HealthyViewer:
    """A standard client playing movie.Mjpeg over UDP in the background, recording arrivals."""

    def __init__(self, port: int) -> None:
        self.client = RtspTestClient(port)
        self.rtp, self.rtcp = udp_pair()
        rtp_port = self.rtp.getsockname()[1]
        transport = f"RTP/AVP;unicast;client_port={rtp_port}-{rtp_port + 1}"
        reply = self.client.request("SETUP", "movie.Mjpeg", Transport=transport)
        self.session = reply.headers.get("Session").split(";")[0]
        self.frame_times: list[float] = []
        self.running = True
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()
        assert self.client.request("PLAY", "movie.Mjpeg", Session=self.session).status == 200

    def _receive(self) -> None:
        self.rtp.settimeout(0.2)
        while self.running:
            try:
                packet = RtpPacket.parse(self.rtp.recv(65536))
            except TimeoutError:
                continue
            except OSError:
                return
            if packet.marker:
                self.frame_times.append(time.monotonic())

    def frames_since(self, start: float) -> list[float]:
        return [t for t in self.frame_times if t >= start]

    def largest_gap(self, start: float) -> float:
        times = [start] + self.frames_since(start) + [time.monotonic()]
        return max(b - a for a, b in zip(times, times[1:], strict=False))

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.client.close()
        self.rtp.close()
        self.rtcp.close()


@pytest.fixture
def viewer(server):
    healthy = HealthyViewer(server.port)
    yield healthy
    healthy.close()


def assert_still_playing(viewer: HealthyViewer, start: float) -> None:
    # The stream runs at 20 fps; a stall would show as a long gap between frames. A probe
    # can be over in milliseconds, so look at half a second at least.
    time.sleep(max(0.0, start + 0.5 - time.monotonic()))
    assert len(viewer.frames_since(start)) > 0
    assert viewer.largest_gap(start) < 1.0


def connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def read_all(sock: socket.socket, limit: float = 5) -> bytes:
    sock.settimeout(limit)
    chunks = []
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def test_garbage_bytes(server, viewer):
    start = time.monotonic()
    rng = random.Random(7)
    for _ in range(5):
        sock = connect(server)
        try:
            sock.sendall(bytes(rng.randrange(256) for _ in range(20000)) + b"\r\n\r\n")
        except OSError:
            pass
        answer = read_all(sock, 2)
        sock.close()
        assert answer == b"" or answer.startswith(b"RTSP/1.0 4") or b"\nRTSP/1.0 4" in answer
    assert_still_playing(viewer, start)


def test_a_megabyte_of_header_without_line_end(server, viewer):
    start = time.monotonic()
    sock = connect(server)
    sent = 0
    try:
        for _ in range(1024):
            sock.sendall(b"X" * 1024)
            sent += 1024
    except OSError:
        pass  # the server closed on us: fine
    answer = read_all(sock, 3)
    sock.close()
    assert answer.startswith(b"RTSP/1.0 400 ")
    assert_still_playing(viewer, start)


def test_ten_thousand_headers(server, viewer):
    start = time.monotonic()
    sock = connect(server)
    try:
        sock.sendall(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n" + b"X-A: b\r\n" * 10000 + b"\r\n")
    except OSError:
        pass
    answer = read_all(sock, 3)
    sock.close()
    assert answer.startswith(b"RTSP/1.0 400 ")
    assert b"CSeq: 1\r\n" in answer
    assert_still_playing(viewer, start)


def test_content_length_that_lies(server_factory):
    server = server_factory(idle_timeout=1)
    # Longer than what follows: the server waits for the body, then the idle timeout ends it.
    sock = connect(server)
    sock.sendall(b"SET_PARAMETER * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 5000\r\n\r\nshort")
    assert read_all(sock, 5) == b""
    sock.close()
    # Shorter than what follows: the rest is read as the next message, which is not one.
    sock = connect(server)
    sock.sendall(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 2\r\n\r\nabcdef\r\n\r\n")
    answer = read_all(sock, 2)
    sock.close()
    assert answer.startswith(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n")
    assert b"RTSP/1.0 400 Bad Request" in answer


def test_many_slow_connections(server_factory):
    server = server_factory(idle_timeout=2)
    viewer = HealthyViewer(server.port)
    slow = [connect(server) for _ in range(100)]
    start = time.monotonic()
    try:
        closed = set()
        while time.monotonic() - start < 6 and len(closed) < len(slow):
            for i, sock in enumerate(slow):
                if i in closed:
                    continue
                try:
                    sock.send(b"O")
                except OSError:
                    closed.add(i)
            time.sleep(0.5)
        for i, sock in enumerate(slow):
            if i not in closed:
                sock.settimeout(1)
                try:
                    if sock.recv(1) == b"":
                        closed.add(i)
                except OSError:
                    closed.add(i)
        assert len(closed) == len(slow)  # every byte-a-second connection was closed
        assert_still_playing(viewer, start)
    finally:
        viewer.close()
        for sock in slow:
            sock.close()


def test_connect_setup_disconnect_cycles_leak_nothing(server):
    with no_leaks(server, timeout=15):
        for i in range(300):
            client = RtspTestClient(server.port)
            transport = ("RTP/AVP/TCP;unicast;interleaved=0-1" if i % 2
                         else "RTP/AVP;unicast;client_port=40000-40001")
            client.request("SETUP", "movie.Mjpeg", Transport=transport)
            client.close()


def test_client_killed_during_play_stops_the_stream(server):
    player = subprocess.Popen(
        [sys.executable, str(ROOT / "ClientLauncher.py"),
         f"rtsp://127.0.0.1:{server.port}/movie.Mjpeg", "--headless"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            s.frames_sent > 5 for s in server.registry.all()
        ):
            time.sleep(0.05)
        [session] = server.registry.all()
        port = session.transport.rtp_port
        player.kill()
        player.wait(5)
        killed = time.monotonic()
        while server.registry.all() and time.monotonic() - killed < 5:
            time.sleep(0.02)
        assert server.registry.all() == []  # its RTSP connection closed: session ended at once
        assert time.monotonic() - killed < 2
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener.bind(("127.0.0.1", port))
        with listener:
            assert arrivals_after_drain(listener, 0.5) == 0
    finally:
        player.kill()
        player.wait()


@pytest.mark.parametrize(
    "path",
    ["../conftest.py", "..%2fconftest.py", "%2e%2e/%2e%2e/etc/passwd", "/etc/passwd",
     "//etc/passwd", "movie.Mjpeg/../../secret.mjpeg"],
)
def test_path_traversal_sends_nothing(server, path):
    client = RtspTestClient(server.port)
    rtp, rtcp = udp_pair()
    with rtp, rtcp:
        port = rtp.getsockname()[1]
        assert client.request("DESCRIBE", path).status == 404
        reply = client.request("SETUP", path,
                               Transport=f"RTP/AVP;unicast;client_port={port}-{port + 1}")
        assert reply.status == 404 and reply.body == b""
        assert client.request("PLAY", path).status == 455
        assert arrivals_after_drain(rtp, 0.3) == 0
    client.close()


def test_destination_elsewhere_receives_nothing(server, rtsp_client):
    elsewhere = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    elsewhere.bind(("127.0.0.2", 0))
    port = elsewhere.getsockname()[1]
    mine = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    mine.bind(("127.0.0.1", port))
    with elsewhere, mine:
        client = rtsp_client(server.port)
        reply = client.request(
            "SETUP", "movie.Mjpeg",
            Transport=f"RTP/AVP;unicast;destination=127.0.0.2;client_port={port}-{port + 1}",
        )
        session = reply.headers.get("Session").split(";")[0]
        assert "destination" not in reply.headers.get("Transport")
        assert client.request("PLAY", "movie.Mjpeg", Session=session).status == 200
        mine.settimeout(2)
        assert RtpPacket.parse(mine.recv(65536)).payload_type == 26  # to the peer itself
        assert arrivals_after_drain(elsewhere, 0.5) == 0


def test_session_ids_are_unpredictable(server, rtsp_client):
    client = rtsp_client(server.port)
    transport = "RTP/AVP/TCP;unicast;interleaved=0-1"
    ids = []
    for _ in range(100):
        reply = client.request("SETUP", "movie.Mjpeg", Transport=transport)
        session = reply.headers.get("Session").split(";")[0]
        ids.append(session)
        client.request("TEARDOWN", "movie.Mjpeg", Session=session)
    assert len(set(ids)) == 100
    assert all(len(i) == 20 and i.isdigit() for i in ids)
    values = [int(i) for i in ids]
    steps = {b - a for a, b in zip(values, values[1:], strict=False)}
    assert len(steps) == 99  # no arithmetic pattern
    # Every digit position after the first varies: no fixed prefix or counter.
    assert all(len({i[k] for i in ids}) >= 5 for k in range(1, 20))


def test_another_connection_cannot_control_a_session_without_its_id(server, viewer):
    start = time.monotonic()
    other = RtspTestClient(server.port)
    try:
        assert other.request("PAUSE", "movie.Mjpeg").status == 455
        assert other.request("TEARDOWN", "movie.Mjpeg").status == 455
        guess = str(int(viewer.session) + 1)
        for method in ("PLAY", "PAUSE", "TEARDOWN"):
            assert other.request(method, "movie.Mjpeg", Session=guess).status == 454
        time.sleep(0.5)
        session = server.registry.get(viewer.session)
        assert session is not None and session.state.value == "Playing"
        assert_still_playing(viewer, start)
    finally:
        other.close()
