"""ingest.RtpJpegIngest: a publisher's RTP/JPEG packets and RTCP reports in, frames out.

Packets are made by our own payloader (rfc2435.packetize + rtp.pack_header) from JPEGs made
with Pillow, and sent for real by ffmpeg over UDP in the last test."""

from __future__ import annotations

import io
import random
import selectors
import socket
import subprocess
import time

import pytest
from conftest import PEER_TIMEOUT, jpeg_bytes, need_tool, udp_pair
from PIL import Image, ImageDraw

from mjpeg_rtsp.ingest import SR_PLAUSIBLE_OFFSET, IngestedFrame, RtpJpegIngest
from mjpeg_rtsp.jpeg import scan_jpeg
from mjpeg_rtsp.rfc2435 import JpegDepacketizer, packetize
from mjpeg_rtsp.rtcp import Bye, SenderReport, SourceDescription, build_compound, ntp_from_unix
from mjpeg_rtsp.rtp import RtpPacket, pack_header
from mjpeg_rtsp.sdp import AnnouncedVideo, parse_announce

SSRC = 0x1234ABCD
VIDEO = AnnouncedVideo(control="streamid=0", payload_type=26, clock_rate=90000)


def picture(width: int = 320, height: int = 240, seed: int = 0) -> Image.Image:
    img = Image.new("RGB", (width, height), (seed * 40 % 256, 90, 160))
    draw = ImageDraw.Draw(img)
    for i in range(0, width, 16):
        draw.line((i, 0, width - i, height), fill=(255 - i % 256, i % 256, seed * 7 % 256), width=3)
    return img


def make_jpeg(width: int = 320, height: int = 240, seed: int = 0, **options: object) -> bytes:
    options.setdefault("quality", 80)
    return jpeg_bytes(picture(width, height, seed), **options)


def payloads_of(jpeg: bytes, max_payload: int = 1000) -> list[bytes]:
    return packetize(jpeg, scan_jpeg(jpeg), max_payload)


def rtp_packets(payloads: list[bytes], seq: int, timestamp: int, ssrc: int = SSRC,
                pt: int = 26) -> list[bytes]:
    last = len(payloads) - 1
    return [
        pack_header(pt, (seq + i) & 0xFFFF, timestamp, ssrc, i == last) + payload
        for i, payload in enumerate(payloads)
    ]


def feed(ingest: RtpJpegIngest, packets: list[bytes],
         arrival: float = 100.0) -> list[IngestedFrame]:
    frames = []
    for i, packet in enumerate(packets):
        frame = ingest.receive_rtp(packet, arrival + i * 0.001)
        if frame is not None:
            frames.append(frame)
    return frames


def decoded(jpeg: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(jpeg))
    img.load()
    return img


def test_one_frame_byte_exact() -> None:
    jpeg = make_jpeg()
    payloads = payloads_of(jpeg)
    assert len(payloads) > 3
    ingest = RtpJpegIngest(VIDEO)
    frames = feed(ingest, rtp_packets(payloads, seq=100, timestamp=90000), arrival=50.0)
    assert len(frames) == 1
    frame = frames[0]
    # The payloads exactly as sent, and the JPEG exactly as the one depacketizer rebuilds it.
    assert frame.payloads == tuple(payloads)
    reference = JpegDepacketizer()
    for i, payload in enumerate(payloads):
        rebuilt = reference.push(payload, 90000, i == len(payloads) - 1)
    assert frame.jpeg == rebuilt
    # Pillow's encoder uses the standard Huffman tables, so the pixels are the original's.
    assert decoded(frame.jpeg).tobytes() == decoded(jpeg).tobytes()
    assert (frame.width, frame.height) == (320, 240)
    assert frame.rtp_timestamp == 90000
    assert frame.max_payload_size == max(len(p) for p in payloads) == 1000
    assert frame.payloads_standalone  # Q = 255: tables in this frame
    # No sender report yet: the arrival of the frame's first packet.
    assert frame.capture_time == frame.arrival_time == 50.0
    assert not frame.from_sender_report
    assert ingest.ssrc == SSRC
    stats = ingest.stats()
    assert (stats["packets"], stats["frames"], stats["frames_dropped"]) == (len(payloads), 1, 0)


