"""The player end to end, run as a user runs it: ``python ClientLauncher.py ... --headless``.

Against our server (both dialects, UDP and TCP, seeking), an emulation of the course's
textbook server written here, the GStreamer RTSP server, and in failure cases: 404, nobody
listening, bad arguments, a server killed mid-stream, and garbage or foreign packets on the
player's RTP port. Every saved frame must be a whole JPEG whose test-pattern counter is
the frame we expect.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import stop_process, textbook_frames, wait_for
from peers.player_cli import (
    ROOT,
    finished,
    frame_numbers,
    free_udp_port,
    player_command,
    run_player,
    saved_frames,
)

from mjpeg_rtsp.session import SessionState
from Server import StreamingServer

SHORT = list(range(40))


def assert_clean_run(run, frames: int, size=(384, 288)) -> dict:
    assert run.returncode == 0, str(run)
    summary = run.summary
    assert summary["frames"] == frames, summary
    assert summary["frames_lost"] == 0, summary
    assert (summary["width"], summary["height"]) == size, summary
    assert "Traceback" not in run.stderr
    return summary


def assert_whole_clip(run, frames_dir: Path, transport: str = "udp") -> None:
    """short.Mjpeg played whole: frames 0..39 in order, each a whole JPEG, none lost.

    Over UDP the first packets can beat the PLAY reply: they must still be shown.
    """
    assert run.returncode == 0, str(run)
    summary = run.summary
    numbers = frame_numbers(frames_dir)
    assert (summary["width"], summary["height"]) == (384, 288), summary
    assert summary["packets_lost"] == 0, summary
    assert len(numbers) == summary["frames"], summary
    assert numbers == SHORT
    assert summary["frames_lost"] == 0, summary
    assert "Traceback" not in run.stderr


# --- our server --------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_standard_dialect_plays_to_the_end(server_factory, tmp_path, transport):
    server = server_factory(fps=50)
    run = run_player(f"rtsp://127.0.0.1:{server.port}/short.Mjpeg", "--transport", transport,
                     "--save-frames", str(tmp_path), timeout=20)
    assert_whole_clip(run, tmp_path, transport)
    summary = run.summary
    assert summary["transport"] == transport and summary["packets_foreign"] == 0
    assert summary["elapsed"] < 5  # ended by itself (RTCP BYE / end of range), no --duration


def test_standard_dialect_raw_mjpeg_file(server_factory, tmp_path):
    server = server_factory(fps=50)
    run = run_player(f"rtsp://127.0.0.1:{server.port}/short.mjpeg", "--save-frames",
                     str(tmp_path), timeout=20)
    assert_whole_clip(run, tmp_path)


@pytest.fixture(scope="module")
def textbook_run(media_root, tmp_path_factory):
    """One textbook-dialect run on short.Mjpeg at 50 fps, shared by the two tests below."""
    server = StreamingServer(root=str(media_root), host="127.0.0.1", port=0, fps=50)
    server.start()
    frames = tmp_path_factory.mktemp("textbook-frames")
    try:
        run = run_player("127.0.0.1", str(server.port), str(free_udp_port()), "short.Mjpeg",
                         "--save-frames", str(frames), timeout=20)
    finally:
        server.shutdown()
    return run, frames


def test_textbook_dialect_against_our_server(textbook_run):
    run, frames = textbook_run
    assert run.returncode == 0, str(run)
    summary = run.summary
    assert summary["packets"] == 40 and summary["packets_lost"] == 0, summary
    assert summary["frames_lost"] == 0, summary
    assert (summary["width"], summary["height"]) == (384, 288)
    assert summary["url"] == "short.Mjpeg" and summary["transport"] == "udp"
    numbers = frame_numbers(frames)
    assert len(numbers) == summary["frames"]
    assert numbers == SHORT, numbers
    assert 2 < summary["elapsed"] < 8  # ended by ~2 s of silence after the last frame


def test_textbook_dialect_shows_the_first_frames(textbook_run):
    """A textbook reply has no end marker, so frames arrive before it is complete."""
    run, frames = textbook_run
    assert_clean_run(run, 40)
    assert frame_numbers(frames) == SHORT


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_seek_starts_at_the_requested_frame(server_factory, tmp_path, transport):
    server = server_factory(fps=20)
    run = run_player(f"rtsp://127.0.0.1:{server.port}/movie.Mjpeg", "--seek", "5",
                     "--duration", "1", "--transport", transport,
                     "--save-frames", str(tmp_path), timeout=20)
    assert run.returncode == 0, str(run)
    numbers = frame_numbers(tmp_path)
    assert numbers[0] == 100, numbers  # 5 s at 20 fps
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert 10 <= len(numbers) <= 24
    assert run.summary["frames_lost"] == 0, run.summary


# --- the course's textbook server, emulated ---------------------------------------------


class CourseServer:
    """The course's ServerWorker on the wire: ``recv(256)``, requests parsed by line index,
    replies ``RTSP/1.0 200 OK\\nCSeq: n\\nSession: s`` with no blank line; a new UDP socket
    per PLAY, sending every 50 ms (waiting first) one datagram per frame with the whole
    JPEG, marker 0, PT 26, SSRC 0, seq = frame number, timestamp = int(time.time())."""

    SESSION = 123456

    def __init__(self, frames: list[bytes], interval: float = 0.05) -> None:
        self.frames = frames
        self.interval = interval
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.requests: list[str] = []
        self.sent = 0
        self._running = True
        self._stop_sending = threading.Event()
        self._threads: list[threading.Thread] = []
        self._spawn(self._serve)

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _serve(self) -> None:
        while self._running:
            try:
                conn, address = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(0.2)
            rtp_port = None
            frame = 0
            while self._running:
                try:
                    data = conn.recv(256)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                request = data.decode("utf-8")
                self.requests.append(request)
                lines = request.split("\n")
                method = lines[0].split(" ")[0]
                seq = lines[1].split(" ")[1]
                if method == "SETUP":
                    rtp_port = int(lines[2].split(" ")[3])
                elif method == "PLAY" and rtp_port is not None:
                    self._stop_sending = threading.Event()
                    self._spawn(self._send, address[0], rtp_port, frame, self._stop_sending)
                elif method in ("PAUSE", "TEARDOWN"):
                    self._stop_sending.set()
                reply = f"RTSP/1.0 200 OK\nCSeq: {seq}\nSession: {self.SESSION}"
                conn.send(reply.encode())
            self._stop_sending.set()
            conn.close()

    def _send(self, host: str, port: int, start: int, stop: threading.Event) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for number in range(start + 1, len(self.frames) + 1):
                stop.wait(self.interval)
                if stop.is_set() or not self._running:
                    return
                header = struct.pack("!BBHII", 0x80, 26, number, int(time.time()), 0)
                sock.sendto(header + self.frames[number - 1], (host, port))
                self.sent += 1

    def close(self) -> None:
        self._running = False
        self._stop_sending.set()
        for thread in self._threads:
            thread.join(2)
        self.listener.close()


@pytest.fixture
def course_server(media_root):
    server = CourseServer(textbook_frames(media_root / "short.Mjpeg"))
    yield server
    server.close()


def test_course_textbook_server_emulation(course_server, tmp_path):
    run = run_player("127.0.0.1", str(course_server.port), str(free_udp_port()), "short.Mjpeg",
                     "--save-frames", str(tmp_path), timeout=20)
    assert run.returncode == 0, str(run)
    assert course_server.requests[0].startswith("SETUP short.Mjpeg RTSP/1.0\nCSeq: 1\n")
    assert [r.split(" ")[0] for r in course_server.requests] == ["SETUP", "PLAY", "TEARDOWN"]
    assert course_server.sent == 40
    summary = run.summary
    assert summary["packets"] == 40 and summary["frames_lost"] == 0, summary
    numbers = frame_numbers(tmp_path)
    assert len(numbers) == summary["frames"]
    assert numbers == SHORT, numbers


# --- the GStreamer RTSP server ------------------------------------------------------------


@pytest.fixture(scope="module")
def gst_server():
    python = "/usr/bin/python3"
    if not os.path.exists(python) or subprocess.run(
        [python, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
         "from gi.repository import GstRtspServer"], capture_output=True).returncode != 0:
        pytest.skip("Debian's python3 with the GStreamer RTSP server bindings is not installed")
    process = subprocess.Popen(
        [python, str(ROOT / "tools" / "gst_rtsp_server.py"), "--port", "0",
         "--frames", "50", "--width", "640", "--height", "480", "--fps", "25"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        line = process.stdout.readline()
        match = re.match(r"READY (\d+)", line)
        assert match, f"the GStreamer server did not start: {line!r}"
        yield int(match.group(1))
    finally:
        stop_process(process)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_gstreamer_server(gst_server, tmp_path, transport):
    run = run_player(f"rtsp://127.0.0.1:{gst_server}/test", "--transport", transport,
                     "--save-frames", str(tmp_path), timeout=20)
    assert run.returncode == 0, str(run)
    summary = run.summary
    assert summary["packets"] == 200 and summary["packets_lost"] == 0, summary
    assert (summary["width"], summary["height"]) == (640, 480)
    assert summary["frames"] == 50 and summary["frames_lost"] == 0, summary
    assert summary["elapsed"] < 6  # ended by itself at end of stream
    frames = saved_frames(tmp_path)
    assert len(frames) == summary["frames"]
    assert all(image.size == (640, 480) for _, image in frames)


# --- failures -----------------------------------------------------------------------------


def test_not_found_exits_1(server_factory):
    server = server_factory(fps=50)
    run = run_player(f"rtsp://127.0.0.1:{server.port}/missing.Mjpeg", timeout=15)
    assert run.returncode == 1
    assert run.stdout == ""
    assert "404" in run.stderr and run.stderr.startswith("error: ")
    assert "Traceback" not in run.stderr


def test_textbook_not_found_exits_1(server_factory):
    server = server_factory(fps=50)
    run = run_player("127.0.0.1", str(server.port), str(free_udp_port()), "missing.Mjpeg",
                     timeout=15)
    assert run.returncode == 1
    assert "404" in run.stderr and "Traceback" not in run.stderr


def test_connection_refused_exits_1():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: refused
        run = run_player(f"rtsp://127.0.0.1:{port}/movie.Mjpeg", timeout=15)
    assert run.returncode == 1
    assert run.stderr.strip() == (f"error: connection refused by 127.0.0.1:{port} "
                                  "(is the server running?)")


@pytest.mark.parametrize("args", [
    [],
    ["127.0.0.1", "8554"],
    ["127.0.0.1", "8554", "notaport", "movie.Mjpeg"],
    ["http://127.0.0.1/movie.Mjpeg"],
    ["rtsp://127.0.0.1:99999/movie.Mjpeg"],
    ["127.0.0.1", "8554", "25000", "movie.Mjpeg", "--transport", "tcp"],
    ["rtsp://127.0.0.1/movie.Mjpeg", "--duration", "0"],
])
def test_bad_arguments_exit_2(args):
    result = subprocess.run(player_command(*args, "--headless"), capture_output=True,
                            text=True, timeout=15)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("usage: ClientLauncher.py")
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_server_killed_mid_stream(media_root, transport):
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "Server.py"), "0", "--host", "127.0.0.1",
         "--root", str(media_root)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
    )
    player = None
    try:
        line = server.stdout.readline()
        match = re.match(r"RTSP server listening on port (\d+), ", line)
        assert match, line
        player = subprocess.Popen(
            player_command(f"rtsp://127.0.0.1:{match.group(1)}/movie.Mjpeg", "--transport",
                           transport, "--headless"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )
        time.sleep(1)
        assert player.poll() is None, "the player stopped before the server was killed"
        server.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        stdout, stderr = player.communicate(timeout=10)
        took = time.monotonic() - killed
    finally:
        server.kill()
        stop_process(server)
        if player is not None:
            stop_process(player)
    assert player.returncode == 1, (stdout, stderr)
    assert took < 5
    assert stderr.strip() == "error: the server closed the connection"
    assert stdout == ""


# --- garbage and foreign packets ---------------------------------------------------------


def wait_for_playing(server, timeout: float = 10.0, frames: int = 1):
    """The server's one session once it is playing and has sent a frame (or ``frames``)."""
    def playing():
        sessions = server.registry.all()
        return (sessions and sessions[0].state is SessionState.PLAYING
                and sessions[0].frames_sent >= frames and sessions[0])

    session = wait_for(playing, timeout, 0.01)
    assert session, "no session started playing"
    return session


