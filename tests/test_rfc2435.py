"""Tests for mjpeg_rtsp.rfc2435: RFC 2435 payloader/depayloader (sections 3, 4.1, app. A, B)."""

from __future__ import annotations

import io
import random
import struct
from pathlib import Path

import pytest
from conftest import jpeg_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_jpeg import ANNEX_K_CHROMA_ZIGZAG, ANNEX_K_LUMA_ZIGZAG

from mjpeg_rtsp.jpeg import STANDARD_HUFFMAN_TABLES, JpegInfo, scan_jpeg
from mjpeg_rtsp.rfc2435 import (
    DEFAULT_MAX_PAYLOAD,
    JpegDepacketizer,
    Rfc2435Error,
    Rfc2435Header,
    build_jpeg_header,
    make_qtables,
    packetize,
    parse_header,
)

VECTOR = (Path(__file__).parent / "vectors" / "gradient_16x16_q50_420.jpg").read_bytes()
VECTOR_SCAN = bytes.fromhex("e7edec7a715a76f63d38ad3b7b1e9c569dbd8f4e2aaae2c32fc76da9")
SOS_AT = 609
DRI_1 = b"\xff\xdd\x00\x04\x00\x01"
MIN_PAYLOAD = 8 + 4 + 128 + 1  # main + quantization table headers + 1 byte of scan data
MIN_PAYLOAD_RESTART = MIN_PAYLOAD + 4


def detailed_image(width: int, height: int, seed: int = 1) -> Image.Image:
    rng = random.Random(seed)
    img = Image.new("RGB", (width, height))
    img.putdata(
        [
            ((x * 9 + rng.randrange(40)) % 256, (y * 7) % 256, (x ^ y) * 3 % 256)
            for y in range(height)
            for x in range(width)
        ]
    )
    return img


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def depacketize(payloads: list[bytes], timestamp: int = 9000, **dims: int) -> bytes | None:
    depay = JpegDepacketizer(**dims)
    result = None
    for k, payload in enumerate(payloads):
        result = depay.push(payload, timestamp, k == len(payloads) - 1)
        if k < len(payloads) - 1:
            assert result is None
    return result


def scan_of(data: bytes) -> bytes:
    info = scan_jpeg(data)
    return data[info.scan_start : info.scan_end]


def check_fragments(payloads: list[bytes], info: JpegInfo, max_payload: int) -> None:
    expected_offset = 0
    for payload in payloads:
        assert len(payload) <= max_payload
        header = parse_header(payload)
        assert header.fragment_offset == expected_offset
        expected_offset += len(payload) - header.data_offset
    assert expected_offset == info.scan_end - info.scan_start


# ---------------------------------------------------------------------------------------------
# Byte-exact packetizer vectors (section 3.1, 3.1.7, 3.1.8)


def test_vector_packets_exact_bytes() -> None:
    info = scan_jpeg(VECTOR)
    payloads = packetize(VECTOR, info, max_payload=160)
    assert [len(p) for p in payloads] == [160, 16]
    first, second = payloads
    # Main header: type-specific 0, offset 0, type 1, Q 255, width 16/8, height 16/8.
    assert first[:8] == bytes.fromhex("00 000000 01 ff 02 02")
    # Quantization table header: MBZ 0, precision 0, length 128, luma then chroma (zig-zag).
    assert first[8:12] == bytes.fromhex("00 00 0080")
    assert first[12:76] == ANNEX_K_LUMA_ZIGZAG
    assert first[76:140] == ANNEX_K_CHROMA_ZIGZAG
    assert first[140:] == VECTOR_SCAN[:20]
    assert second == bytes.fromhex("00 000014 01 ff 02 02") + VECTOR_SCAN[20:]
    assert b"".join(p[parse_header(p).data_offset :] for p in payloads) == VECTOR_SCAN


def test_vector_with_restart_interval_exact_bytes() -> None:
    data = VECTOR[:SOS_AT] + DRI_1 + VECTOR[SOS_AT:]
    info = scan_jpeg(data)
    assert (info.rfc2435_type, info.restart_interval) == (65, 1)
    payloads = packetize(data, info, max_payload=164)
    assert [len(p) for p in payloads] == [164, 20]
    first, second = payloads
    assert first[:8] == bytes.fromhex("00 000000 41 ff 02 02")
    # Restart marker header: interval 1, F=1, L=1, count 0x3FFF.
    assert first[8:12] == bytes.fromhex("0001 ffff")
    assert first[12:16] == bytes.fromhex("00 00 0080")
    assert first[16:144] == ANNEX_K_LUMA_ZIGZAG + ANNEX_K_CHROMA_ZIGZAG
    assert first[144:] == VECTOR_SCAN[:20]
    assert second == bytes.fromhex("00 000014 41 ff 02 02 0001 ffff") + VECTOR_SCAN[20:]


