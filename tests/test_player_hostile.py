"""The player facing a hostile server: decompression bombs, frames that never end, absurd
header values. Byte-exact vectors for the sans-I/O pieces, then the real player (the Player
class, or ``ClientLauncher.py --headless``) against a scripted server over real sockets."""

from __future__ import annotations

import io
import re
import struct
import subprocess
import time

import pytest
from conftest import ROOT, SAMPLE, jpeg_bytes, textbook_frames, wait_for
from peers.hostile_server import (
    HostileServer,
    default_sdp,
    rtp_packets,
    textbook_packets,
)
from peers.player_cli import finished, free_udp_port, player_command
from PIL import Image
from test_controller import URL as CONTROLLER_URL
from test_controller import Clock, InMemoryServer, Pair
from test_gui import launch as window_launcher  # noqa: F401 (a fixture, by this name)
from test_gui import setup_and_play, textbook_args

from mjpeg_rtsp.client import (
    ClientError,
    RtspClient,
    parse_framerate,
    parse_rtsp_url,
)
from mjpeg_rtsp.controller import ControllerOptions, PlayerController
from mjpeg_rtsp.headers import parse_session_timeout
from mjpeg_rtsp.jitter import JitterBuffer
from mjpeg_rtsp.jpeg import JpegError, frame_size, scan_jpeg
from mjpeg_rtsp.limits import MAX_DECODE_PIXELS, MAX_FRAME_PIXELS, FrameTooLargeError
from mjpeg_rtsp.player import Player, PlayerOptions, decode_for_display
from mjpeg_rtsp.rawjpeg import RawJpegAssembler
from mjpeg_rtsp.rfc2435 import JpegDepacketizer, Rfc2435FrameTooLargeError, packetize
from mjpeg_rtsp.rtp import RtpPacket
from mjpeg_rtsp.rtsp import Headers, Response

VECTOR = (ROOT / "tests" / "vectors" / "gradient_16x16_q50_420.jpg").read_bytes()