def intruder_packets(ssrc_to_avoid: int | None, seed: int = 7) -> list[bytes]:
    """Ten datagrams of random bytes (not RTP) and ten valid RTP/JPEG packets of another
    SSRC, with sequence numbers and timestamps all over the place."""
    rng = random.Random(seed)
    packets = []
    for _ in range(10):
        size = rng.choice([1, 5, 11, 40, 1500])
        data = bytearray(rng.randbytes(size))
        if size >= 1:
            data[0] &= 0x3F  # version 0: never RTP
        packets.append(bytes(data))
    ssrc = 0xDEADBEEF if ssrc_to_avoid != 0xDEADBEEF else 0xFEEDFACE
    for i in range(10):
        header = struct.pack("!BBHII", 0x80, 26 | (0x80 if i % 2 else 0),
                             rng.randrange(65536), rng.randrange(1 << 32), ssrc)
        packets.append(header + b"\xff\xd8" + rng.randbytes(200) + b"\xff\xd9")
    return packets


def send_intruders(port: int, packets: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for data in packets:
            sock.sendto(data, ("127.0.0.1", port))
            time.sleep(0.01)


def play_in_background(*args: str) -> subprocess.Popen:
    return subprocess.Popen(player_command(*args, "--headless"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)


def finish(process: subprocess.Popen, timeout: float = 20):
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()  # what it said, and its pipes closed
        raise AssertionError(f"the player still ran after {timeout} s:\n{stderr}") from None
    finally:
        stop_process(process)
    return finished(process.returncode, stdout, stderr)


def test_standard_udp_ignores_garbage_and_foreign_ssrc(server_factory, tmp_path):
    server = server_factory(fps=20)
    process = play_in_background(f"rtsp://127.0.0.1:{server.port}/short.Mjpeg",
                                 "--save-frames", str(tmp_path))
    try:
        session = wait_for_playing(server)
        send_intruders(session.transport.rtp_port, intruder_packets(session.ssrc))
    finally:
        run = finish(process)
    assert_whole_clip(run, tmp_path)
    assert run.summary["packets_foreign"] == 20, run.summary


def play_textbook_with_intruders(server_factory, frames_dir: Path, intruders):
    """Play short.Mjpeg in the textbook dialect and, once it plays, send
    ``intruders(session)`` to the player's RTP port; the finished run."""
    server = server_factory(fps=50)
    rtp_port = free_udp_port()
    process = play_in_background("127.0.0.1", str(server.port), str(rtp_port), "short.Mjpeg",
                                 "--save-frames", str(frames_dir))
    try:
        # The textbook player latches on the SSRC of the first packet it reads. The server's
        # first frame was queued on the player's socket (bound before SETUP) before the
        # second was sent, so before any intruder: the player reads it first.
        session = wait_for_playing(server, frames=2)
        send_intruders(rtp_port, intruders(session))
    finally:
        run = finish(process)
    return run


def test_textbook_ignores_garbage(server_factory, tmp_path):
    run = play_textbook_with_intruders(server_factory, tmp_path,
                                       lambda session: intruder_packets(None)[:10])
    assert run.returncode == 0, str(run)
    assert run.summary["packets_foreign"] == 10, run.summary
    assert run.summary["packets"] == 40 and run.summary["frames_lost"] == 0, run.summary
    assert frame_numbers(tmp_path) == SHORT


def test_textbook_ignores_foreign_ssrc(server_factory, tmp_path):
    run = play_textbook_with_intruders(server_factory, tmp_path,
                                       lambda session: intruder_packets(session.ssrc)[10:])
    assert run.returncode == 0, str(run)
    assert run.summary["packets_foreign"] == 10, run.summary
    assert run.summary["frames_lost"] == 0, run.summary


def test_save_frames_directory_is_created(server_factory, tmp_path):
    server = server_factory(fps=50)
    target = tmp_path / "a" / "b"
    run = run_player(f"rtsp://127.0.0.1:{server.port}/short.Mjpeg", "--duration", "0.5",
                     "--save-frames", str(target), timeout=20)
    assert run.returncode == 0, str(run)
    assert 0 < len(list(target.glob("frame-*.jpg"))) == run.summary["frames"]