def test_frames_across_sequence_and_timestamp_wrap() -> None:
    ingest = RtpJpegIngest(VIDEO)
    seq, timestamp = 65530, 0xFFFFFFFF - 3600 * 2
    sent = []
    got = []
    for n in range(5):
        jpeg = make_jpeg(seed=n)
        payloads = payloads_of(jpeg, 1400)
        sent.append(tuple(payloads))
        got += feed(ingest, rtp_packets(payloads, seq, timestamp))
        seq = (seq + len(payloads)) & 0xFFFF
        timestamp = (timestamp + 3600) & 0xFFFFFFFF
    assert [f.payloads for f in got] == sent
    assert [f.rtp_timestamp for f in got] == [
        (0xFFFFFFFF - 7200 + 3600 * n) & 0xFFFFFFFF for n in range(5)
    ]
    assert ingest.stats()["packets_lost"] == 0


def three_frames() -> list[list[bytes]]:
    """Three frames, 3000 ticks apart, numbered on from sequence number 1000."""
    frames, seq = [], 1000
    for n in range(3):
        payloads = payloads_of(make_jpeg(seed=n))
        frames.append(rtp_packets(payloads, seq, 3000 * n))
        seq += len(payloads)
    return frames


def test_lost_fragment_drops_the_frame() -> None:
    first, second, third = three_frames()
    ingest = RtpJpegIngest(VIDEO)
    frames = feed(ingest, first + second[:2] + second[3:] + third)
    assert [f.rtp_timestamp for f in frames] == [0, 6000]
    stats = ingest.stats()
    assert stats["frames_dropped"] == 1
    assert stats["frames"] == 2


def test_lost_marker_drops_the_frame_when_the_next_begins() -> None:
    first, second, third = three_frames()
    ingest = RtpJpegIngest(VIDEO)
    frames = feed(ingest, first + second[:-1] + third)
    assert [f.rtp_timestamp for f in frames] == [0, 6000]
    assert frames[1].payloads == tuple(p[12:] for p in third)
    assert ingest.stats()["frames_dropped"] == 1


def test_lost_first_fragment_drops_the_frame() -> None:
    first, second, third = three_frames()
    ingest = RtpJpegIngest(VIDEO)
    frames = feed(ingest, first + second[1:] + third)
    assert [f.rtp_timestamp for f in frames] == [0, 6000]
    assert ingest.stats()["frames_dropped"] == 1


def test_reordered_fragments_drop_the_frame_duplicates_do_not() -> None:
    first, second, third = three_frames()
    ingest = RtpJpegIngest(VIDEO)
    swapped = second[:1] + [second[2], second[1]] + second[3:]
    duplicated = third[:2] + [third[1]] + third[2:]
    frames = feed(ingest, first + swapped + duplicated)
    assert [f.rtp_timestamp for f in frames] == [0, 6000]
    assert frames[1].payloads == tuple(p[12:] for p in third)
    stats = ingest.stats()
    assert stats["late_packets"] == 2  # the late half of the swap, and the duplicate
    assert stats["frames_dropped"] == 1


def test_foreign_ssrc_and_wrong_payload_type_are_ignored_and_counted() -> None:
    first, second, _ = three_frames()
    intruder = rtp_packets(payloads_of(make_jpeg(seed=9)), 5000, 777, ssrc=0xBAD)
    other_pt = rtp_packets(payloads_of(make_jpeg(seed=8)), 6000, 888, pt=96)
    mixed = []
    for i, packet in enumerate(first + second):
        mixed.append(packet)
        if i < len(intruder):
            mixed.append(intruder[i])
        if i < len(other_pt):
            mixed.append(other_pt[i])
    ingest = RtpJpegIngest(VIDEO)
    frames = feed(ingest, other_pt[:1] + mixed)  # a wrong type first does not latch its SSRC
    assert [f.rtp_timestamp for f in frames] == [0, 3000]
    assert ingest.ssrc == SSRC
    stats = ingest.stats()
    assert stats["foreign_ssrc"] == len(intruder)
    assert stats["wrong_payload_type"] == len(other_pt) + 1
    assert stats["frames_dropped"] == 0


