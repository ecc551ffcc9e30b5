"""Live channels end to end over real sockets: a channel fed from the test, viewers over RTSP.

The producers (pipes, commands, generators) have their own tests; here frames are pushed
straight into a declared channel so each live rule can be checked exactly: SDP without a
finite range, joining at the next frame, PAUSE for one viewer only, the source ending
(BYE, 503, coming back), the textbook client's whole JPEGs, and leaks over many viewers.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from conftest import RtspTestClient, jpeg_bytes, no_leaks, wait_for
from PIL import Image

from mjpeg_rtsp.rtcp import Bye, SenderReport, parse_compound, unix_from_ntp
from mjpeg_rtsp.rtp import RtpPacket
from mjpeg_rtsp.sdp import parse_sdp


def frame_jpeg(number: int, size: tuple[int, int] = (320, 240)) -> bytes:
    img = Image.new("RGB", size, ((number * 40) % 256, 80, 160))
    return jpeg_bytes(img, quality=80)


class Pusher:
    """Pushes numbered frames into a channel from a thread of its own, like a producer."""

    def __init__(self, channel, fps: float = 50.0) -> None:
        self.channel, self.fps = channel, fps
        self.frames = [frame_jpeg(n) for n in range(8)]
        self.pushed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Pusher:
        self.channel.source_started("test pusher")
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(1 / self.fps):
            self.channel.push_jpeg(self.frames[self.pushed % len(self.frames)], time.time())
            self.pushed += 1

    def stop(self, reason: str = "test over") -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.channel.source_ended(reason)


@pytest.fixture
def live_server(server_factory):
    server = server_factory()
    channel = server.live_paths.declare("cam")
    pushers: list[Pusher] = []

    def feed(fps: float = 50.0) -> Pusher:
        pusher = Pusher(channel, fps).start()
        pushers.append(pusher)
        return pusher

    yield server, channel, feed
    for pusher in pushers:
        if not pusher._stop.is_set():
            pusher.stop()


def play_interleaved(port: int, path: str = "cam") -> tuple[RtspTestClient, str]:
    client = RtspTestClient(port)
    reply = client.request("SETUP", f"{path}/stream=0",
                           Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
    assert reply.status == 200, reply
    session = reply.headers.get("Session").split(";")[0]
    reply = client.request("PLAY", path, Session=session, Range="npt=5-")
    assert reply.status == 200, reply
    assert reply.headers.get("Range") == "npt=now-"  # Range is ignored on a live path
    return client, session


def rtp_packets(client: RtspTestClient) -> list[RtpPacket]:
    return [RtpPacket.parse(f.data) for f in client.frames if f.channel == 0]


def rtcp_packets(client: RtspTestClient) -> list:
    return [p for f in client.frames if f.channel == 1 for p in parse_compound(f.data)]


def test_describe_has_no_finite_range_and_off_air_is_503(live_server, rtsp_client) -> None:
    server, channel, feed = live_server
    client = rtsp_client(server.port)
    assert client.request("DESCRIBE", "cam").status == 503  # no frame yet
    assert client.request("SETUP", "cam/stream=0",
                          Transport="RTP/AVP/TCP;unicast;interleaved=0-1").status == 503
    feed()
    wait_for(lambda: channel.on_air, 5)
    reply = client.request("DESCRIBE", "cam")
    assert reply.status == 200
    sdp = reply.body.decode()
    assert "a=range:npt=now-" in sdp
    assert "npt=0-" not in sdp
    assert parse_sdp(sdp).media[0].rtpmap()[26] == ("JPEG", 90000)
    assert client.request("DESCRIBE", "nothing-here").status == 404


def test_viewer_joins_at_next_frame_with_capture_time_sender_report(live_server) -> None:
    server, channel, feed = live_server
    pusher = feed()
    wait_for(lambda: pusher.pushed >= 3, 5)
    client, session = play_interleaved(server.port)
    joined = pusher.pushed
    client.interleaved(60)
    packets = rtp_packets(client)
    frames = [p for p in packets if p.marker]
    assert len(frames) >= 10
    # Consecutive sequence numbers from the first packet; the first packet opens a frame.
    seqs = [p.sequence_number for p in packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    assert packets[0].payload[1:4] == b"\0\0\0"  # fragment offset 0
    reports = [p for p in rtcp_packets(client) if isinstance(p, SenderReport)]
    assert reports, "no sender report before the first frames"
    report = reports[0]
    # The SR maps the frame's RTP time to its capture time: within the push interval.
    first_ts = packets[0].timestamp
    assert report.rtp_timestamp == first_ts
    assert abs(unix_from_ntp(report.ntp_timestamp) - time.time()) < 5
    # Timestamps follow the pushes (50 fps: about 1800 ticks apart).
    stamps = [p.timestamp for p in frames]
    steps = [(b - a) & 0xFFFFFFFF for a, b in zip(stamps, stamps[1:], strict=False)]
    assert all(0 < s < 90000 for s in steps), steps
    assert channel.frames_in >= joined
    client.request("TEARDOWN", "cam", Session=session)
    client.close()


def test_pause_stops_one_viewer_only(live_server) -> None:
    server, channel, feed = live_server
    feed()
    wait_for(lambda: channel.on_air, 5)
    first, s1 = play_interleaved(server.port)
    second, s2 = play_interleaved(server.port)
    first.interleaved(10)
    assert first.request("PAUSE", "cam", Session=s1).status == 200
    paused_at = len(rtp_packets(first))
    count = len(second.frames)
    second.interleaved(count + 40)  # the other viewer goes on
    first.sock.settimeout(0.3)
    try:  # a frame already queued for the paused viewer may still come; nothing after it
        first.interleaved(len(first.frames) + 200)
    except TimeoutError:
        pass
    assert len(rtp_packets(first)) - paused_at < 30
    before = len(first.frames)
    first.sock.settimeout(5)
    reply = first.request("PLAY", "cam", Session=s1)
    assert reply.status == 200
    first.interleaved(before + 10)  # resumes at the live edge
    for client, session in ((first, s1), (second, s2)):
        client.request("TEARDOWN", "cam", Session=session)
        client.close()


def test_source_end_sends_bye_then_503_and_the_path_comes_back(live_server) -> None:
    server, channel, feed = live_server
    pusher = feed()
    wait_for(lambda: channel.on_air, 5)
    client, session = play_interleaved(server.port)
    client.interleaved(10)
    pusher.stop("camera unplugged")
    while not any(isinstance(p, Bye) for p in rtcp_packets(client)):
        client.interleaved(len(client.frames) + 1)  # the socket's timeout bounds the wait
    byes = [p for p in rtcp_packets(client) if isinstance(p, Bye)]
    assert byes and byes[0].reason == b"camera unplugged"
    assert client.request("PLAY", "cam", Session=session).status == 503
    assert client.request("DESCRIBE", "cam").status == 503
    feed()  # the source is back: the same session plays again
    wait_for(lambda: channel.on_air, 5)
    count = len(client.frames)
    assert client.request("PLAY", "cam", Session=session).status == 200
    client.interleaved(count + 10)
    client.request("TEARDOWN", "cam", Session=session)
    client.close()


def test_textbook_client_gets_whole_jpegs(live_server) -> None:
    server, channel, feed = live_server
    pusher = feed()
    wait_for(lambda: channel.on_air, 5)
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    rtp.settimeout(5)
    conn = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        port = rtp.getsockname()[1]
        conn.sendall(f"SETUP cam RTSP/1.0\nCSeq: 1\nTransport: RTP/UDP; client_port= {port}"
                     .encode())
        reply = conn.recv(4096).decode()
        assert reply.startswith("RTSP/1.0 200 OK"), reply
        session = reply.split("\n")[2].split(" ")[1]
        conn.sendall(f"PLAY cam RTSP/1.0\nCSeq: 2\nSession: {session}".encode())
        assert conn.recv(4096).decode().startswith("RTSP/1.0 200 OK")
        packets = [RtpPacket.parse(rtp.recv(65536)) for _ in range(10)]
        assert [p.sequence_number for p in packets] == list(range(1, 11))  # frame numbers from 1
        assert all(p.payload in pusher.frames for p in packets)
        conn.sendall(f"TEARDOWN cam RTSP/1.0\nCSeq: 3\nSession: {session}".encode())
        assert conn.recv(4096).decode().startswith("RTSP/1.0 200 OK")
    finally:
        conn.close()
        rtp.close()


def test_garbage_frames_are_counted_not_fatal(live_server) -> None:
    server, channel, feed = live_server
    assert channel.push_jpeg(b"\xff\xd8 not a jpeg", time.time()) is None
    assert channel.push_jpeg(b"", time.time()) is None
    assert channel.frames_invalid == 2 and not channel.on_air
    progressive = jpeg_bytes(Image.new("RGB", (64, 48), "red"), progressive=True)
    frame = channel.push_jpeg(progressive, time.time())
    assert frame is not None and frame.carried != progressive  # re-encoded for RFC 2435
    assert frame.rtp_payloads(1400) and frame.raw_payload() == (progressive,)
    assert channel.frames_reencoded == 1


def test_join_and_leave_cycles_leak_nothing(live_server) -> None:
    server, channel, feed = live_server
    feed()
    wait_for(lambda: channel.on_air, 5)
    with no_leaks(server, timeout=10):
        for _ in range(300):
            client, session = play_interleaved(server.port)
            client.interleaved(1)
            client.request("TEARDOWN", "cam", Session=session)
            client.close()
    assert server.streamer.fanout.viewer_count(channel) == 0


def test_measured_rate_is_not_inflated_by_bursts() -> None:
    """A pipe delivers frames in bursts (several read at once): the rate announced in the SDP
    is frames over a window of them, not the inverse of one step."""
    from mjpeg_rtsp.live import LiveChannel

    channel = LiveChannel("burst", "live")
    jpeg = frame_jpeg(0, (32, 32))
    t = 1000.0
    for n in range(128):  # 25 fps on average: four frames 0.5 ms apart every 160 ms
        if n % 4 == 0:
            t += 0.16
        channel.push_jpeg(jpeg, t + (n % 4) * 0.0005)
    assert 23 < channel.fps < 28
    assert LiveChannel("declared", "live", declared_fps=30).fps == 30


def test_bad_live_and_publish_options_stop_the_server_at_start(tmp_path, media_root,
                                                               capsys) -> None:
    """Start-up refusals: a readable line and exit code 2, never a traceback."""
    from Server import main as server_main

    base = ["0", "--host", "127.0.0.1", "--root", str(media_root)]
    assert server_main([*base, "--live", "a=-", "--live", "b=-"]) == 2
    assert "only one --live source can read the standard input" in capsys.readouterr().err
    assert server_main([*base, "--live", "movie.Mjpeg=testpattern"]) == 2
    assert "a media file has that name already" in capsys.readouterr().err
    assert server_main([*base, "--live", "cam=testpattern", "--live", "cam=testpattern"]) == 2
    assert "declared twice" in capsys.readouterr().err
    assert server_main([*base, "--publish-users", str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse: the source's own message
        server_main([*base, "--live", "cam=nonsense:1"])
    assert exit_info.value.code == 2
    assert "--live" in capsys.readouterr().err
