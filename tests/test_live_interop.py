"""Every peer plays every live source kind, end to end, through a real server.

Peers: ffmpeg (UDP and TCP), GStreamer's rtspsrc (UDP and TCP), our player (headless, UDP
and TCP, with latency from the sender reports) and the textbook client's dialect (one whole
JPEG per datagram). Kinds: stdin (``Server.py --live cam=-`` fed by an ffmpeg pipe), exec
(ffmpeg's testsrc2), a looping file, the test pattern and the screen under Xvfb. One server
per kind, all its peers at once, so the file stays well under a minute.

Then the live rules end to end with real producers: joining mid-stream at a whole frame,
an exec source whose command exits (BYE, 503 while down, back by itself), a slow viewer that
loses its own frames only, a source mixing garbage and JPEGs that RFC 2435 cannot carry, and
300 join/leave cycles on a real test pattern with nothing left behind.
"""

from __future__ import annotations

import io
import logging
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from conftest import (
    ROOT,
    RtspTestClient,
    assert_gst_reached_eos,
    jpeg_bytes,
    need_tool,
    no_leaks,
    require_tools,
    run_peer,
    udp_pair,
    wait_for,
)
from peers.player_cli import run_player
from PIL import Image
from test_textbook import TextbookClient

from mjpeg_rtsp.rtcp import Bye, parse_compound
from mjpeg_rtsp.rtp import RtpPacket
from mjpeg_rtsp.sources import parse_live_argument
from Server import StreamingServer

PEER_FRAMES = 12  # frames each peer must get; the screen runs at 10 fps, the rest at 25
PLAYER_SECONDS = 2.0
ON_AIR_TIMEOUT = 15.0