def test_dynamic_payload_type_from_the_announce() -> None:
    announced = parse_announce(
        "v=0\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 JPEG/90000\r\n")
    ingest = RtpJpegIngest(announced)
    first = rtp_packets(payloads_of(make_jpeg()), 1, 0, pt=96)
    static = rtp_packets(payloads_of(make_jpeg()), 50, 3000, pt=26)
    assert len(feed(ingest, first + static)) == 1
    assert ingest.stats()["wrong_payload_type"] == len(static)


def test_garbage_never_raises() -> None:
    first, second, third = three_frames()
    ingest = RtpJpegIngest(VIDEO)
    feed(ingest, first)
    junk = [
        b"", b"\x80", b"\x00" * 12, b"\x40" + bytes(30),  # empty, short, version 0, version 1
        b"\x8f\x1a" + bytes(10),  # 15 CSRCs announced, none there
        b"\x90\x1a" + bytes(10) + b"\x00\x00\x00\x09",  # extension past the end
        b"\xa0\x1a" + bytes(10) + b"\xff",  # padding longer than the packet
        # RFC 2435 header truncated, Q = 0 (reserved), type 5 (unsupported).
        pack_header(26, 1200, 9000, SSRC, True) + b"\x00\x00",
        pack_header(26, 1201, 9001, SSRC, True) + bytes(8),
        pack_header(26, 1202, 9002, SSRC, True) + b"\x00\x00\x00\x00\x05\xff\x28\x1e",
    ]
    for packet in junk:
        assert ingest.receive_rtp(packet, 1.0) is None
    stats = ingest.stats()
    assert stats["bad_packets"] == 7
    assert stats["bad_payloads"] == 3
    # Random corruption of real packets: counted one way or another, never an exception.
    rng = random.Random(2435)
    for _ in range(3000):
        packet = bytearray(rng.choice(second))
        for _ in range(rng.randint(1, 6)):
            packet[rng.randrange(len(packet))] = rng.randrange(256)
        ingest.receive_rtp(bytes(packet[: rng.randint(0, len(packet))]), 2.0)
    # The stream goes on: a fresh run of packets after the garbage gives its frame.
    later = rtp_packets(payloads_of(make_jpeg(seed=5)), 40000, 123456)
    frames = feed(ingest, later)
    frames += feed(ingest, rtp_packets(payloads_of(make_jpeg(seed=6)), 40000 + len(later),
                                       123456 + 3000))
    assert frames and frames[-1].rtp_timestamp == 123456 + 3000
    assert decoded(frames[-1].jpeg).size == (320, 240)


def test_frame_over_the_byte_limit_is_dropped_and_memory_bounded() -> None:
    big = make_jpeg(1280, 720, quality=95)
    small = make_jpeg()
    limit = len(small) + 4096
    assert len(big) > 2 * limit
    ingest = RtpJpegIngest(VIDEO, max_frame_bytes=limit)
    frames = feed(ingest, rtp_packets(payloads_of(big, 1400), 1, 0)
                  + rtp_packets(payloads_of(small, 1400), 500, 3000))
    assert [f.rtp_timestamp for f in frames] == [3000]
    stats = ingest.stats()
    assert (stats["frames_too_large"], stats["frames_dropped"]) == (1, 1)


def test_frame_over_the_packet_limit_is_dropped() -> None:
    jpeg = make_jpeg()
    tiny = payloads_of(jpeg, 200)  # many small fragments
    ingest = RtpJpegIngest(VIDEO, max_frame_packets=len(tiny) - 1)
    frames = feed(ingest, rtp_packets(tiny, 1, 0) + rtp_packets(payloads_of(jpeg), 500, 3000))
    assert [f.rtp_timestamp for f in frames] == [3000]
    stats = ingest.stats()
    assert (stats["frames_too_large"], stats["frames_dropped"]) == (1, 1)