def test_single_packet_by_default() -> None:
    payloads = packetize(VECTOR, scan_jpeg(VECTOR))
    assert len(payloads) == 1
    assert len(payloads[0]) == 140 + 28 <= DEFAULT_MAX_PAYLOAD


def test_large_dimensions_use_zero_fields() -> None:
    data = jpeg_bytes(Image.new("RGB", (2048, 40), (10, 20, 30)))
    info = scan_jpeg(data)
    payloads = packetize(data, info)
    assert payloads[0][4:8] == bytes([1, 255, 0, 5])
    with pytest.raises(Rfc2435Error, match="width is 0 in the header and no a=x-dimensions"):
        depacketize(payloads)
    out = depacketize(payloads, width=2048)
    assert out is not None
    assert decode(out).size == (2048, 40)
    assert decode(out).tobytes() == decode(data).tobytes()


def test_packetize_rejects() -> None:
    info = scan_jpeg(VECTOR)
    with pytest.raises(ValueError, match="max_payload 140 too small"):
        packetize(VECTOR, info, max_payload=140)
    with pytest.raises(ValueError, match="max_payload 20 too small"):
        packetize(VECTOR, info, max_payload=20)
    smallest = packetize(VECTOR, info, max_payload=MIN_PAYLOAD)
    assert [len(p) for p in smallest] == [MIN_PAYLOAD, 8 + 27]  # 1 byte, then the other 27
    progressive = jpeg_bytes(Image.new("RGB", (16, 16)), progressive=True)
    with pytest.raises(ValueError, match="cannot be sent as RFC 2435: progressive JPEG"):
        packetize(progressive, scan_jpeg(progressive))


# ---------------------------------------------------------------------------------------------
# parse_header vectors


def test_parse_type0_q_below_128() -> None:
    h = parse_header(bytes.fromhex("00 123456 00 32 28 1e") + b"scan")
    assert h == Rfc2435Header(
        type_specific=0, fragment_offset=0x123456, type=0, q=50, width=40, height=30,
        restart_interval=None, restart_first=None, restart_last=None, restart_count=None,
        qt_mbz=None, qt_precision=None, qt_length=None, qt_data=None, data_offset=8,
    )
    assert (h.pixel_width, h.pixel_height) == (320, 240)


def test_parse_type1_q255_first_packet() -> None:
    tables = bytes(range(128))
    h = parse_header(bytes.fromhex("07 000000 01 ff 50 3c 00 00 0080") + tables + b"xyz")
    assert (h.type_specific, h.fragment_offset, h.type, h.q) == (7, 0, 1, 255)
    assert (h.pixel_width, h.pixel_height) == (640, 480)
    assert (h.qt_mbz, h.qt_precision, h.qt_length, h.qt_data) == (0, 0, 128, tables)
    assert h.restart_interval is None
    assert h.data_offset == 140


def test_parse_q255_later_packet_has_no_table_header() -> None:
    h = parse_header(bytes.fromhex("00 000400 01 ff 50 3c") + b"\x00\x00\x00\x80")
    assert h.qt_length is None and h.qt_data is None
    assert h.data_offset == 8


def test_parse_type64_restart_header() -> None:
    h = parse_header(bytes.fromhex("00 000010 40 4b 14 0f 0008 8005") + b"d")
    assert (h.type, h.q, h.width, h.height) == (64, 75, 20, 15)
    assert (h.restart_interval, h.restart_first, h.restart_last, h.restart_count) == (
        8, True, False, 5,
    )
    assert h.data_offset == 12