def ffmpeg_source(size: str = "320x240", rate: int = 25, *extra: str) -> list[str]:
    """ffmpeg writing raw MJPEG (testsrc2, paced with -re) to its stdout; standard Huffman
    tables so that RFC 2435 carries the frames as they are."""
    return [need_tool("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", "-re",
            "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}", *extra,
            "-c:v", "mjpeg", "-huffman", "default", "-f", "mjpeg", "-"]


def exec_spec(name: str, argv: list[str]) -> tuple[str, object]:
    return parse_live_argument(f"{name}=exec:{shlex.join(argv)}")


@contextmanager
def live_server(media_root: Path, *sources: str | tuple[str, object],
                **options) -> Iterator[StreamingServer]:
    """An in-process server on 127.0.0.1 with the given ``--live`` sources (text or parsed)."""
    live = [parse_live_argument(s) if isinstance(s, str) else s for s in sources]
    server = StreamingServer(root=str(media_root), host="127.0.0.1", port=0, live=live,
                             **options)
    server.start()
    try:
        yield server
    finally:
        server.shutdown()


def describe_when_on_air(port: int, path: str) -> str:
    """DESCRIBE ``path`` until it answers 200 (the source's first frame); the SDP."""
    client = RtspTestClient(port)
    try:
        def described():
            reply = client.request("DESCRIBE", path)
            assert reply.status in (200, 503), reply
            return reply.body.decode() if reply.status == 200 else None
        sdp = wait_for(described, ON_AIR_TIMEOUT, 0.1)
    finally:
        client.close()
    assert sdp, f"{path} did not go on air within {ON_AIR_TIMEOUT} s"
    return sdp


# --- the peers ----------------------------------------------------------------------------


@dataclass
class Target:
    url: str
    port: int
    path: str
    size: tuple[int, int]


def play_ffmpeg(target: Target, transport: str) -> str:
    result = run_peer([need_tool("ffmpeg"), "-nostdin", "-hide_banner", "-rtsp_transport",
                       transport, "-i", target.url, "-frames:v", str(PEER_FRAMES),
                       "-f", "null", "-"], text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    width, height = target.size
    assert "Video: mjpeg" in result.stderr and f"{width}x{height}" in result.stderr, \
        result.stderr[-2000:]
    counts = [int(n) for n in re.findall(r"frame=\s*(\d+)", result.stderr)]
    assert counts and counts[-1] == PEER_FRAMES, result.stderr[-2000:]
    return f"ffmpeg {transport}: {counts[-1]} frames"


def play_gstreamer(target: Target, protocol: str) -> str:
    result = run_peer([need_tool("gst-launch-1.0"), "-v", "rtspsrc", f"location={target.url}",
                       f"protocols={protocol}", "!", "rtpjpegdepay", "!", "jpegdec", "!",
                       "fakesink", f"num-buffers={PEER_FRAMES}"], text=True)
    log = result.stdout + result.stderr
    assert_gst_reached_eos(result.returncode, log)
    width, height = target.size
    assert f"width=(int){width}, height=(int){height}" in log, log[-3000:]
    return f"gst {protocol}: EOS"


def play_ours(target: Target, transport: str) -> str:
    run = run_player(target.url, "--transport", transport, "--duration", str(PLAYER_SECONDS),
                     timeout=30)
    assert run.returncode == 0, str(run)
    summary = run.summary
    assert summary["frames"] > 0, summary
    assert (summary["width"], summary["height"]) == target.size, summary
    latency = summary["latency_ms"]
    assert latency is not None and latency["frames"] > 0, summary
    # Capture (or arrival) time to display: the 100 ms jitter buffer plus a little.
    assert 0 < latency["median"] <= latency["p95"] < 1000, summary
    return f"player {transport}: {summary['frames']} frames, latency {latency}"


def play_textbook(target: Target) -> str:
    client = TextbookClient(target.port, target.path)
    try:
        assert client.send(client.SETUP) == 200
        assert client.send(client.PLAY) == 200
        packets = client.receive(PEER_FRAMES)
        assert len(packets) == PEER_FRAMES
        # The course's numbering: one datagram per frame, sequence numbers 1, 2, 3, ...
        assert [p.seqNum() for p in packets] == list(range(1, PEER_FRAMES + 1))
        for packet in packets:
            assert packet.payloadType() == 26 and packet.marker() == 1
            image = Image.open(io.BytesIO(packet.getPayload()))
            image.load()  # one whole JPEG in the datagram
            assert image.size == target.size
        assert client.send(client.TEARDOWN) == 200
    finally:
        client.close()
    return f"textbook: {len(packets)} whole JPEGs"


def every_peer_plays(target: Target) -> None:
    """DESCRIBE says live; then all the peers at once, each checked on its own."""
    require_tools("ffmpeg", "gst-launch-1.0")
    sdp = describe_when_on_air(target.port, target.path)
    assert "a=range:npt=now-" in sdp and "npt=0-" not in sdp, sdp
    peers: list[Callable[[], str]] = [
        lambda: play_ffmpeg(target, "udp"), lambda: play_ffmpeg(target, "tcp"),
        lambda: play_gstreamer(target, "udp"), lambda: play_gstreamer(target, "tcp"),
        lambda: play_ours(target, "udp"), lambda: play_ours(target, "tcp"),
        lambda: play_textbook(target),
    ]
    with ThreadPoolExecutor(len(peers)) as pool:
        futures = [pool.submit(peer) for peer in peers]
        for future in futures:
            future.result()  # a peer's assertion fails the test here


def in_process_target(server: StreamingServer, path: str, size: tuple[int, int]) -> Target:
    return Target(f"rtsp://127.0.0.1:{server.port}/{path}", server.port, path, size)


# --- every peer, every kind ---------------------------------------------------------------


def test_stdin_source_in_server_subprocess(media_root: Path, tmp_path: Path) -> None:
    """``ffmpeg ... -f mjpeg - | Server.py --live cam=-``, as a user runs it."""
    feeder = subprocess.Popen(ffmpeg_source("320x240", 25), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log_file:
        server = subprocess.Popen(
            [sys.executable, str(ROOT / "Server.py"), "0", "--host", "127.0.0.1",
             "--root", str(media_root), "--live", "cam=-"],
            stdin=feeder.stdout, stdout=subprocess.PIPE, stderr=log_file, text=True, cwd=ROOT)
    feeder.stdout.close()  # the server holds the pipe now
    try:
        first = server.stdout.readline()
        match = re.search(r"listening on port (\d+)", first)
        assert match, first + log_path.read_text()
        port = int(match.group(1))
        every_peer_plays(Target(f"rtsp://127.0.0.1:{port}/cam", port, "cam", (320, 240)))
        assert server.poll() is None, log_path.read_text()
    finally:
        server.terminate()  # SIGTERM: a clean stop
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stdout.close()
        feeder.kill()
        feeder.wait()
    log = log_path.read_text()
    assert server.returncode == 0, log
    assert "Traceback" not in log, log
    assert "live cam: on air, 320x240" in log, log


def test_exec_ffmpeg_testsrc2(media_root: Path) -> None:
    with live_server(media_root, exec_spec("cam", ffmpeg_source("320x240", 25))) as server:
        every_peer_plays(in_process_target(server, "cam", (320, 240)))
        assert server.producers[0].starts == 1  # the command never had to be restarted


def test_file_loop(media_root: Path) -> None:
    # short.mjpeg has 40 frames: the peers' runs cross its loop point.
    with live_server(media_root, f"loop=file:{media_root / 'short.mjpeg'}", fps=25) as server:
        every_peer_plays(in_process_target(server, "loop", (384, 288)))


def test_testpattern(media_root: Path) -> None:
    with live_server(media_root, "pattern=testpattern:320x240@25") as server:
        every_peer_plays(in_process_target(server, "pattern", (320, 240)))


def test_screen_under_xvfb(media_root: Path, xvfb_display: str) -> None:
    with live_server(media_root, f"desk=screen:{xvfb_display}@10,scale=320x240") as server:
        every_peer_plays(in_process_target(server, "desk", (320, 240)))


# --- live semantics end to end ------------------------------------------------------------


def rtp_of(client: RtspTestClient) -> list[RtpPacket]:
    return [RtpPacket.parse(f.data) for f in client.frames if f.channel == 0]


def rtcp_of(client: RtspTestClient) -> list:
    return [p for f in client.frames if f.channel == 1 for p in parse_compound(f.data)]


def setup_interleaved(client: RtspTestClient, path: str) -> str:
    reply = client.request("SETUP", f"{path}/stream=0",
                           Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
    assert reply.status == 200, reply
    return reply.headers.get("Session").split(";")[0]


def play(client: RtspTestClient, path: str, session: str) -> None:
    reply = client.request("PLAY", path, Session=session)
    assert reply.status == 200, reply
    assert reply.headers.get("Range") == "npt=now-", reply


def test_joining_mid_stream_starts_at_a_whole_frame(media_root: Path) -> None:
    """Frames of many packets (640x480 testsrc2); every viewer's first packet opens a frame,
    over interleaved TCP and over UDP alike."""
    argv = ffmpeg_source("640x480", 25, "-q:v", "2")
    with live_server(media_root, exec_spec("cam", argv)) as server:
        describe_when_on_air(server.port, "cam")
        packets_per_frame = []
        for join in range(12):
            client = RtspTestClient(server.port)
            try:
                if join % 2:
                    session = setup_interleaved(client, "cam")
                    play(client, "cam", session)
                    client.interleaved(42)  # an SR comes first, then the packets
                    first = rtp_of(client)[0]
                    packets = rtp_of(client)
                else:
                    rtp, rtcp = udp_pair()
                    try:
                        port = rtp.getsockname()[1]
                        reply = client.request(
                            "SETUP", "cam/stream=0",
                            Transport=f"RTP/AVP;unicast;client_port={port}-{port + 1}")
                        session = reply.headers.get("Session").split(";")[0]
                        play(client, "cam", session)
                        rtp.settimeout(5)
                        packets = [RtpPacket.parse(rtp.recv(65536)) for _ in range(40)]
                        first = packets[0]
                    finally:
                        rtp.close()
                        rtcp.close()
                assert first.payload[1:4] == b"\0\0\0", f"join {join}: fragment offset " \
                    f"{int.from_bytes(first.payload[1:4], 'big')}"
                ends = [i for i, p in enumerate(packets) if p.marker]
                packets_per_frame.append(ends[0] + 1)
                client.request("TEARDOWN", "cam", Session=session)
            finally:
                client.close()
        assert min(packets_per_frame) > 1, packets_per_frame  # joins could land mid-frame


def test_exec_source_exit_bye_503_and_back_by_itself(media_root: Path) -> None:
    """A command that ends after 2 s: the viewer gets RTCP BYE, DESCRIBE answers 503 while
    it is down, the server starts it again (back-off) and a viewer reconnecting plays."""
    argv = ffmpeg_source("320x240", 25, "-frames:v", "50")
    with live_server(media_root, exec_spec("cam", argv)) as server:
        channel, producer = server.live_paths.get("cam"), server.producers[0]
        describe_when_on_air(server.port, "cam")
        viewer = RtspTestClient(server.port)
        try:
            session = setup_interleaved(viewer, "cam")
            play(viewer, "cam", session)
            while not any(isinstance(p, Bye) for p in rtcp_of(viewer)):
                viewer.interleaved(len(viewer.frames) + 1)  # the socket's timeout bounds it
            assert any(p.marker for p in rtp_of(viewer))
            bye = next(p for p in rtcp_of(viewer) if isinstance(p, Bye))
            assert b"exited with status 0" in bye.reason, bye
            # Down: the back-off holds the restart for at least a second.
            assert viewer.request("DESCRIBE", "cam").status == 503
            assert viewer.request("PLAY", "cam", Session=session).status == 503
        finally:
            viewer.close()
        assert producer.exit_statuses[:1] == [0]
        describe_when_on_air(server.port, "cam")  # back by itself
        assert producer.starts >= 2
        again = RtspTestClient(server.port)
        try:
            session = setup_interleaved(again, "cam")
            play(again, "cam", session)
            again.interleaved(100)  # about ten packets a frame
            assert sum(p.marker for p in rtp_of(again)) >= 5
            assert rtp_of(again)[0].payload[1:4] == b"\0\0\0"
            again.request("TEARDOWN", "cam", Session=session)
        finally:
            again.close()
        assert channel.frames_in > 50


class Reader(threading.Thread):
    """Reads an interleaved viewer's packets as fast as they come, until told to stop."""

    def __init__(self, client: RtspTestClient) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.packets: list[tuple[float, RtpPacket]] = []
        self.running = True
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while self.running:
                frames = self.client.interleaved(1)
                for frame in frames:
                    if frame.channel == 0:
                        self.packets.append((time.monotonic(), RtpPacket.parse(frame.data)))
                frames.clear()  # keep memory flat: the packets are parsed already
        except OSError as exc:  # the socket closed under us at the end of the test
            if self.running:
                self.error = exc

    def frames_between(self, start: float, end: float) -> list[RtpPacket]:
        return [p for t, p in self.packets if start <= t < end]


def test_slow_viewer_loses_frames_alone(media_root: Path) -> None:
    """A viewer that stops reading (a tiny receive window) loses frames, counted; another
    viewer gets every frame at the source's rate, and the source is not slowed."""
    # 50 fps of ~40 KB frames: the slow connection's 64-frame queue and its socket buffers
    # fill within 3 s.
    argv = ffmpeg_source("640x480", 50, "-q:v", "1")
    with live_server(media_root, exec_spec("cam", argv)) as server:
        channel = server.live_paths.get("cam")
        describe_when_on_air(server.port, "cam")
        slow_client = RtspTestClient(server.port)
        slow_client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        fast = RtspTestClient(server.port)
        reader = Reader(fast)
        try:
            slow_session = setup_interleaved(slow_client, "cam")
            play(slow_client, "cam", slow_session)  # and never read again
            fast_session = setup_interleaved(fast, "cam")
            play(fast, "cam", fast_session)
            reader.start()
            sessions = {s.id: s for s in server.registry.all()}
            slow_s, fast_s = sessions[slow_session], sessions[fast_session]
            assert wait_for(lambda: slow_s.packets_dropped > 0, 20), \
                "the slow viewer's frames were never dropped"
            # From here on the slow viewer's queue is full: measure the others over 2 s.
            start, frames_at_start = time.monotonic(), channel.frames_in
            fast_dropped = fast_s.packets_dropped
            wait_for(lambda: time.monotonic() - start >= 2.0, 3)  # a measuring window
            end, frames_at_end = time.monotonic(), channel.frames_in
            rate = (frames_at_end - frames_at_start) / (end - start)
            assert 40 <= rate <= 60, f"the source ran at {rate:.1f} fps, not 50"
            slow_dropped = slow_s.packets_dropped
            dropped_frames = sum(w.writer.frames_dropped
                                 for _, w in list(server._workers.values()))
            assert dropped_frames > 0  # the slow connection's writer counted them
            # The fast viewer: every frame of the window (give the last one time to arrive).
            wait_for(lambda: reader.packets and reader.packets[-1][0] > end + 0.3, 3)
            assert fast_s.packets_dropped == fast_dropped == 0
            window = reader.frames_between(start, end + 0.3)
            seqs = [p.sequence_number for p in window]
            assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))
            got = sum(p.marker for p in window)
            assert got >= frames_at_end - frames_at_start - 1, (got, frames_at_end,
                                                                frames_at_start)
            assert slow_s.packets_dropped >= slow_dropped  # still losing, still counted
            assert reader.error is None, reader.error
        finally:
            reader.running = False
            fast.close()
            slow_client.close()
            reader.join(5)


def write_garbage_source(folder: Path) -> list[str]:
    """A shell loop writing, over and over: junk, a baseline JPEG, a junk run holding a stray
    SOI, a progressive JPEG (re-encoded for RFC 2435), a truncated JPEG, a JPEG."""
    img = Image.new("RGB", (320, 240), (30, 120, 200))
    for x in range(0, 320, 16):
        img.paste((x % 256, 200, 40), (x, 0, x + 8, 240))
    baseline = jpeg_bytes(img, quality=80)
    (folder / "a.jpg").write_bytes(baseline)
    (folder / "p.jpg").write_bytes(jpeg_bytes(img, quality=80, progressive=True))
    (folder / "cut.jpg").write_bytes(baseline[: len(baseline) // 2])
    (folder / "junk").write_bytes(b"junk between frames \x00\x01\xff\xd8\xff\x00 more junk"
                                  + bytes(range(256)) * 4)
    files = " ".join(shlex.quote(str(folder / name))
                     for name in ("junk", "a.jpg", "junk", "p.jpg", "cut.jpg", "a.jpg"))
    return ["sh", "-c", f"while :; do cat {files}; printf noise; sleep 0.05; done"]


def test_garbage_source_keeps_serving_with_counted_skips(media_root: Path, tmp_path: Path,
                                                         caplog) -> None:
    require_tools("ffmpeg")
    caplog.set_level(logging.INFO)
    argv = write_garbage_source(tmp_path)
    spec = exec_spec("junk", argv)
    with live_server(media_root, spec) as server:
        channel, producer = server.live_paths.get("junk"), server.producers[0]
        target = in_process_target(server, "junk", (320, 240))
        describe_when_on_air(server.port, "junk")
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(play_ffmpeg, target, "tcp"),
                       pool.submit(play_ours, target, "udp"),
                       pool.submit(play_textbook, target)]
            for future in futures:
                future.result()
        assert wait_for(lambda: channel.frames_reencoded >= 3, 10), channel.stats()
        stats = producer.stats()
        assert stats["bytes_skipped"] > 0, stats
        assert stats["frames_skipped"] + channel.frames_invalid > 0, (stats, channel.stats())
        assert producer.starts == 1 and producer.on_air, stats  # never fell over
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not [r for r in caplog.records if "producer failed" in r.getMessage()]


def test_300_join_leave_cycles_on_a_live_path(media_root: Path) -> None:
    """A real test pattern; viewers over interleaved TCP and UDP come and go."""
    with live_server(media_root, "pattern=testpattern:160x120@60") as server:
        channel = server.live_paths.get("pattern")
        describe_when_on_air(server.port, "pattern")
        with no_leaks(server, timeout=10):
            for cycle in range(300):
                client = RtspTestClient(server.port)
                try:
                    if cycle % 2:
                        session = setup_interleaved(client, "pattern")
                        play(client, "pattern", session)
                        client.interleaved(1)
                    else:
                        rtp, rtcp = udp_pair()
                        try:
                            port = rtp.getsockname()[1]
                            reply = client.request(
                                "SETUP", "pattern/stream=0",
                                Transport=f"RTP/AVP;unicast;client_port={port}-{port + 1}")
                            session = reply.headers.get("Session").split(";")[0]
                            play(client, "pattern", session)
                            rtp.settimeout(5)
                            rtp.recv(65536)
                        finally:
                            rtp.close()
                            rtcp.close()
                    assert client.request("TEARDOWN", "pattern", Session=session).status == 200
                finally:
                    client.close()
        assert server.streamer.fanout.viewer_count(channel) == 0
        assert channel.on_air