def test_frame_over_the_pixel_limit_is_refused() -> None:
    jpeg = make_jpeg(2048, 64, quality=30)  # over 2040: the header's width is 0
    wide = AnnouncedVideo(control=None, payload_type=26, clock_rate=90000,
                          width=2048, height=64)
    assert len(feed(RtpJpegIngest(wide), rtp_packets(payloads_of(jpeg), 1, 0))) == 1
    ingest = RtpJpegIngest(wide, max_frame_pixels=2048 * 63)
    assert feed(ingest, rtp_packets(payloads_of(jpeg), 1, 0)) == []
    assert ingest.stats()["frames_too_large"] == 1


def test_size_over_2040_from_x_dimensions() -> None:
    jpeg = make_jpeg(2048, 64, quality=30)
    announced = parse_announce(
        "v=0\r\nt=0 0\r\nm=video 0 RTP/AVP 26\r\na=x-dimensions:2048,64\r\n")
    frames = feed(RtpJpegIngest(announced), rtp_packets(payloads_of(jpeg), 1, 0))
    assert (frames[0].width, frames[0].height) == (2048, 64)
    assert decoded(frames[0].jpeg).size == (2048, 64)


def sender_report(ntp: int, rtp_ts: int, ssrc: int = SSRC) -> bytes:
    return build_compound(SenderReport(ssrc, ntp, rtp_ts, 10, 10000),
                          SourceDescription.cname(ssrc, "publisher@test"))


def test_sender_report_maps_capture_time_exactly() -> None:
    first, second, third = three_frames()
    ingest = RtpJpegIngest(VIDEO)
    wall = 1_700_000_000.0  # whole seconds: exact in NTP and in a float
    # A report of the publisher before its first RTP packet is kept for it.
    ingest.receive_rtcp(sender_report(ntp_from_unix(wall), 0), wall + 0.01)
    frames = feed(ingest, first + second, arrival=wall + 0.2)
    assert [f.capture_time for f in frames] == [wall, wall + 3000 / 90000]
    assert all(f.from_sender_report for f in frames)
    assert frames[0].arrival_time == wall + 0.2
    # A later report across the timestamp wrap: RTP time 2**32 - 45000 was wall + 10.
    ingest.receive_rtcp(sender_report(ntp_from_unix(wall + 10), 2**32 - 45000), wall + 10.3)
    frames = feed(ingest, third, arrival=wall + 10.4)
    assert frames[0].capture_time == wall + 10 + (6000 + 45000) / 90000
    assert ingest.capture_time(45000) == wall + 11.0
    assert ingest.stats()["sender_reports"] == 2


def test_sender_reports_that_cannot_map_times() -> None:
    first, second, third = three_frames()
    ingest = RtpJpegIngest(VIDEO)
    feed(ingest, first, arrival=500.0)
    now = 1_700_000_000.0
    ingest.receive_rtcp(sender_report(ntp_from_unix(now), 0, ssrc=0xBAD), now)  # not ours
    ingest.receive_rtcp(sender_report(0, 0), now)  # no wall clock
    ingest.receive_rtcp(sender_report(ntp_from_unix(now - SR_PLAUSIBLE_OFFSET - 1), 0), now)
    ingest.receive_rtcp(b"\x81\xc8\x00\x40garbage", now)
    frames = feed(ingest, second, arrival=now)
    assert frames[0].capture_time == now and not frames[0].from_sender_report
    stats = ingest.stats()
    assert (stats["sender_reports"], stats["sender_reports_unusable"], stats["bad_rtcp"]) == (
        2, 2, 1)
    assert not ingest.bye_received
    ingest.receive_rtcp(build_compound(SenderReport(SSRC, ntp_from_unix(now), 0, 1, 1),
                                       Bye((SSRC,))), now)
    assert ingest.bye_received


