"""Tests for mjpeg_rtsp.jpeg: the JPEG marker scanner (T.81 annex B, RFC 2435 section 3.1.3)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from conftest import jpeg_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mjpeg_rtsp.jpeg import (
    STANDARD_HUFFMAN_TABLES,
    Component,
    JpegError,
    find_frame_end,
    scan_jpeg,
)

VECTORS = Path(__file__).parent / "vectors"
# 16x16 gradient, Pillow quality 50, 4:2:0: SOI, APP0 JFIF, DQT, DQT, SOF0, 4 x DHT, SOS.
VECTOR = (VECTORS / "gradient_16x16_q50_420.jpg").read_bytes()

# T.81 Annex K.1 / K.2 tables in zig-zag order (what DQT stores at quality 50).
ANNEX_K_LUMA_ZIGZAG = bytes([
    16, 11, 12, 14, 12, 10, 16, 14, 13, 14, 18, 17, 16, 19, 24, 40,
    26, 24, 22, 22, 24, 49, 35, 37, 29, 40, 58, 51, 61, 60, 57, 51,
    56, 55, 64, 72, 92, 78, 64, 68, 87, 69, 55, 56, 80, 109, 81, 87,
    95, 98, 103, 104, 103, 62, 77, 113, 121, 112, 100, 120, 92, 101, 103, 99,
])
ANNEX_K_CHROMA_ZIGZAG = bytes([
    17, 18, 18, 24, 21, 24, 47, 26, 26, 47, 99, 66, 56, 66, 99, 99,
] + [99] * 48)

# Segment offsets inside VECTOR, checked by test_vector_layout.
SOF_AT, DHT_AT, SOS_AT = 158, 177, 609


def sample_image(width: int = 32, height: int = 32) -> Image.Image:
    img = Image.new("RGB", (width, height))
    img.putdata(
        [((x * 7) % 256, (y * 5) % 256, (x * y) % 256) for y in range(height) for x in range(width)]
    )
    return img


def insert_before(data: bytes, offset: int, segment: bytes) -> bytes:
    return data[:offset] + segment + data[offset:]


# ---------------------------------------------------------------------------------------------
# Byte-exact vector


def test_vector_layout() -> None:
    assert VECTOR[:4] == b"\xff\xd8\xff\xe0"
    assert VECTOR[20:22] == b"\xff\xdb" and VECTOR[89:91] == b"\xff\xdb"
    assert VECTOR[SOF_AT : SOF_AT + 2] == b"\xff\xc0"
    assert VECTOR[DHT_AT : DHT_AT + 2] == b"\xff\xc4"
    assert VECTOR[SOS_AT : SOS_AT + 2] == b"\xff\xda"
    assert len(VECTOR) == 653


def test_vector_every_field() -> None:
    info = scan_jpeg(VECTOR)
    assert info.width == 16
    assert info.height == 16
    assert info.sof == 0xC0
    assert info.precision == 8
    assert info.components == (
        Component(id=1, h=2, v=2, tq=0),
        Component(id=2, h=1, v=1, tq=1),
        Component(id=3, h=1, v=1, tq=1),
    )
    assert info.qtables == {0: ANNEX_K_LUMA_ZIGZAG, 1: ANNEX_K_CHROMA_ZIGZAG}
    assert info.qtable_precision == {0: 0, 1: 0}
    assert info.huffman_tables == STANDARD_HUFFMAN_TABLES
    assert info.restart_interval == 0
    assert info.scan_start == 623  # SOS at 609 + 2 + length 12
    assert info.scan_end == 651
    assert info.end == 653
    assert VECTOR[info.scan_start : info.scan_end] == bytes.fromhex(
        "e7edec7a715a76f63d38ad3b7b1e9c569dbd8f4e2aaae2c32fc76da9"
    )
    assert info.rfc2435_type == 1
    assert info.incompatibility is None


def test_standard_huffman_tables_shape() -> None:
    # Annex K.3: 12 DC symbols, 162 AC symbols, each after 16 counts that add up to them.
    assert {k: len(v) for k, v in STANDARD_HUFFMAN_TABLES.items()} == {
        (0, 0): 28, (0, 1): 28, (1, 0): 178, (1, 1): 178,
    }
    for table in STANDARD_HUFFMAN_TABLES.values():
        assert sum(table[:16]) == len(table) - 16
    assert STANDARD_HUFFMAN_TABLES[(1, 0)][16:24] == bytes.fromhex("0102030004110512")
    assert STANDARD_HUFFMAN_TABLES[(1, 1)][16:24] == bytes.fromhex("0001020311040521")


def test_absolute_offsets_with_start() -> None:
    data = b"junk!" + VECTOR + b"trailing"
    info = scan_jpeg(data, 5)
    assert (info.scan_start, info.scan_end, info.end) == (628, 656, 658)
    assert find_frame_end(data, 5) == 658


def test_memoryview_and_bytearray_inputs() -> None:
    assert scan_jpeg(memoryview(VECTOR)) == scan_jpeg(VECTOR)
    assert scan_jpeg(bytearray(VECTOR)).end == 653


def test_find_frame_end_concatenated_stream() -> None:
    frames = [jpeg_bytes(sample_image(16 + 8 * k, 16), quality=40 + k) for k in range(3)]
    stream = b"".join(frames)
    pos, ends = 0, []
    while pos < len(stream):
        pos = find_frame_end(stream, pos)
        ends.append(pos)
    assert ends == [sum(len(f) for f in frames[: k + 1]) for k in range(3)]


# ---------------------------------------------------------------------------------------------
# Marker walk details


def test_exif_thumbnail_with_eoi_inside_app1_does_not_end_frame() -> None:
    thumbnail = jpeg_bytes(sample_image(8, 8))
    body = b"Exif\x00\x00" + thumbnail
    app1 = b"\xff\xe1" + struct.pack("!H", len(body) + 2) + body
    data = insert_before(VECTOR, 2, app1)
    info = scan_jpeg(data)
    assert info.end == len(data)
    assert info.scan_start == 623 + len(app1)
    assert find_frame_end(data, 0) == len(data)


def test_com_segment_and_fill_bytes_before_markers() -> None:
    com = b"\xff\xfe\x00\x07hello"
    data = insert_before(VECTOR, SOS_AT, com)
    # Fill bytes (0xFF) are allowed before any marker, including EOI after the scan data.
    data = data[:-2] + b"\xff\xff\xff\xd9"
    info = scan_jpeg(data)
    assert info.end == len(data)
    assert info.scan_end == len(data) - 2
    assert info.rfc2435_type == 1


def test_restart_markers_do_not_end_scan() -> None:
    data = jpeg_bytes(sample_image(128, 32), restart_marker_blocks=1)
    info = scan_jpeg(data)
    scan = data[info.scan_start : info.scan_end]
    assert b"\xff\xd0" in scan and b"\xff\xd7" in scan
    assert info.restart_interval == 1
    assert info.end == len(data)
    assert info.rfc2435_type == 65


def test_restart_type_64_for_422() -> None:
    info = scan_jpeg(jpeg_bytes(sample_image(), subsampling=1, restart_marker_rows=1))
    assert info.rfc2435_type == 64
    assert info.components[0] == Component(1, 2, 1, 0)


def test_type_0_for_422() -> None:
    info = scan_jpeg(jpeg_bytes(sample_image(), subsampling=1))
    assert (info.rfc2435_type, info.incompatibility) == (0, None)


def test_no_dht_counts_as_standard() -> None:
    # Motion-JPEG cameras ("AVI1") omit DHT and rely on the Annex K tables.
    dht = VECTOR[DHT_AT:SOS_AT]
    data = VECTOR.replace(dht, b"")
    info = scan_jpeg(data)
    assert info.huffman_tables == {}
    assert info.rfc2435_type == 1


def test_progressive_walks_all_scans() -> None:
    data = jpeg_bytes(sample_image(), progressive=True)
    info = scan_jpeg(data)
    assert info.sof == 0xC2
    assert info.end == len(data)
    assert info.scan_end == len(data) - 2
    assert data.count(b"\xff\xda") > 1
    assert find_frame_end(data + VECTOR, 0) == len(data)


# ---------------------------------------------------------------------------------------------
# Incompatibility reasons (RFC 2435 section 3.1.3)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: jpeg_bytes(sample_image(), progressive=True), "progressive JPEG"),
        (
            lambda: jpeg_bytes(sample_image(), optimize=True),
            "optimized (non-standard) Huffman tables",
        ),
        (lambda: jpeg_bytes(sample_image(), subsampling=0), "4:4:4 chroma sampling"),
        (lambda: jpeg_bytes(sample_image().convert("L")), "1 component (grayscale)"),
        (lambda: jpeg_bytes(sample_image().convert("CMYK")), "4 components (CMYK/YCCK)"),
    ],
    ids=["progressive", "optimized", "444", "grayscale", "cmyk"],
)
def test_incompatible_kinds(make, reason: str) -> None:  # type: ignore[no-untyped-def]
    info = scan_jpeg(make())
    assert info.rfc2435_type is None
    assert info.incompatibility == reason


def test_chroma_tables_differ() -> None:
    data = bytearray(VECTOR)
    assert data[SOF_AT + 16 : SOF_AT + 19] == b"\x03\x11\x01"  # Cr: id 3, 1x1, table 1
    data[SOF_AT + 18] = 0  # Cr now uses table 0
    info = scan_jpeg(bytes(data))
    assert info.incompatibility == "chroma components use different quantization tables"


def test_sixteen_bit_tables() -> None:
    dqt16 = b"".join(
        b"\xff\xdb\x00\x83" + bytes([0x10 | tid]) + b"".join(struct.pack("!H", v) for v in table)
        for tid, table in ((0, ANNEX_K_LUMA_ZIGZAG), (1, ANNEX_K_CHROMA_ZIGZAG))
    )
    data = VECTOR[:20] + dqt16 + VECTOR[SOF_AT:]
    info = scan_jpeg(data)
    assert info.qtable_precision == {0: 1, 1: 1}
    assert len(info.qtables[0]) == 128
    assert info.qtables[0][:4] == b"\x00\x10\x00\x0b"
    assert info.incompatibility == "16-bit quantization tables"


def test_twelve_bit_and_extended_sequential() -> None:
    data = bytearray(VECTOR)
    data[SOF_AT + 1] = 0xC1
    assert scan_jpeg(bytes(data)).incompatibility == "extended sequential JPEG (SOF1)"
    data[SOF_AT + 4] = 12
    info = scan_jpeg(bytes(data))
    assert (info.sof, info.precision) == (0xC1, 12)
    assert info.incompatibility == "12-bit samples"


def test_huffman_selection_must_be_standard() -> None:
    data = bytearray(VECTOR)
    # SOS: FF DA 00 0C 03 | 01 00 | 02 11 | 03 11 | 00 3F 00 -> Cb uses the luma tables.
    assert data[SOS_AT + 7 : SOS_AT + 9] == b"\x02\x11"
    data[SOS_AT + 8] = 0x00
    info = scan_jpeg(bytes(data))
    assert info.incompatibility == "scan does not use the standard Huffman table selection"


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no JPEG data at offset 0 (input is 0 bytes)"),
        (b"\x89PNG\r\n", "no SOI marker at offset 0"),
        (b"\xff\xd8", "truncated JPEG: no EOI marker (data ends at offset 2)"),
        (b"\xff\xd8\x00", "expected a marker at offset 2, found 0x00"),
        (b"\xff\xd8\xff", "truncated JPEG: marker cut off at offset 2"),
        (b"\xff\xd8\xff\xe0\x00", "truncated JPEG: segment FFE0 at offset 2 cut off"),
        (
            b"\xff\xd8\xff\xe0\x00\x10JFIF",
            "truncated JPEG: segment FFE0 at offset 2 (length 16) runs past the end of the "
            "data (10 bytes)",
        ),
        (b"\xff\xd8\xff\xd9", "EOI at offset 2 before any SOS (no scan data)"),
        (b"\xff\xd8\xff\xe0\x00\x01", "segment FFE0 at offset 2: bad length 1"),
        (b"\xff\xd8\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00", "SOS at offset 2 before any SOF"),
    ],
)
def test_error_messages(data: bytes, message: str) -> None:
    with pytest.raises(JpegError) as excinfo:
        scan_jpeg(data)
    assert str(excinfo.value) == message


def test_truncated_scan_message() -> None:
    with pytest.raises(JpegError, match=r"scan data starting at offset 623 has no EOI marker"):
        scan_jpeg(VECTOR[:-2])
    with pytest.raises(JpegError, match=r"no EOI"):
        find_frame_end(VECTOR[:-2], 0)


def test_every_prefix_raises_jpeg_error() -> None:
    for cut in range(len(VECTOR) - 1):
        with pytest.raises(JpegError):
            scan_jpeg(VECTOR[:cut])


def test_next_soi_inside_truncated_frame() -> None:
    data = VECTOR[:640] + VECTOR
    with pytest.raises(JpegError, match="unexpected SOI marker at offset 640") as excinfo:
        find_frame_end(data, 0)
    assert excinfo.value.offset == 640


def test_dnl_height_zero_rejected() -> None:
    data = bytearray(VECTOR)
    data[SOF_AT + 5 : SOF_AT + 7] = b"\x00\x00"
    with pytest.raises(JpegError, match=r"height 0 \(DNL\) is not supported"):
        scan_jpeg(bytes(data))


def test_undefined_quantization_table() -> None:
    data = VECTOR[:20] + VECTOR[89:]  # drop the luma DQT
    with pytest.raises(JpegError, match="component 1 uses undefined quantization table 0"):
        scan_jpeg(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, len(VECTOR) - 1), st.integers(0, 255)), min_size=1, max_size=6
    ),
    st.integers(0, len(VECTOR)),
)
def test_random_mutations_raise_only_jpeg_error(
    edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(VECTOR)
    for pos, value in edits:
        data[pos] = value
    for candidate in (bytes(data), bytes(data[:cut])):
        try:
            info = scan_jpeg(candidate)
        except JpegError:
            pass
        else:
            assert 0 < info.scan_start <= info.scan_end < info.end <= len(candidate)
        try:
            find_frame_end(candidate, 0)
        except JpegError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_raises_only_jpeg_error(blob: bytes) -> None:
    for candidate in (blob, b"\xff\xd8" + blob):
        try:
            scan_jpeg(candidate)
        except JpegError:
            pass
