"""End-to-end latency from RTCP sender reports, and the low-latency setting (``--latency 0``).

The controller is driven with synthetic sender reports, real RFC 2435 payloads of a clip and
an injected wall clock, and must give the exact latencies (across the 2**32 timestamp wrap);
the jitter buffer's latency-0 mode releases each frame the moment it is complete; and the
real player against our real server reports sane figures (``latency_ms``) with RTCP and none
with the textbook dialect, and plays a clip whole with ``--latency 0``.
"""

from __future__ import annotations

import pytest
from peers.player_cli import frame_numbers, free_udp_port, run_player

from mjpeg_rtsp.client import parse_rtsp_url
from mjpeg_rtsp.controller import ControllerOptions, PlayerController, ReleasedFrame
from mjpeg_rtsp.jitter import INCOMPLETE_WAIT, JitterBuffer, starts_jpeg_frame
from mjpeg_rtsp.media import MjpegFile
from mjpeg_rtsp.rtcp import SenderReport, ntp_from_unix
from mjpeg_rtsp.rtp import RtpPacket, pack_header
from mjpeg_rtsp.stats import rounded_summary

SSRC = 0x5EED
WALL = 1_700_000_000.0  # the sender's wall clock at its SR (Unix seconds, exact in NTP)
STEP = 3600  # 25 fps on the 90 kHz clock
SERVER_IP = "127.0.0.1"


# --- the controller, with an injected clock ----------------------------------------------------


@pytest.fixture
def clip(media_root):
    media = MjpegFile(str(media_root / "short.Mjpeg"))
    yield media
    media.close()


class Feed:
    """RTP packets of the clip's frames into a controller (latency 0: out at once)."""

    def __init__(self, controller: PlayerController, media: MjpegFile) -> None:
        self.controller = controller
        self.media = media
        self.seq = 65530  # wraps too, on the way

    def frame(self, number: int, timestamp: int, now: float) -> list[ReleasedFrame]:
        payloads = self.media.rtp_payloads(number, 1400)
        for i, payload in enumerate(payloads):
            header = pack_header(26, self.seq, timestamp, SSRC, i == len(payloads) - 1)
            self.seq = (self.seq + 1) & 0xFFFF
            self.controller.receive_rtp(header + payload, SERVER_IP, now)
        return self.controller.release(now)

    def sender_report(self, rtp_timestamp: int, wall: float, ssrc: int = SSRC) -> None:
        report = SenderReport(ssrc, ntp_from_unix(wall), rtp_timestamp, 0, 0)
        self.controller.receive_rtcp(bytes(report), SERVER_IP, 0.0)


def controller() -> PlayerController:
    c = PlayerController(parse_rtsp_url("rtsp://127.0.0.1:8554/short.Mjpeg"),
                         ControllerOptions(latency=0.0))
    c.connected(SERVER_IP)
    c.client.ssrc = SSRC  # as the SETUP reply's Transport would give it
    return c


