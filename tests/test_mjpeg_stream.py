"""Tests for mjpeg_rtsp.mjpeg_stream: raw MJPEG byte streams cut into whole JPEGs, whatever
the chunking, with garbage, thumbnails, progressive scans, oversized and truncated frames."""

from __future__ import annotations

import io
import struct
import subprocess

import pytest
from conftest import jpeg_bytes, need_tool
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mjpeg_rtsp.jpeg import find_frame_end, find_scan_end, scan_jpeg
from mjpeg_rtsp.limits import MAX_FILE_FRAME_BYTES
from mjpeg_rtsp.mjpeg_stream import MjpegStreamSplitter


def picture(width: int, height: int, seed: int) -> Image.Image:
    img = Image.new("RGB", (width, height))
    img.putdata([((x * 7 + seed) % 256, (y * 5 + 3 * seed) % 256, (x * y + seed) % 256)
                 for y in range(height) for x in range(width)])
    return img


def with_thumbnail(jpeg: bytes) -> bytes:
    """``jpeg`` with an EXIF-style APP1 holding a whole JPEG (its own SOI..EOI) after SOI."""
    body = b"Exif\x00\x00" + jpeg_bytes(picture(8, 8, 99))
    return jpeg[:2] + b"\xff\xe1" + struct.pack("!H", len(body) + 2) + body + jpeg[2:]


def with_fill_bytes(jpeg: bytes) -> bytes:
    """Fill bytes (T.81 B.1.1.2) before the first segment and before EOI."""
    return jpeg[:2] + b"\xff\xff" + jpeg[2:-2] + b"\xff\xff\xff\xd9"


# Frames of every shape a stream carries: plain baseline, an EXIF thumbnail whose FFD9 must
# not end the frame, fill bytes, restart markers, progressive (several scans and DHTs).
FRAMES = [
    jpeg_bytes(picture(32, 24, 1), quality=70),
    with_thumbnail(jpeg_bytes(picture(48, 32, 2))),
    with_fill_bytes(jpeg_bytes(picture(16, 16, 3))),
    jpeg_bytes(picture(64, 16, 4), restart_marker_blocks=1),
    jpeg_bytes(picture(40, 40, 5), progressive=True),
    jpeg_bytes(picture(24, 24, 6), quality=30),
]
GARBAGE = b"garbage\xff\x00\xff\xd9 not a jpeg \xff"
PADDING = b"\r\n\x00\x00\xff"
# Garbage before the first frame, padding between some, garbage at the end (not a frame).
STREAM = GARBAGE + FRAMES[0] + FRAMES[1] + PADDING + b"".join(FRAMES[2:]) + b"\x00tail"
SKIPPED = len(GARBAGE) + len(PADDING) + len(b"\x00tail")


def split(data: bytes, cuts: list[int], splitter: MjpegStreamSplitter | None = None):
    splitter = splitter or MjpegStreamSplitter()
    out: list[bytes] = []
    pos = 0
    for cut in [*sorted(cuts), len(data)]:
        out += splitter.feed(data[pos:cut])
        pos = cut
    return out, splitter


def check_accounting(s: MjpegStreamSplitter) -> None:
    assert s.bytes_in == s.bytes_delivered + s.bytes_skipped + s.buffered_bytes


def test_vectors_are_what_they_claim() -> None:
    assert b"\xff\xd9" in FRAMES[1][2:-2]  # the thumbnail's EOI
    assert scan_jpeg(FRAMES[3]).restart_interval == 1
    assert scan_jpeg(FRAMES[4]).incompatibility == "progressive JPEG"
    for frame in FRAMES:
        assert find_frame_end(frame, 0) == len(frame)
        with Image.open(io.BytesIO(frame)) as img:
            img.load()


def test_whole_stream_at_once() -> None:
    frames, s = split(STREAM, [])
    assert frames == FRAMES
    assert s.frames == len(FRAMES)
    assert s.bytes_skipped == SKIPPED and s.buffered_bytes == 0
    check_accounting(s)