def test_report_block_on_the_publisher() -> None:
    first, second, third = three_frames()
    ingest = RtpJpegIngest(VIDEO)
    assert ingest.report_block(1.0) is None
    now = 1_700_000_000.0
    feed(ingest, first + second[:-2] + second[-1:], arrival=now)
    ingest.receive_rtcp(sender_report(ntp_from_unix(now), 0), now + 0.5)
    block = ingest.report_block(now + 1.5)
    assert block.ssrc == SSRC
    assert block.cumulative_lost == 1
    assert block.highest_seq == RtpPacket.parse(second[-1]).sequence_number
    assert block.lsr == (ntp_from_unix(now) >> 16) & 0xFFFFFFFF
    assert block.dlsr == 65536


def test_tables_sent_once_are_not_standalone() -> None:
    """Q 128..254: tables in-band in one frame, then reused (RFC 2435 3.1.8)."""
    jpeg = make_jpeg()
    with_tables = [p[:5] + b"\xc8" + p[6:] for p in payloads_of(jpeg)]  # Q = 200
    first = with_tables[0]
    # The first payload again without the tables: main header, then MBZ/precision/length 0.
    without = [first[:8] + b"\x00\x00\x00\x00" + first[8 + 4 + 128:]] + with_tables[1:]
    ingest = RtpJpegIngest(VIDEO)
    frames = feed(ingest, rtp_packets(with_tables, 1, 0) + rtp_packets(without, 100, 3000))
    assert [f.payloads_standalone for f in frames] == [True, False]
    assert frames[0].jpeg == frames[1].jpeg


def test_ffmpeg_sends_rtp_jpeg_over_udp() -> None:
    ffmpeg = need_tool("ffmpeg")
    rtp, rtcp = udp_pair()
    with rtp, rtcp:
        for sock in (rtp, rtcp):
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        port = rtp.getsockname()[1]
        ingest = RtpJpegIngest(VIDEO)
        frames: list[IngestedFrame] = []
        proc = subprocess.Popen(
            [ffmpeg, "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi",
             "-i", "testsrc2=size=320x240:rate=25", "-frames:v", "12", "-c:v", "mjpeg",
             "-huffman", "default", "-pix_fmt", "yuvj420p", "-f", "rtp",
             f"rtp://127.0.0.1:{port}?rtcpport={port + 1}&pkt_size=1200"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        with selectors.DefaultSelector() as selector:
            selector.register(rtp, selectors.EVENT_READ)
            selector.register(rtcp, selectors.EVENT_READ)
            deadline = time.monotonic() + PEER_TIMEOUT
            try:
                while time.monotonic() < deadline:
                    exited = proc.poll() is not None
                    events = selector.select(0.05)
                    for key, _ in events:
                        data = key.fileobj.recv(65536)
                        if key.fileobj is rtcp:
                            ingest.receive_rtcp(data, time.time())
                        else:
                            frame = ingest.receive_rtp(data, time.time())
                            if frame is not None:
                                frames.append(frame)
                    if exited and not events:
                        break  # everything it sent before exiting has been read
            finally:
                if proc.poll() is None:
                    proc.kill()
                _, err = proc.communicate(timeout=PEER_TIMEOUT)
        assert proc.returncode == 0, err.decode(errors="replace")
    assert len(frames) == 12, ingest.stats()
    for frame in frames:
        assert decoded(frame.jpeg).size == (320, 240) == (frame.width, frame.height)
        assert frame.max_payload_size <= 1200 - 12
    # ffmpeg sends a sender report with its first packet: capture times come from it.
    assert frames[-1].from_sender_report
    assert abs(frames[-1].capture_time - frames[-1].arrival_time) < 2.0
    steps = {(b.rtp_timestamp - a.rtp_timestamp) % 2**32
             for a, b in zip(frames, frames[1:], strict=False)}
    assert steps == {3600}  # 25 fps on the 90 kHz clock
    stats = ingest.stats()
    assert (stats["frames_dropped"], stats["bad_packets"], stats["foreign_ssrc"]) == (0, 0, 0)


if __name__ == "__main__":
    pytest.main([__file__])
