"""Our player against other servers, run as a user runs it (``ClientLauncher.py --headless``):
VLC's RTSP server, Debian's rtsp-server-perl relay fed by ffmpeg, ffmpeg as a plain RTP/JPEG
sender, and a scripted server that describes its control URLs in each of the ways servers
do (with or without Content-Base and session-level ``a=control``). Every saved frame must
match the source frame its test-pattern counter names.

The real peers are started by the tests on free ports; a missing peer skips the test, and
fails it when ``CI`` is set (see conftest.need_tool).
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import SAMPLE, need_tool, run_peer, stop_process, textbook_frames, wait_for
from make_sample import read_frame_number
from peers.player_cli import free_udp_port, run_player, saved_frames
from peers.scripted_rtsp import Script, ScriptedRtspServer
from test_interop import MIN_PSNR, SAMPLE_SIZE, decode, psnr, split_jpegs

from mjpeg_rtsp.jpeg import scan_jpeg
from mjpeg_rtsp.rfc2435 import JpegDepacketizer
from mjpeg_rtsp.rtp import RtpPacket

PLAY_SECONDS = "2.5"


@pytest.fixture(scope="module")
def source() -> list[bytes]:
    """The sample's frames: frame n shows counter n."""
    frames = textbook_frames(SAMPLE)
    assert len(frames) == 400
    return frames


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_frames_match(frames_dir: Path, source: list[bytes], at_least: int) -> list[int]:
    """Every saved frame decodes whole, at the sample's size, and matches the source frame
    its counter names (PSNR); the counters increase. Returns the counters."""
    numbers = []
    for data, image in saved_frames(frames_dir):
        assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9", "not a whole JPEG"
        assert image.size == SAMPLE_SIZE
        number = read_frame_number(image)
        assert 0 <= number < len(source), number
        quality = psnr(image, decode(source[number]))
        assert quality >= MIN_PSNR, f"frame with counter {number}: {quality:.2f} dB"
        numbers.append(number)
    assert len(numbers) >= at_least, numbers
    assert all(b > a for a, b in zip(numbers, numbers[1:], strict=False)), numbers
    return numbers


def ffmpeg(*args: str) -> list[str]:
    return [need_tool("ffmpeg"), "-nostdin", "-hide_banner", "-nostats", "-y", *args]


def reencode(source: list[bytes], out_dir: Path, frames: int, container: str) -> Path:
    """The sample re-encoded by ffmpeg's MJPEG encoder, as a user's own file would be: one
    quantization table shared by all components, the standard Huffman tables."""
    raw = out_dir / "raw.mjpeg"
    raw.write_bytes(b"".join(source[:frames]))
    out = out_dir / f"movie.{container}"
    made = run_peer(ffmpeg("-v", "error", "-f", "mjpeg", "-framerate", "25", "-i", str(raw),
                           "-c:v", "mjpeg", "-q:v", "2", "-huffman", "default", str(out)))
    assert made.returncode == 0, made.stderr
    raw.unlink()
    return out