def test_trailing_ff_is_kept_for_a_possible_soi() -> None:
    s = MjpegStreamSplitter()
    assert s.feed(b"junk\xff") == []
    assert s.buffered_bytes == 1 and s.bytes_skipped == 4
    assert s.feed(FRAMES[0][1:]) == [FRAMES[0]]
    assert s.bytes_skipped == 4
    check_accounting(s)


def test_one_byte_at_a_time() -> None:
    s = MjpegStreamSplitter()
    frames = [f for i in range(len(STREAM)) for f in s.feed(STREAM[i : i + 1])]
    assert frames == FRAMES
    assert s.end() is False
    assert s.bytes_skipped == SKIPPED
    check_accounting(s)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_any_chunking_gives_the_same_frames(cuts: list[int]) -> None:
    frames, s = split(STREAM, cuts)
    assert frames == FRAMES
    s.end()
    assert s.stats() == {
        "frames": len(FRAMES), "bytes_in": len(STREAM), "bytes_skipped": SKIPPED,
        "frames_oversized": 0, "frames_truncated": 0, "frames_corrupt": 0,
    }


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=2000), max_size=8))
def test_hostile_bytes_never_raise_and_account_for_everything(junk: bytes, cuts: list[int]) -> None:
    data = junk + FRAMES[0][: len(junk)] + junk + FRAMES[2] + junk
    cuts = [c for c in cuts if c <= len(data)]
    frames, s = split(data, cuts, MjpegStreamSplitter(max_frame_bytes=600))
    whole, _ = split(data, [], MjpegStreamSplitter(max_frame_bytes=600))
    assert frames == whole  # chunking never changes the result
    for frame in frames:
        assert frame[:2] == b"\xff\xd8" and frame[-2:] == b"\xff\xd9"
        assert len(frame) <= 600
    check_accounting(s)
    s.end()
    assert s.buffered_bytes == 0
    assert s.bytes_in == s.bytes_delivered + s.bytes_skipped


def test_truncated_last_frame_counted_at_end() -> None:
    s = MjpegStreamSplitter()
    assert s.feed(FRAMES[0] + FRAMES[1][:100]) == [FRAMES[0]]
    assert s.in_frame
    assert s.end() is True
    assert s.frames_truncated == 1 and s.buffered_bytes == 0
    # The splitter goes on with a fresh stream (a restarted producer).
    assert s.feed(FRAMES[2]) == [FRAMES[2]]
    check_accounting(s)


def test_frame_cut_off_by_the_next_soi() -> None:
    """A writer killed mid-frame and restarted: the next SOI ends the broken frame."""
    app0_end = 4 + struct.unpack("!H", FRAMES[0][4:6])[0]
    # Cut at a segment boundary, inside a segment (whose length swallows the next SOI: the
    # walk then finds no marker where one should be) and in the scan data.
    in_scan = scan_jpeg(FRAMES[0]).scan_start + 10
    for at, truncated in ((app0_end, 1), (10, 0), (in_scan, 1)):
        data = FRAMES[0][:at] + FRAMES[1] + FRAMES[2]
        frames, s = split(data, list(range(0, len(data), 7)))
        assert frames == [FRAMES[1], FRAMES[2]]
        assert (s.frames_truncated, s.frames_corrupt) == (truncated, 1 - truncated)
        assert s.bytes_skipped == at


@pytest.mark.parametrize("broken", [
    b"\xff\xd8\x00\x01\x02",  # no marker after SOI
    b"\xff\xd8\xff\xfe\x00\x01",  # segment length 1
    b"\xff\xd8\xff\x00",  # FF00 is not a marker
    b"\xff\xd8\xff\xd9",  # EOI before any scan
])
def test_corrupt_frame_resyncs_at_next_soi(broken: bytes) -> None:
    data = broken + FRAMES[0] + FRAMES[2]
    for cuts in ([], list(range(len(data)))):
        frames, s = split(data, cuts)
        assert frames == [FRAMES[0], FRAMES[2]]
        assert s.frames_corrupt == 1
        assert s.bytes_skipped == len(broken)