def test_parse_type65_restart_and_tables() -> None:
    tables = bytes(128)
    h = parse_header(bytes.fromhex("00 000000 41 80 00 00 0010 ffff 00 00 0080") + tables)
    assert (h.type, h.q, h.width, h.height) == (65, 128, 0, 0)
    assert (h.restart_interval, h.restart_first, h.restart_last, h.restart_count) == (
        16, True, True, 0x3FFF,
    )
    assert h.qt_length == 128
    assert h.data_offset == 144


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("", "payload too short for the JPEG main header: 0 < 8 bytes"),
        ("00 0000 00 01", "payload too short for the JPEG main header: 5 < 8 bytes"),
        ("00 000000 40 32 10 10 0001",
         "payload too short for the restart marker header: 10 < 12 bytes"),
        ("00 000000 01 ff 10 10 0000",
         "payload too short for the quantization table header: 10 < 12 bytes"),
        ("00 000000 41 ff 10 10 0001 ffff 00 00",
         "payload too short for the quantization table header: 14 < 16 bytes"),
        ("00 000000 01 ff 10 10 00 00 0080" + "00" * 100,
         "quantization table data truncated: length 128 but only 100 bytes follow the header"),
        ("00 000000 c8 32 10 10", "unsupported dynamically defined JPEG type 200"),
        ("00 000000 01 00 10 10", "reserved Q value 0"),
    ],
)
def test_parse_errors(payload: str, message: str) -> None:
    with pytest.raises(Rfc2435Error) as excinfo:
        parse_header(bytes.fromhex(payload))
    assert str(excinfo.value) == message


def test_depacketizer_errors() -> None:
    depay = JpegDepacketizer()
    with pytest.raises(Rfc2435Error, match="unsupported JPEG type 5"):
        depay.push(bytes.fromhex("00 000000 05 32 02 02") + b"x", 1, True)
    with pytest.raises(Rfc2435Error, match=r"length 32 too short for a table"):
        depay.push(bytes.fromhex("00 000000 01 ff 02 02 00 00 0020") + bytes(32), 2, True)
    with pytest.raises(Rfc2435Error, match=r"Q=255 requires in-band quantization tables"):
        depay.push(bytes.fromhex("00 000000 01 ff 02 02 00 00 0000") + b"x", 3, True)
    assert depay.frames_dropped == 3


# ---------------------------------------------------------------------------------------------
# Appendix A tables and Q < 128


def test_make_qtables_q50_is_annex_k() -> None:
    assert make_qtables(50) == (ANNEX_K_LUMA_ZIGZAG, ANNEX_K_CHROMA_ZIGZAG)


def test_make_qtables_known_values() -> None:
    luma, chroma = make_qtables(75)  # scale 50: (16 * 50 + 50) // 100 = 8
    assert (luma[0], luma[1], luma[63], chroma[0], chroma[63]) == (8, 6, 50, 9, 50)
    assert set(make_qtables(1)[0]) == {255}  # scale 5000, limited to 255
    assert set(make_qtables(99)[0]) <= {1, 2}
    with pytest.raises(ValueError):
        make_qtables(0)
    with pytest.raises(ValueError):
        make_qtables(100)


@pytest.mark.parametrize("quality", [1, 10, 25, 49, 50, 51, 75, 90, 99])
def test_make_qtables_match_libjpeg_quality(quality: int) -> None:
    # The appendix A scaling is the IJG one, so Pillow's quality q writes exactly these tables.
    info = scan_jpeg(jpeg_bytes(Image.new("RGB", (8, 8)), quality=quality))
    assert make_qtables(quality) == (info.qtables[0], info.qtables[1])


def strip_tables(payloads: list[bytes], q: int) -> list[bytes]:
    """Turn Q=255 payloads into Q=q payloads without a quantization table header."""
    out = []
    for payload in payloads:
        h = parse_header(payload)
        main = payload[:5] + bytes([q]) + payload[6:8]
        restart = payload[8:12] if h.restart_interval is not None else b""
        out.append(main + restart + payload[h.data_offset :])
    return out


@pytest.mark.parametrize("subsampling", [1, 2])
def test_q50_stream_decodes_like_source(subsampling: int) -> None:
    source = jpeg_bytes(detailed_image(48, 32), quality=50, subsampling=subsampling)
    payloads = strip_tables(packetize(source, scan_jpeg(source), 300), q=50)
    assert parse_header(payloads[0]).data_offset == 8
    out = depacketize(payloads)
    assert out is not None
    assert scan_jpeg(out).qtables == {0: ANNEX_K_LUMA_ZIGZAG, 1: ANNEX_K_CHROMA_ZIGZAG}
    assert decode(out).tobytes() == decode(source).tobytes()


def test_static_q_tables_are_cached() -> None:
    source = jpeg_bytes(detailed_image(32, 32), quality=80)
    info = scan_jpeg(source)
    with_tables = [p[:5] + b"\xc8" + p[6:] for p in packetize(source, info, 60000)]
    assert len(with_tables) == 1
    first = with_tables[0]
    without = first[:8] + b"\x00\x00\x00\x00" + first[140:]  # length 0: use cached tables
    depay = JpegDepacketizer()
    assert depay.push(without, 1, True) is None  # nothing cached yet: dropped
    assert depay.frames_dropped == 1
    a = depay.push(first, 2, True)
    b = depay.push(without, 3, True)
    assert a is not None and a == b
    assert decode(b).tobytes() == decode(source).tobytes()