def rtsp_describes_video(port: int, path: str) -> bool:
    """The server at ``port`` answers DESCRIBE of ``path`` with a video medium."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(f"DESCRIBE rtsp://127.0.0.1:{port}/{path} RTSP/1.0\r\nCSeq: 1\r\n"
                         "Accept: application/sdp\r\n\r\n".encode())
            sock.settimeout(1)
            reply = b""
            deadline = time.monotonic() + 1
            while b"m=video" not in reply and time.monotonic() < deadline:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
            return reply.startswith(b"RTSP/1.0 200") and b"m=video" in reply
    except OSError:
        return False


@contextmanager
def peer(args: list[str], log: Path) -> Iterator[subprocess.Popen]:
    with log.open("wb") as out, subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                                 stderr=subprocess.STDOUT) as proc:
        try:
            yield proc
        finally:
            stop_process(proc)


def peer_log(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


# --- VLC's RTSP server --------------------------------------------------------------------


def as_nobody(args: list[str]) -> list[str]:
    """VLC refuses to run as root: run it as ``nobody`` then (needs root's runuser)."""
    if os.geteuid() != 0:
        return args
    return [need_tool("runuser"), "-u", "nobody", "--", *args]


def test_vlc_rtsp_server(source):
    """Over UDP: VLC 3's RTSP server answers 461 to interleaved TCP (ffmpeg gets the same)."""
    cvlc = need_tool("cvlc")
    # A folder nobody can read (pytest's tmp_path is private to root).
    with tempfile.TemporaryDirectory(prefix="mjpeg-vlc-") as name:
        media = Path(name)
        media.chmod(0o755)
        movie = reencode(source, media, 250, "avi")  # 10 s at 25 fps
        movie.chmod(0o644)
        port = free_tcp_port()
        log = media / "vlc.log"
        args = as_nobody([cvlc, "-I", "dummy", "--no-audio", str(movie), "--sout",
                          f"#rtp{{sdp=rtsp://127.0.0.1:{port}/vlc}}"])
        with peer(args, log) as vlc:
            assert wait_for(lambda: rtsp_describes_video(port, "vlc") or vlc.poll() is not None,
                            20) and vlc.poll() is None, peer_log(log)
            frames = media / "frames"
            run = run_player(f"rtsp://127.0.0.1:{port}/vlc", "--duration", PLAY_SECONDS,
                             "--save-frames", str(frames))
        assert run.returncode == 0, f"{run}\n{peer_log(log)}"
        assert run.summary["frames"] >= 25, run.summary
        assert_frames_match(frames, source, 25)


# --- rtsp-server-perl, fed by ffmpeg -f rtsp ----------------------------------------------


def test_rtsp_server_perl_relay(source, tmp_path):
    relay = need_tool("rtsp-server-perl")
    movie = reencode(source, tmp_path, 100, "mjpeg")
    client_port, source_port = free_tcp_port(), free_tcp_port()
    relay_args = [relay, "--clientport", str(client_port), "--serverport", str(source_port),
                  "--client_listen_address", "127.0.0.1",
                  "--source_listen_address", "127.0.0.1",
                  "--rtp_start_port", str(free_udp_port())]
    with peer(relay_args, tmp_path / "relay.log") as server:
        assert wait_for(lambda: _listening(source_port) or server.poll() is not None, 20)
        assert server.poll() is None, peer_log(tmp_path / "relay.log")
        publish = ffmpeg("-v", "warning", "-re", "-stream_loop", "-1", "-i", str(movie),
                         "-c", "copy", "-f", "rtsp", f"rtsp://127.0.0.1:{source_port}/cam")
        with peer(publish, tmp_path / "ffmpeg.log") as publisher:
            assert wait_for(lambda: rtsp_describes_video(client_port, "cam")
                            or publisher.poll() is not None, 20), \
                peer_log(tmp_path / "ffmpeg.log")
            assert publisher.poll() is None, peer_log(tmp_path / "ffmpeg.log")
            frames = tmp_path / "frames"
            run = run_player(f"rtsp://127.0.0.1:{client_port}/cam", "--duration", PLAY_SECONDS,
                             "--save-frames", str(frames))
    assert run.returncode == 0, f"{run}\n{peer_log(tmp_path / 'relay.log')}"
    assert run.summary["frames"] >= 25, run.summary
    # The loop restarts the counter every 100 frames: check each stretch in order.
    numbers = []
    for data, image in saved_frames(frames):
        assert data[-2:] == b"\xff\xd9" and image.size == SAMPLE_SIZE
        number = read_frame_number(image)
        quality = psnr(image, decode(source[number]))
        assert quality >= MIN_PSNR, f"frame with counter {number}: {quality:.2f} dB"
        numbers.append(number)
    steps = [b - a for a, b in zip(numbers, numbers[1:], strict=False)]
    wraps = sum(step < 0 for step in steps)
    assert all(step in (1, 2, 3) for step in steps if step >= 0), numbers  # in order
    assert wraps <= len(numbers) // 100 + 1, numbers


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# --- ffmpeg's RTP/JPEG packetizer: one shared quantization table ----------------------------


def test_ffmpeg_rtp_sender_with_one_table_decodes_exactly(source, tmp_path):
    """ffmpeg sends Length 64 (one table) for its own JPEGs; each depacketized frame must
    decode to the same pixels as the frame ffmpeg sent."""
    movie = reencode(source, tmp_path, 20, "mjpeg")
    sent = split_jpegs(movie.read_bytes())
    assert len(sent) == 20 and list(scan_jpeg(sent[0]).qtables) == [0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        port = sock.getsockname()[1]
        sender = run_peer(ffmpeg("-v", "error", "-re", "-i", str(movie), "-c", "copy",
                                 "-f", "rtp", f"rtp://127.0.0.1:{port}?pkt_size=1200"))
        assert sender.returncode == 0, sender.stderr
        depay, received, lengths = JpegDepacketizer(), [], set()
        sock.settimeout(0.5)
        while True:
            try:
                packet = RtpPacket.parse(sock.recv(65536))
            except TimeoutError:
                break
            if packet.payload[1:4] == b"\x00\x00\x00" and packet.payload[5] >= 128:
                lengths.add(int.from_bytes(packet.payload[10:12], "big"))
            frame = depay.push(packet.payload, packet.timestamp, packet.marker)
            if frame is not None:
                received.append(frame)
    assert lengths == {64}, lengths  # one table, as the issue reports for ffmpeg
    assert depay.frames_dropped == 0
    assert len(received) == 20
    for k, (got, original) in enumerate(zip(received, sent, strict=True)):
        assert decode(got).tobytes() == decode(original).tobytes(), k
        assert read_frame_number(decode(got)) == k


# --- a scripted server: control URLs described in each way --------------------------------

# (id, Script, SETUP target, PLAY/TEARDOWN target); {url} is the DESCRIBEd URL.
CONTROL_CASES = [
    ("no-base-no-session-control", Script(None, None, "streamid=0"),
     "{url}/streamid=0", "{url}"),
    ("vlc-style", Script("{url}", "{url}", "{url}/trackID=0"), "{url}/trackID=0", "{url}"),
    ("base-with-slash-star", Script("{url}/", "*", "track1"), "{url}/track1", "{url}/"),
    ("no-base-star", Script(None, "*", "track1"), "{url}/track1", "{url}"),
    ("base-no-slash-no-session-control", Script("{url}", None, "track1"),
     "{url}/track1", "{url}"),
]


@pytest.mark.parametrize(("script", "setup_url", "play_url"),
                         [case[1:] for case in CONTROL_CASES],
                         ids=[case[0] for case in CONTROL_CASES])
def test_player_uses_the_described_control_urls(source, tmp_path, script, setup_url, play_url):
    with ScriptedRtspServer(script, source[:30]) as server:
        url = f"{server.url}/live/cam"
        frames = tmp_path / "frames"
        run = run_player(url, "--duration", "1.5", "--save-frames", str(frames))
        assert run.returncode == 0, str(run)
        requests = [r for r in server.requests if r[0] != "GET_PARAMETER"]
    assert requests == [
        ("OPTIONS", url), ("DESCRIBE", url),
        ("SETUP", setup_url.format(url=url)), ("PLAY", play_url.format(url=url)),
        ("TEARDOWN", play_url.format(url=url)),
    ]
    assert run.summary["frames"] >= 10, run.summary
    numbers = []
    for data, image in saved_frames(frames):
        assert data[-2:] == b"\xff\xd9" and image.size == SAMPLE_SIZE
        number = read_frame_number(image)
        assert decode(data).tobytes() == decode(source[number]).tobytes(), number
        numbers.append(number)
    assert len(numbers) == run.summary["frames"]