def test_latency_from_the_sender_report_across_the_timestamp_wrap(clip):
    c = controller()
    feed = Feed(c, clip)
    first = (1 << 32) - 2 * STEP
    # Before any SR: released, shown, but no latency and nothing counted.
    (early,) = feed.frame(0, first, 10.0)
    assert early.timestamp == first
    assert c.note_shown(early.timestamp, WALL) is None
    assert c.stats(10.0, whole_run=True)["latency_ms"] is None
    # The SR maps the RTP time half a frame before the wrap to WALL.
    feed.sender_report((1 << 32) - STEP // 2, WALL)
    # A report from another source is not this stream's clock.
    feed.sender_report(0, WALL + 100, ssrc=SSRC ^ 1)
    shown = []
    for n, timestamp, wall in ((1, (1 << 32) - STEP, WALL + 0.05),  # captured WALL - 0.02
                               (2, 0, WALL + 0.07),  # after the wrap: captured WALL + 0.02
                               (3, STEP, WALL + 0.0725)):  # captured WALL + 0.06
        (frame,) = feed.frame(n, timestamp, 10.0 + n / 25)
        assert frame.timestamp == timestamp and frame.jpeg[:2] == b"\xff\xd8"
        shown.append(c.note_shown(frame.timestamp, wall))
    assert shown == pytest.approx([0.07, 0.05, 0.0125], abs=1e-6)
    latency = c.stats(11.0, whole_run=True)["latency_ms"]
    assert latency == pytest.approx({"median": 50.0, "p95": 70.0, "frames": 3}, abs=1e-3)
    assert rounded_summary({"latency_ms": latency}) == {
        "latency_ms": {"median": 50.0, "p95": 70.0, "frames": 3}}
    assert c.stats(11.0)["latency_ms"]["frames"] == 3  # the status bar's recent window


def test_a_later_sender_report_replaces_the_mapping(clip):
    c = controller()
    feed = Feed(c, clip)
    feed.sender_report(0, WALL)
    feed.sender_report(90000, WALL + 2.5)  # the sender's clocks drifted by half a second
    assert c.capture_time(90000 + 9000) == pytest.approx(WALL + 2.6, abs=1e-6)
    assert c.capture_time(90000 - 9000) == pytest.approx(WALL + 2.4, abs=1e-6)


# --- the jitter buffer's latency 0 ---------------------------------------------------------------


def pkt(seq: int, ts: int, payload: bytes, marker: bool = False) -> RtpPacket:
    return RtpPacket(26, seq & 0xFFFF, ts, 1, payload, marker)


def start(offset: int = 0) -> bytes:
    """A payload whose RFC 2435 fragment offset is ``offset`` (0: a frame's first)."""
    return bytes([0]) + offset.to_bytes(3, "big") + b"\x01\xff\x30\x24data"


def test_latency_zero_releases_a_frame_the_moment_it_is_complete():
    jb = JitterBuffer(0.0, frame_start=starts_jpeg_frame)
    jb.push(pkt(0, 0, start()), 1.0)
    jb.push(pkt(1, 0, start(8)), 1.002)
    assert jb.pop(1.002) == [] and jb.next_due() == pytest.approx(1.002 + INCOMPLETE_WAIT)
    jb.push(pkt(2, 0, start(16), marker=True), 1.004)
    assert jb.next_due() == pytest.approx(1.004)  # due at its last packet, not 1.004 + hold
    (frame,) = jb.pop(1.004)
    assert (frame.first_seq, frame.last_seq) == (0, 2)


def test_latency_zero_reassembles_packets_reordered_within_a_frame():
    jb = JitterBuffer(0.0, frame_start=starts_jpeg_frame)
    for seq, payload, marker, at in ((2, start(16), True, 1.0), (0, start(), False, 1.001),
                                     (1, start(8), False, 1.002)):
        jb.push(pkt(seq, 0, payload, marker), at)
        if seq != 1:
            assert jb.pop(at) == []  # still a hole: nothing partial comes out
    (frame,) = jb.pop(1.002)
    assert frame.payloads == [start(), start(8), start(16)]
    assert (jb.frames_out, jb.frames_lost, jb.packets_late) == (1, 0, 0)


def test_latency_zero_does_not_wait_for_a_straggler_of_an_earlier_frame():
    jb = JitterBuffer(0.0, frame_start=starts_jpeg_frame)
    jb.push(pkt(0, 0, start()), 1.0)  # frame 0's marker (seq 1) is late
    jb.push(pkt(2, STEP, start(), marker=True), 1.04)  # frame 1, complete
    (frame,) = jb.pop(1.04)
    assert frame.timestamp == STEP
    assert jb.frames_lost == 1  # frame 0 was given up
    jb.push(pkt(1, 0, start(8), marker=True), 1.05)
    assert jb.packets_late == 1 and jb.pop(10.0) == []


def test_latency_zero_gives_up_an_incomplete_frame_with_nothing_behind_it():
    jb = JitterBuffer(0.0, frame_start=starts_jpeg_frame)
    jb.push(pkt(0, 0, start()), 1.0)
    assert jb.pop(1.0 + INCOMPLETE_WAIT - 0.01) == [] and jb.pending_packets == 1
    assert jb.pop(1.0 + INCOMPLETE_WAIT) == [] and jb.pending_packets == 0
    assert jb.frames_lost == 1 and jb.next_due() is None


def test_latency_zero_one_frame_per_packet_is_immediate():
    jb = JitterBuffer(0.0, frame_per_packet=True)
    jb.push(pkt(7, 123, b"\xff\xd8jpeg\xff\xd9"), 2.0)
    assert jb.next_due() == 2.0 and len(jb.pop(2.0)) == 1


# --- the real player against our server ----------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_latency_reported_against_our_server(server_factory, transport):
    server = server_factory(fps=50)
    run = run_player(f"rtsp://127.0.0.1:{server.port}/short.Mjpeg", "--transport", transport,
                     timeout=20)
    assert run.returncode == 0, str(run)
    summary = run.summary
    latency = summary["latency_ms"]
    assert latency is not None, summary
    # An SR goes out with the first frame: (nearly) every frame shown has a latency.
    assert 30 <= latency["frames"] <= summary["frames"] == 40, summary
    # The default 100 ms jitter buffer is part of it; loopback adds little.
    assert 0 < latency["median"] <= latency["p95"] < 1000, summary
    assert latency["median"] >= 90, summary


def test_no_latency_without_rtcp_in_the_textbook_dialect(server_factory):
    server = server_factory(fps=50)
    run = run_player("127.0.0.1", str(server.port), str(free_udp_port()), "short.Mjpeg",
                     timeout=20)
    assert run.returncode == 0, str(run)
    assert run.summary["frames"] == 40 and run.summary["latency_ms"] is None, run.summary


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_latency_zero_plays_the_clip_whole(server_factory, tmp_path, transport):
    server = server_factory(fps=50)
    run = run_player(f"rtsp://127.0.0.1:{server.port}/short.Mjpeg", "--latency", "0",
                     "--transport", transport, "--save-frames", str(tmp_path), timeout=20)
    assert run.returncode == 0, str(run)
    summary = run.summary
    assert summary["frames"] == 40 and summary["frames_lost"] == 0, summary
    assert frame_numbers(tmp_path) == list(range(40))
    # No 100 ms hold: what is left is sending, decoding and loopback.
    assert 0 < summary["latency_ms"]["median"] < 90, summary


def test_latency_zero_textbook_dialect(server_factory, tmp_path):
    server = server_factory(fps=50)
    run = run_player("127.0.0.1", str(server.port), str(free_udp_port()), "short.Mjpeg",
                     "--latency", "0", "--save-frames", str(tmp_path), timeout=20)
    assert run.returncode == 0, str(run)
    assert run.summary["frames"] == 40 and run.summary["frames_lost"] == 0, run.summary
    assert frame_numbers(tmp_path) == list(range(40))


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "x"])
def test_bad_latency_is_a_usage_error(value):
    run = run_player("rtsp://127.0.0.1:1/x", f"--latency={value}")
    assert run.returncode == 2 and "--latency" in run.stderr, str(run)
    assert "Traceback" not in run.stderr