# ---------------------------------------------------------------------------------------------
# Round trips (types 0, 1, 64, 65)

ROUND_TRIP_SOURCES = {
    0: {"subsampling": 1},
    1: {"subsampling": 2},
    64: {"subsampling": 1, "restart_marker_blocks": 2},
    65: {"subsampling": 2, "restart_marker_rows": 1},
}


@pytest.mark.parametrize("rtype", sorted(ROUND_TRIP_SOURCES))
def test_round_trip_types(rtype: int) -> None:
    source = jpeg_bytes(detailed_image(64, 48), quality=85, **ROUND_TRIP_SOURCES[rtype])
    info = scan_jpeg(source)
    assert info.rfc2435_type == rtype
    reference = decode(source).tobytes()
    minimum = MIN_PAYLOAD_RESTART if rtype >= 64 else MIN_PAYLOAD
    for max_payload in (minimum, minimum + 1, minimum + 7, 200, 500, 1400, 60000):
        payloads = packetize(source, info, max_payload)
        check_fragments(payloads, info, max_payload)
        out = depacketize(payloads)
        assert out is not None
        assert out.startswith(build_jpeg_header(
            rtype, 64, 48, info.qtables[0], info.qtables[1], info.restart_interval
        ))
        assert out.endswith(b"\xff\xd9") and not out.endswith(b"\xff\xd9\xff\xd9")
        assert scan_of(out) == scan_of(source)
        out_info = scan_jpeg(out)
        assert out_info.rfc2435_type == rtype
        assert out_info.components == info.components
        assert decode(out).tobytes() == reference
    with pytest.raises(ValueError, match="too small"):
        packetize(source, info, 20)


def test_sizes_not_multiple_of_8() -> None:
    source = jpeg_bytes(detailed_image(50, 30), quality=70)
    payloads = packetize(source, scan_jpeg(source), 400)
    assert payloads[0][6:8] == bytes([7, 4])  # rounded up
    padded = depacketize(payloads)
    assert padded is not None and decode(padded).size == (56, 32)
    exact = depacketize(payloads, width=50, height=30)  # a=x-dimensions restores the size
    assert exact is not None
    assert decode(exact).tobytes() == decode(source).tobytes()
    assert scan_of(exact) == scan_of(source)


def test_build_jpeg_header_layout() -> None:
    luma, chroma = make_qtables(50)
    header = build_jpeg_header(1, 16, 16, luma, chroma)
    assert header.startswith(b"\xff\xd8\xff\xdb\x00\x43\x00" + luma + b"\xff\xdb\x00\x43\x01")
    sof = bytes.fromhex("ffc0 0011 08 0010 0010 03 012200 021101 031101")
    assert sof in header
    for (tc, th), table in STANDARD_HUFFMAN_TABLES.items():
        assert b"\xff\xc4" + struct.pack("!H", len(table) + 3) + bytes([tc << 4 | th]) + table in (
            header
        )
    assert b"\xff\xdd" not in header
    assert header.endswith(bytes.fromhex("ffda 000c 03 0100 0211 0311 00 3f 00"))
    with_dri = build_jpeg_header(64, 320, 240, luma, chroma, restart_interval=10)
    assert bytes.fromhex("ffc0 0011 08 00f0 0140 03 012100") in with_dri
    assert bytes.fromhex("ffdd 0004 000a ffda") in with_dri
    # The rebuilt header in front of the vector's scan data is a valid, decodable JPEG.
    rebuilt = header + VECTOR_SCAN + b"\xff\xd9"
    assert decode(rebuilt).tobytes() == decode(VECTOR).tobytes()
    with pytest.raises(ValueError):
        build_jpeg_header(2, 16, 16, luma, chroma)
    with pytest.raises(ValueError):
        build_jpeg_header(1, 0, 16, luma, chroma)


def test_scan_already_ending_with_eoi_is_not_doubled() -> None:
    payloads = packetize(VECTOR, scan_jpeg(VECTOR), 150)
    payloads[-1] += b"\xff\xd9"  # a sender that kept the EOI in the payload
    out = depacketize(payloads)
    assert out is not None and out.endswith(VECTOR_SCAN + b"\xff\xd9")