def forged(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its SOF0 claiming ``width`` x ``height`` (T.81 B.2.2: P, Y, X)."""
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[: sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9 :]


def frames(count: int, size: tuple[int, int] = (64, 48)) -> list[bytes]:
    return [jpeg_bytes(Image.new("RGB", size, (i * 20 % 256, 90, 160)), quality=80)
            for i in range(count)]


# --- the frame's size, before anything is decoded -------------------------------------------


def test_frame_size_reads_only_the_headers():
    assert frame_size(VECTOR) == (16, 16)
    assert frame_size(forged(VECTOR, 60000, 60000)) == (60000, 60000)
    info = scan_jpeg(VECTOR)
    garbage_scan = VECTOR[: info.scan_start] + b"\xff\x01" * 10  # no EOI: never read
    assert frame_size(garbage_scan) == (16, 16)
    with pytest.raises(JpegError, match="no SOI marker at offset 0"):
        frame_size(b"\x00" + VECTOR)
    with pytest.raises(JpegError, match="truncated"):
        frame_size(VECTOR[:20])  # ends inside the headers, before the SOF


@pytest.mark.parametrize("size", [(60000, 60000), (12288, 12288), (65535, 1025)])
def test_decoder_refuses_a_bomb_before_allocating(size):
    with pytest.raises(FrameTooLargeError, match=f"{size[0]}x{size[1]} frame exceeds "
                       f"{MAX_FRAME_PIXELS} pixels"):
        decode_for_display(forged(VECTOR, *size), (320, 240))


def test_decoder_limit_is_a_parameter():
    with pytest.raises(FrameTooLargeError):
        decode_for_display(VECTOR, None, max_pixels=255)
    assert decode_for_display(VECTOR, None, max_pixels=256)[1:] == (16, 16)


def test_a_large_frame_is_decoded_at_a_reduced_scale():
    big = jpeg_bytes(Image.new("L", (4200, 4100), 128))
    image, width, height = decode_for_display(big)  # headless: no display size
    assert (width, height) == (4200, 4100)
    assert image.size == (2100, 2050) and image.width * image.height <= MAX_DECODE_PIXELS
    image, _, _ = decode_for_display(big, (320, 240))
    assert image.size == (246, 240)


# --- assembly stops at its byte limits ----------------------------------------------------------


def test_textbook_assembly_without_eoi_is_bounded():
    assembler = RawJpegAssembler(max_bytes=1000)
    assert assembler.push(b"\xff\xd8" + b"a" * 298, 1) is None
    for seq in range(2, 12):  # 10 more pieces of 300 bytes, none ending with EOI
        assert assembler.push(b"b" * 300, seq) is None
        assert assembler.buffered_bytes <= 1000
    assert (assembler.frames_rejected, assembler.frames_dropped) == (1, 0)
    assert assembler.buffered_bytes == 0
    jpeg = b"\xff\xd8" + b"c" * 500 + b"\xff\xd9"
    assert assembler.push(jpeg[:300], 12) is None
    assert assembler.push(jpeg[300:], 13) == jpeg
    assert assembler.frames_rejected == 1


def test_depacketizer_refuses_a_bomb_at_its_first_fragment():
    bomb, good = frames(2)
    depay = JpegDepacketizer(60000, 60000)  # a=x-dimensions:60000,60000
    payloads = packetize(bomb, scan_jpeg(bomb), 200)
    zeroed = [p[:6] + b"\x00\x00" + p[8:] for p in payloads]  # size: see x-dimensions
    with pytest.raises(Rfc2435FrameTooLargeError,
                       match=f"60000x60000 frame exceeds {MAX_FRAME_PIXELS} pixels"):
        depay.push(zeroed[0], 0, False)
    for payload in zeroed[1:]:  # the rest of that frame is dropped quietly
        assert depay.push(payload, 0, payload is zeroed[-1]) is None
    reference = JpegDepacketizer()
    expected = None
    for i, payload in enumerate(good_payloads := packetize(good, scan_jpeg(good), 200)):
        last = i == len(good_payloads) - 1
        out = depay.push(payload, 3600, last)
        expected = reference.push(payload, 3600, last)
    assert out == expected and out is not None
    assert Image.open(io.BytesIO(out)).size == (64, 48)


def test_depacketizer_bounds_the_bytes_of_a_frame():
    big, good = jpeg_bytes(Image.effect_noise((256, 256), 64).convert("RGB")), frames(1)[0]
    payloads = packetize(big, scan_jpeg(big), 1000)
    depay = JpegDepacketizer(max_bytes=5000)
    with pytest.raises(Rfc2435FrameTooLargeError, match="frame data exceeds 5000 bytes at "
                       "offset 4"):
        for i, payload in enumerate(payloads):
            depay.push(payload, 0, i == len(payloads) - 1)
    assert i == 5  # the sixth fragment would have crossed 5000 bytes
    good_payloads = packetize(good, scan_jpeg(good), 1000)
    assert len(good_payloads) == 1 and depay.push(good_payloads[0], 3600, True) is not None


def test_jitter_buffer_bounds_the_bytes_it_holds():
    jb = JitterBuffer(0.1, frame_per_packet=True, max_bytes=10_000)
    for seq in range(100):
        jb.push(RtpPacket(26, seq, seq, 1, b"x" * 1000), 0.0)
        assert jb.pending_bytes <= 10_000
    assert (jb.pending_packets, jb.pending_bytes, jb.frames_lost) == (10, 10_000, 90)
    assert [f.first_seq for f in jb.pop(1.0)] == list(range(90, 100))
    assert jb.pending_bytes == 0


# --- header values: out of range means "not given" ---------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("4242;timeout=30", 30.0), ("4242; timeout = 45.5", 45.5), ("4242", None),
    ("4242;timeout=0", None), ("4242;timeout=-5", None), ("4242;timeout=1e308", None),
    ("4242;timeout=" + "9" * 5000, None), ("4242;timeout=nan", None),
    ("4242;timeout=\u00b2", None), ("4242;timeout=", None), ("4242;timeout=0.000001", 1.0),
])
def test_session_timeout_vectors(value, expected):
    assert parse_session_timeout(value) == expected


@pytest.mark.parametrize("value, expected", [
    ("25", 25.0), ("29.97", 29.97), (" 30 ", 30.0), (None, None), ("", None), ("0", None),
    ("nan", None), ("inf", None), ("1e308", None), ("-25", None), ("1001", None),
    ("9" * 5000, None),
])
def test_framerate_vectors(value, expected):
    assert parse_framerate(value) == expected


def _client_after_describe(sdp: str) -> RtspClient:
    client = RtspClient(parse_rtsp_url("rtsp://h/clip"))
    client.describe()
    client.receive(Response(200, Headers([("CSeq", "1"), ("Content-Type", "application/sdp")]),
                            sdp.encode()))
    return client


@pytest.mark.parametrize("range_value, duration", [
    ("npt=0-10", 10.0), ("npt=5-15.5", 10.5), ("npt=0-", None), ("npt=50-10", None),
    ("npt=0-0", None), ("npt=0-1e308", None), ("npt=0-" + "9" * 5000, None),
    ("npt=0-nan", None), ("npt=0-inf", None), ("npt=-5-10", None),
    ("npt=0-99999999999", None),  # 3000 years: not a file's length
])
def test_sdp_range_vectors(range_value, duration):
    sdp = default_sdp().replace("a=range:npt=0-10", f"a=range:{range_value}")
    assert _client_after_describe(sdp).media.duration == duration


def _play_reply(**headers: str):
    client = _client_after_describe(default_sdp())
    client.play()
    fields = [("CSeq", "2")] + [(k.replace("_", "-"), v) for k, v in headers.items()]
    return client.receive(Response(200, Headers(fields)))


@pytest.mark.parametrize("info, seq, rtptime", [
    ("url=rtsp://h/clip/track1;seq=17;rtptime=4294967295", 17, 4294967295),
    ("url=x;seq=65536;rtptime=4294967296", None, None),
    ("url=x;seq=-1;rtptime=-1", None, None),
    ("url=x;seq=\u00b2;rtptime=\u00b9\u00b2", None, None),  # str.isdigit() says yes
    ("url=x;seq=1e3;rtptime=" + "9" * 5000, None, None),
    ("url=x", None, None),
])
def test_rtp_info_vectors(info, seq, rtptime):
    reply = _play_reply(RTP_Info=info)
    assert (reply.rtp_seq, reply.rtp_time) == (seq, rtptime)


@pytest.mark.parametrize("value", ["npt=0-1e308", "npt=" + "9" * 5000 + "-", "npt=nan-",
                                   "npt=-5-", "npt=inf-inf", "npt=99999999999:00:00-"])
def test_play_range_that_cannot_be_read_is_ignored(value):
    assert _play_reply(Range=value).play_range is None


def test_transport_values_out_of_range():
    client = _client_after_describe(default_sdp())
    client.setup("tcp")
    with pytest.raises(ClientError, match="bad Transport in SETUP reply"):
        client.receive(Response(200, Headers([
            ("CSeq", "2"), ("Session", "1"), ("Transport", "RTP/AVP/TCP;interleaved=0-300")])))
    client = _client_after_describe(default_sdp())
    client.setup("udp", 5000)
    client.receive(Response(200, Headers([
        ("CSeq", "2"), ("Session", "1"),
        ("Transport", "RTP/AVP;unicast;client_port=5000-5001;server_port=65535")])))
    assert client.server_ports is None  # no port for receiver reports: none are sent


# --- the real player against a hostile server ------------------------------------------------


def run_headless(*args: str, timeout: float = 30):
    with subprocess.Popen(player_command(*args, "--headless"), cwd=ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        stdout, stderr = process.communicate(timeout=timeout)
    return finished(process.returncode, stdout, stderr)


def test_bomb_frames_from_x_dimensions_are_dropped_and_later_frames_decoded():
    bombs, good = frames(3), frames(10)
    datagrams = rtp_packets(bombs, size=(0, 0))  # size 0: a=x-dimensions applies
    datagrams += rtp_packets(good, first_seq=len(datagrams), first_frame=len(bombs))
    sdp = default_sdp("a=x-dimensions:60000,60000\r\n")
    # Paced like a stream: the decoder keeps only the newest frames when it falls behind.
    with HostileServer(sdp=sdp, datagrams=datagrams, pace=0.03) as server:
        run = run_headless(server.url, "--duration", "1.5")
        assert run.returncode == 0, run
        assert run.summary["frames_rejected"] == 3, run.summary
        assert run.summary["frames"] == 10, run.summary
        assert (run.summary["width"], run.summary["height"]) == (64, 48)
        assert wait_for(lambda: "TEARDOWN" in server.methods, 5), server.methods


def test_textbook_bombs_and_garbage_are_dropped_and_later_frames_decoded():
    sof = VECTOR.index(b"\xff\xc0")
    undecodable = VECTOR[: sof + 4] + b"\x07" + VECTOR[sof + 5 :]  # 7-bit samples: no decoder
    payloads = [forged(VECTOR, 60000, 60000), forged(VECTOR, 12288, 12288), undecodable,
                *frames(8)]
    with HostileServer(datagrams=textbook_packets(payloads), pace=0.03) as server:
        run = run_headless("127.0.0.1", str(server.port), str(free_udp_port()), "clip.Mjpeg")
        assert run.returncode == 0, run
        summary = run.summary
        assert (summary["frames_rejected"], summary["frames"]) == (2, 8), str(summary)
        assert summary["frames_undecodable"] == 1, summary
        assert summary["frames_lost"] == 3, summary
        assert server.methods == ["SETUP", "PLAY", "TEARDOWN"], server.methods


def _peak_rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def test_textbook_frame_without_eoi_keeps_memory_bounded():
    piece = b"p" * 60000
    payloads = [b"\xff\xd8" + piece] + [piece] * 1200 + frames(5)  # 72 MB with no EOI
    with HostileServer(datagrams=textbook_packets(payloads), pace=0.001) as server:
        command = player_command("127.0.0.1", str(server.port), str(free_udp_port()),
                                 "clip.Mjpeg", "--headless")
        peak = 0.0
        with subprocess.Popen(command, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) as process:
            deadline = time.monotonic() + 30
            while process.poll() is None and time.monotonic() < deadline:
                peak = max(peak, _peak_rss_mb(process.pid) or 0.0)
                time.sleep(0.05)
            stdout, stderr = process.communicate(timeout=5)
        run = finished(process.returncode, stdout, stderr)
    assert run.returncode == 0, run
    assert run.summary["packets_lost"] == 0, run.summary  # else the frame ended by a gap
    assert run.summary["frames_rejected"] == 1 and run.summary["frames"] == 5, run.summary
    # The interpreter and Pillow (about 25 MB), 8 MiB of assembly, 0.1 s of stream in the
    # jitter buffer. Without the bound this run peaks at about 95 MB.
    assert 0 < peak < 65, f"peak RSS {peak:.0f} MB"


HOSTILE_VALUES = [
    ({"PLAY": {"Range": "npt=0-1e308"}}, None),
    ({"PLAY": {"Range": "npt=" + "9" * 5000 + "-"}}, None),
    ({"PLAY": {"Range": "npt=nan-"}}, None),
    ({"PLAY": {"Range": "npt=-5-"}}, None),
    ({"PLAY": {"RTP-Info": "url=x;seq=\u00b2;rtptime=\u00b2"}}, None),
    ({"PLAY": {"RTP-Info": "url=x;seq=99999999999;rtptime=" + "9" * 5000}}, None),
    ({"SETUP": {"Session": "4242;timeout=0"}}, None),
    ({"SETUP": {"Session": "4242;timeout=-5"}}, None),
    ({"SETUP": {"Session": "4242;timeout=1e308"}}, None),
    (None, "a=range:npt=0-1e308\r\n"),
    (None, "a=range:npt=50-10\r\n"),
    (None, "a=framerate:nan\r\n"),
    (None, "a=framerate:1e308\r\n"),
    (None, "a=x-dimensions:60000,60000\r\n"),
]


@pytest.mark.parametrize("headers, sdp_extra", HOSTILE_VALUES,
                         ids=[f"value{i}" for i in range(len(HOSTILE_VALUES))])
def test_absurd_header_values_are_ignored_and_the_stream_plays(headers, sdp_extra):
    sdp = default_sdp(sdp_extra or "")  # media-level attributes win over session-level ones
    with HostileServer(sdp=sdp, headers=headers, datagrams=rtp_packets(frames(5))) as server:
        player = Player(parse_rtsp_url(server.url), PlayerOptions(reply_timeout=5))
        player.start()
        try:
            player.setup()
            player.play()
            assert wait_for(lambda: player.stats()["frames"] == 5 or player.failed, 10)
            assert player.failed is None and player.stats()["frames"] == 5, player.stats()
            assert player.client.session_timeout == 60.0
            assert player.duration in (None, 10.0)
            assert player.client.media.fps is None
        finally:
            player.close()
        assert player.client.state.value == "Init"
        assert server.methods[-1] == "TEARDOWN", server.methods


@pytest.mark.parametrize("headers, transport, message", [
    ({"PLAY": {"Content-Length": "9" * 5000}}, "udp", "error: unreadable reply from the server"),
    ({"SETUP": {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-300"}}, "tcp",
     "error: bad Transport in SETUP reply"),
])
def test_fatal_values_end_with_an_error_and_a_teardown(headers, transport, message):
    with HostileServer(headers=headers, datagrams=rtp_packets(frames(3))) as server:
        started = time.monotonic()
        run = run_headless(server.url, "--transport", transport, "--duration", "20")
        assert run.returncode == 1, run
        assert message in run.stderr and "Traceback" not in run.stderr, run
        assert time.monotonic() - started < 15
        assert wait_for(lambda: "TEARDOWN" in server.methods, 5), server.methods


def test_window_shows_frames_after_bomb_frames(request):
    """The window shares the decoder: bombs first, then the sample's numbered frames."""
    launch = request.getfixturevalue("window_launcher")
    payloads = [forged(VECTOR, 60000, 60000), forged(VECTOR, 12288, 12288)]
    payloads += textbook_frames(SAMPLE)[:40]
    with HostileServer(datagrams=textbook_packets(payloads), pace=0.04) as server:
        player = launch(*textbook_args(server.port, "clip.Mjpeg"))
        setup_and_play(player)
        number = player.wait_frame(lambda n: n >= 5, 10)
        assert number is not None, f"no frame shown after the bombs:\n{player.output()}"
        assert player.proc.poll() is None


# --- the same rules in the sans-I/O controller ----------------------------------------------


class TamperingServer(InMemoryServer):
    """The server's own replies, with the PLAY reply rewritten by ``tamper``."""

    def __init__(self, media_root, clock, tamper) -> None:
        super().__init__(media_root, clock)
        self.tamper = tamper

    def feed(self, data: bytes) -> bytes:
        out = super().feed(data)
        return self.tamper(out) if self.requests[-1].method == "PLAY" else out


def _controller_pair(media_root, tamper) -> Pair:
    clock = Clock()
    server = TamperingServer(media_root, clock, tamper)
    return Pair(PlayerController(parse_rtsp_url(CONTROLLER_URL), ControllerOptions()), server,
                clock)


def test_controller_ignores_an_rtp_info_rtptime_that_is_no_number(media_root):
    pair = _controller_pair(media_root, lambda out: re.sub(rb"rtptime=\d+",
                                                           "rtptime=\u00b2".encode(), out))
    pair.command("setup")
    pair.command("play")
    # str.isdigit("²") is True and int("²") raises: the reply must not reach int().
    assert pair.controller.failed is None and pair.controller.state.value == "Playing"


def test_controller_failure_sends_teardown(media_root):
    pair = _controller_pair(media_root, lambda out: out.replace(
        b"CSeq:", b"Content-Length: " + b"9" * 5000 + b"\r\nCSeq:", 1))
    pair.command("setup")
    pair.command("play")
    assert pair.controller.failed.startswith("unreadable reply from the server")
    assert [r.method for r in pair.server.requests][-2:] == ["PLAY", "TEARDOWN"]