def test_oversized_frame_dropped_and_resynced() -> None:
    big = jpeg_bytes(picture(160, 120, 7), quality=95)
    limit = len(big) - 1
    data = FRAMES[0] + big + FRAMES[2]
    for cuts in ([], list(range(0, len(data), 100)), list(range(len(data)))):
        frames, s = split(data, cuts, MjpegStreamSplitter(max_frame_bytes=limit))
        assert frames == [FRAMES[0], FRAMES[2]]
        assert s.frames_oversized == 1
        assert s.bytes_skipped == len(big)
        check_accounting(s)
    frames, _ = split(data, [], MjpegStreamSplitter(max_frame_bytes=len(big)))
    assert frames == [FRAMES[0], big, FRAMES[2]]  # exactly the limit is allowed


def test_memory_bounded_by_the_frame_limit() -> None:
    s = MjpegStreamSplitter(max_frame_bytes=10_000)
    chunk = b"\x00" * 4096
    for _ in range(500):  # 2 MB of garbage: nothing is kept
        s.feed(chunk)
    assert s.buffered_bytes == 0
    s.feed(FRAMES[0][:-2])  # a frame whose scan never ends
    for _ in range(500):
        s.feed(chunk)
        assert s.buffered_bytes <= 10_000
    assert s.frames_oversized == 1
    assert s.feed(FRAMES[2]) == [FRAMES[2]]
    check_accounting(s)


def test_real_limit_frame_of_headers_and_scan() -> None:
    """A frame over MAX_FILE_FRAME_BYTES (APP segments and a long scan) is dropped; the next
    frame comes through. The default limit is the server's file frame limit."""
    s = MjpegStreamSplitter()
    assert s.max_frame_bytes == MAX_FILE_FRAME_BYTES
    base = FRAMES[0]
    app = b"\xff\xe2\xff\xff" + b"\xff\xd9" * (0xFFFD // 2) + b"\x00"
    sos = base.index(b"\xff\xda")
    scan = scan_jpeg(base).scan_start
    huge = (base[:2] + app * 200 + base[2:scan] + b"\x00" * MAX_FILE_FRAME_BYTES
            + base[scan:])
    assert sos < scan and len(huge) > MAX_FILE_FRAME_BYTES
    data = huge + FRAMES[2]
    frames = []
    for pos in range(0, len(data), 1 << 20):
        frames += s.feed(data[pos : pos + (1 << 20)])
    assert frames == [FRAMES[2]]
    assert s.frames_oversized == 1
    check_accounting(s)


def test_ffmpeg_mjpeg_output() -> None:
    """What `ffmpeg -f mjpeg -` writes, read in pipe-sized pieces."""
    ffmpeg = need_tool("ffmpeg")
    out = subprocess.run(
        [ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
         "-frames:v", "30", "-c:v", "mjpeg", "-huffman", "default", "-f", "mjpeg", "-"],
        capture_output=True, check=True, timeout=60,
    ).stdout
    frames, s = split(out, list(range(0, len(out), 4096)))
    assert len(frames) == 30 and b"".join(frames) == out
    assert all(scan_jpeg(f).rfc2435_type is not None for f in frames)
    assert s.bytes_skipped == 0


def test_find_scan_end_resumable() -> None:
    """jpeg.find_scan_end, the C-speed search the splitter resumes piece by piece."""
    frame = FRAMES[0]
    info = scan_jpeg(frame)
    assert find_scan_end(frame, info.scan_start, len(frame)) == info.scan_end
    assert find_scan_end(frame, info.scan_start, info.scan_end + 1) is None  # FF alone
    assert find_scan_end(frame, info.scan_end, info.scan_end + 2) == info.scan_end