# ---------------------------------------------------------------------------------------------
# Loss, reordering and stream behaviour


def frame_payloads(seed: int = 3) -> tuple[bytes, list[bytes]]:
    source = jpeg_bytes(detailed_image(48, 48, seed), quality=90)
    return source, packetize(source, scan_jpeg(source), 300)


def test_consecutive_frames_and_stragglers() -> None:
    source, payloads = frame_payloads()
    depay = JpegDepacketizer()
    outputs = []
    for ts in (0, 3000, 6000):
        for k, payload in enumerate(payloads):
            outputs.append(depay.push(payload, ts, k == len(payloads) - 1))
    frames = [o for o in outputs if o is not None]
    assert len(frames) == 3 and len(set(frames)) == 1
    # A duplicate of the last packet of a finished frame is ignored, not counted.
    assert depay.push(payloads[-1], 6000, True) is None
    assert depay.frames_dropped == 0


def test_missing_marker_packet_dropped_on_next_timestamp() -> None:
    _, payloads = frame_payloads()
    depay = JpegDepacketizer()
    for payload in payloads[:-1]:
        assert depay.push(payload, 100, False) is None
    assert depay.frames_dropped == 0
    results = [depay.push(p, 200, k == len(payloads) - 1) for k, p in enumerate(payloads)]
    assert results[-1] is not None
    assert depay.frames_dropped == 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    width=st.integers(1, 120),
    height=st.integers(1, 90),
    quality=st.integers(1, 100),
    subsampling=st.sampled_from([1, 2]),
    restart=st.integers(0, 3),
    max_payload=st.integers(MIN_PAYLOAD_RESTART, 2000),
    seed=st.integers(0, 1000),
)
def test_property_round_trip(
    width: int, height: int, quality: int, subsampling: int, restart: int,
    max_payload: int, seed: int,
) -> None:
    source = jpeg_bytes(
        detailed_image(width, height, seed), quality=quality, subsampling=subsampling,
        restart_marker_blocks=restart,
    )
    info = scan_jpeg(source)
    assert info.rfc2435_type == (0 if subsampling == 1 else 1) + (64 if restart else 0)
    payloads = packetize(source, info, max_payload)
    check_fragments(payloads, info, max_payload)
    out = depacketize(payloads, width=width, height=height)
    assert out is not None
    assert scan_of(out) == scan_of(source)
    assert decode(out).tobytes() == decode(source).tobytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), seed=st.integers(0, 50), max_payload=st.integers(MIN_PAYLOAD, 400))
def test_property_loss_or_reorder_never_yields_frame(
    data: st.DataObject, seed: int, max_payload: int
) -> None:
    source = jpeg_bytes(detailed_image(40, 40, seed), quality=95)
    payloads = packetize(source, scan_jpeg(source), max_payload)
    n = len(payloads)
    if n < 2:
        return
    indices = list(range(n))
    if data.draw(st.booleans(), label="drop"):
        del indices[data.draw(st.integers(0, n - 1), label="dropped")]
    else:
        shuffled = data.draw(st.permutations(indices), label="order")
        if shuffled == indices:
            shuffled = indices[1:] + indices[:1]
        indices = shuffled
    depay = JpegDepacketizer()
    for k in indices:
        assert depay.push(payloads[k], 1000, k == n - 1) is None
    # The next, complete frame comes out whole; the broken one is counted exactly once.
    emitted = [depay.push(p, 4000, k == n - 1) for k, p in enumerate(payloads)]
    assert emitted[:-1] == [None] * (n - 1)
    assert emitted[-1] is not None and scan_of(emitted[-1]) == scan_of(source)
    assert depay.frames_dropped == 1


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.binary(max_size=200), st.integers(0, 3), st.booleans()), max_size=8
    ),
    st.binary(max_size=12),
)
def test_property_garbage_only_raises_rfc2435_error(
    packets: list[tuple[bytes, int, bool]], prefix: bytes
) -> None:
    depay = JpegDepacketizer(width=64, height=48)
    for body, timestamp, marker in packets:
        for payload in (body, prefix + body, bytes.fromhex("00 000000 01 ff 02 02") + body):
            try:
                out = depay.push(payload, timestamp, marker)
            except Rfc2435Error:
                continue
            if out is not None:
                assert out.startswith(b"\xff\xd8") and out.endswith(b"\xff\xd9")
        try:
            parse_header(prefix + body)
        except Rfc2435Error:
            pass
