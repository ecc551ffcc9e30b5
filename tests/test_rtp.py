"""RTP packet value type (RFC 3550 section 5.1) and the course's RtpPacket.py adapter."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mjpeg_rtsp.rtp import (
    JPEG_CLOCK_RATE,
    PT_JPEG,
    RTP_HEADER_SIZE,
    RTP_VERSION,
    RtpError,
    RtpPacket,
    pack_header,
    seq_add,
    seq_diff,
    seq_gt,
    ts_add,
    ts_diff,
)
from RtpPacket import HEADER_SIZE as COURSE_HEADER_SIZE
from RtpPacket import RtpPacket as CoursePacket

# V=2 P=1 X=1 CC=2 | M=1 PT=26 | seq 0xABCD | ts 0x01020304 | SSRC 0xDEADBEEF
# CSRC 0x11111111, 0x22222222 | ext profile 0xBEDE, 1 word: 01 02 03 04
# payload ff d8 4a 50 | padding 00 00 00 04 (4 octets including the count)
FULL = bytes.fromhex(
    "b29aabcd 01020304 deadbeef 11111111 22222222 bede0001 01020304 ffd84a50 00000004"
)
# The course server's packet: V=2, no flags, PT=26, seq 7, ts 1000, SSRC 0.
MINIMAL = bytes.fromhex("801a0007 000003e8 00000000") + b"data"


def test_constants() -> None:
    assert (RTP_VERSION, RTP_HEADER_SIZE, PT_JPEG, JPEG_CLOCK_RATE) == (2, 12, 26, 90000)


def test_full_vector_fields() -> None:
    packet = RtpPacket.parse(FULL)
    assert packet.payload_type == 26
    assert packet.marker is True
    assert packet.sequence_number == 0xABCD
    assert packet.timestamp == 0x01020304
    assert packet.ssrc == 0xDEADBEEF
    assert packet.csrc == (0x11111111, 0x22222222)
    assert packet.extension_profile == 0xBEDE
    assert packet.extension == b"\x01\x02\x03\x04"
    assert packet.payload == b"\xff\xd8JP"
    assert packet.padding == 4
    assert packet.header_size == 28
    assert bytes(packet) == FULL


def test_full_vector_built() -> None:
    packet = RtpPacket(
        payload_type=26,
        sequence_number=0xABCD,
        timestamp=0x01020304,
        ssrc=0xDEADBEEF,
        payload=b"\xff\xd8JP",
        marker=True,
        csrc=(0x11111111, 0x22222222),
        extension_profile=0xBEDE,
        extension=b"\x01\x02\x03\x04",
        padding=4,
    )
    assert bytes(packet) == FULL
    assert RtpPacket.parse(memoryview(FULL)) == packet


def test_minimal_vector() -> None:
    packet = RtpPacket.parse(MINIMAL)
    assert packet == RtpPacket(26, 7, 1000, 0, b"data")
    assert packet.marker is False
    assert packet.csrc == ()
    assert packet.extension_profile is None
    assert packet.padding == 0
    assert bytes(packet) == MINIMAL


def test_empty_extension_and_single_padding_octet() -> None:
    data = bytes.fromhex("b0600001 00000002 00000003 10000000 01")
    packet = RtpPacket.parse(data)
    assert packet.extension_profile == 0x1000
    assert packet.extension == b""
    assert packet.payload == b""
    assert packet.padding == 1
    assert bytes(packet) == data


def test_padding_octets_are_ignored_when_parsing() -> None:
    data = bytes.fromhex("a01a0001 00000002 00000003 aaffff03")
    packet = RtpPacket.parse(data)
    assert packet.payload == b"\xaa"
    assert packet.padding == 3
    assert bytes(packet) == bytes.fromhex("a01a0001 00000002 00000003 aa000003")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "RTP packet too short: 0 bytes"),
        (b"\x80" * 5, "RTP packet too short: 5 bytes"),
        (bytes.fromhex("401a0001 00000000 00000000"), "RTP version 1, expected 2"),
        (bytes.fromhex("c01a0001 00000000 00000000"), "RTP version 3, expected 2"),
        (
            bytes.fromhex("831a0001 00000000 00000000") + bytes(8),
            "CSRC count 3 needs 24 bytes, have 20",
        ),
        (bytes.fromhex("901a0001 00000000 00000000"), "header extension needs 16 bytes, have 12"),
        (
            bytes.fromhex("901a0001 00000000 00000000 00000002 00000000"),
            "header extension of 2 words needs 24 bytes, have 20",
        ),
        (bytes.fromhex("a01a0001 00000000 00000000"), "padding bit set but no padding count byte"),
        (bytes.fromhex("a01a0001 00000000 00000000 00000000"), "padding length 0 is invalid"),
        (bytes.fromhex("a01a0001 00000000 00000000 00000009"), "padding length 9 exceeds payload"),
    ],
)
def test_parse_errors(data: bytes, message: str) -> None:
    with pytest.raises(RtpError) as info:
        RtpPacket.parse(data)
    assert str(info.value) == message


def test_rtp_error_is_value_error() -> None:
    assert issubclass(RtpError, ValueError)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"payload_type": 128}, "payload type 128 out of range 0..127"),
        ({"payload_type": -1}, "payload type -1 out of range 0..127"),
        ({"sequence_number": 65536}, "sequence number 65536 out of range 0..65535"),
        ({"timestamp": 1 << 32}, "timestamp 4294967296 out of range 0..4294967295"),
        ({"ssrc": -1}, "SSRC -1 out of range 0..4294967295"),
        ({"csrc": tuple(range(16))}, "16 CSRCs, at most 15 allowed"),
        ({"csrc": (1 << 32,)}, "CSRC 4294967296 out of range 0..4294967295"),
        ({"extension": b"abcd"}, "extension data given without extension_profile"),
        ({"extension_profile": 1 << 16}, "extension profile 65536 out of range 0..65535"),
        (
            {"extension_profile": 1, "extension": b"abc"},
            "extension length 3 is not a multiple of 4 bytes",
        ),
        ({"padding": 256}, "padding 256 out of range 0..255"),
    ],
)
def test_build_validation(fields: dict, message: str) -> None:
    arguments = {"payload_type": 26, "sequence_number": 1, "timestamp": 2, "ssrc": 3}
    arguments.update(fields)
    with pytest.raises(ValueError) as info:
        RtpPacket(**arguments)
    assert str(info.value) == message


def test_build_rejects_non_int() -> None:
    with pytest.raises(TypeError):
        RtpPacket(26, 1.5, 0, 0)  # type: ignore[arg-type]


def test_bytes_like_payload_is_stored_as_bytes() -> None:
    packet = RtpPacket(26, 1, 2, 3, bytearray(b"ab"))
    assert type(packet.payload) is bytes
    assert packet.payload == b"ab"


def test_pack_header_matches_packet() -> None:
    header = pack_header(26, 0xABCD, 0x01020304, 0xDEADBEEF, True)
    assert header == bytes.fromhex("809aabcd 01020304 deadbeef")
    assert header == bytes(RtpPacket(26, 0xABCD, 0x01020304, 0xDEADBEEF, marker=True))
    assert pack_header(26, 7, 1000, 0, False) + b"data" == MINIMAL


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((128, 0, 0, 0, False), "payload type 128 out of range 0..127"),
        ((26, 65536, 0, 0, False), "sequence number 65536 out of range 0..65535"),
        ((26, 0, -1, 0, False), "timestamp -1 out of range 0..4294967295"),
        ((26, 0, 0, 1 << 32, False), "SSRC 4294967296 out of range 0..4294967295"),
    ],
)
def test_pack_header_validation(arguments: tuple, message: str) -> None:
    with pytest.raises(ValueError) as info:
        pack_header(*arguments)
    assert str(info.value) == message


@given(
    st.integers(0, 127),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.booleans(),
)
def test_pack_header_property(pt: int, seq: int, ts: int, ssrc: int, marker: bool) -> None:
    assert pack_header(pt, seq, ts, ssrc, marker) == bytes(
        RtpPacket(pt, seq, ts, ssrc, marker=marker)
    )


def test_seq_helpers_at_wrap() -> None:
    assert seq_add(65535, 1) == 0
    assert seq_add(65530, 10) == 4
    assert seq_add(0, -1) == 65535
    assert seq_gt(0, 65535)
    assert not seq_gt(65535, 0)
    assert seq_gt(5, 65530)
    assert not seq_gt(7, 7)
    assert seq_gt(32767, 0)
    assert not seq_gt(32768, 0)  # exactly half-way: undefined in RFC 1982, false both ways
    assert not seq_gt(0, 32768)
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_diff(4, 65530) == 10
    assert seq_diff(32767, 0) == 32767
    assert seq_diff(32768, 0) == -32768
    assert ts_add(0xFFFFFFFF, 1) == 0
    assert ts_add(0xFFFFFFF0, 3600) == 3584
    assert ts_diff(3584, 0xFFFFFFF0) == 3600
    assert ts_diff(0, 1) == -1


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_seq_helpers_agree(a: int, b: int) -> None:
    distance = seq_diff(a, b)
    assert -32768 <= distance <= 32767
    assert seq_add(b, distance) == a
    assert seq_gt(a, b) == (distance > 0)
    if distance not in (0, -32768):
        assert seq_gt(a, b) != seq_gt(b, a)


def _words(data: bytes) -> bytes:
    return data[: len(data) // 4 * 4]


packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence_number=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=64),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension_profile=st.none() | st.integers(0, 0xFFFF),
    extension=st.just(b""),
    padding=st.integers(0, 255),
)


@given(packets, st.binary(max_size=32).map(_words))
def test_round_trip(packet: RtpPacket, extension: bytes) -> None:
    if packet.extension_profile is not None:
        packet = RtpPacket(
            packet.payload_type,
            packet.sequence_number,
            packet.timestamp,
            packet.ssrc,
            packet.payload,
            packet.marker,
            packet.csrc,
            packet.extension_profile,
            extension,
            packet.padding,
        )
    wire = bytes(packet)
    assert len(wire) == packet.header_size + len(packet.payload) + packet.padding
    assert RtpPacket.parse(wire) == packet
    assert bytes(RtpPacket.parse(wire)) == wire


@given(
    st.binary(max_size=80)
    | st.tuples(st.integers(0x80, 0xBF), st.binary(max_size=80)).map(
        lambda t: bytes((t[0],)) + t[1]
    )
)
def test_random_bytes_only_raise_rtp_error(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpError:
        return
    assert RtpPacket.parse(bytes(packet)) == packet


# --- RtpPacket.py: the course's API -------------------------------------------------------


def test_textbook_server_and_client_calls() -> None:
    data = b"\xff\xd8 a frame \xff\xd9"
    frame_nbr = 42
    sender = CoursePacket()
    before = int(time.time())
    sender.encode(2, 0, 0, 0, frame_nbr, 0, 26, 0, data)  # the course server's exact call
    after = int(time.time())
    wire = sender.getPacket()

    receiver = CoursePacket()
    receiver.decode(wire)  # the course client's exact calls
    assert receiver.seqNum() == 42
    assert receiver.getPayload() == data
    assert receiver.version() == 2
    assert receiver.payloadType() == 26
    assert receiver.marker() == 0
    assert receiver.ssrc() == 0
    assert before <= receiver.timestamp() <= after
    assert bytes(receiver.header) == wire[:12]
    assert receiver.payload == data
    assert receiver.getPacket() == wire


def test_textbook_header_bytes() -> None:
    packet = CoursePacket()
    packet.encode(2, 0, 0, 0, 0x1234, 1, 26, 0xCAFEBABE, b"xyz", timestamp=0x01020304)
    assert packet.header == bytearray.fromhex("809a1234 01020304 cafebabe")
    assert isinstance(packet.header, bytearray)
    assert packet.getPacket() == bytes.fromhex("809a1234 01020304 cafebabe") + b"xyz"
    assert packet.marker() == 1
    assert packet.timestamp() == 0x01020304
    assert COURSE_HEADER_SIZE == 12


def test_textbook_is_built_on_the_core() -> None:
    packet = CoursePacket()
    packet.encode(2, 0, 0, 0, 9, 0, 26, 5, b"p", timestamp=77)
    assert packet.getPacket() == bytes(RtpPacket(26, 9, 77, 5, b"p"))


def test_textbook_wraps_frame_number_like_the_16_bit_field() -> None:
    packet = CoursePacket()
    packet.encode(2, 0, 0, 0, 65536 + 3, 0, 26, 0, b"", timestamp=(1 << 32) + 1)
    assert packet.seqNum() == 3
    assert packet.timestamp() == 1


def test_textbook_decode_of_full_packet() -> None:
    packet = CoursePacket()
    packet.decode(FULL)
    assert packet.seqNum() == 0xABCD
    assert packet.getPayload() == b"\xff\xd8JP"  # padding removed
    assert bytes(packet.header) == FULL[:28]  # fixed header, CSRCs and extension
    assert packet.getPacket() == FULL


@pytest.mark.parametrize(
    "arguments",
    [
        (1, 0, 0, 0, 1, 0, 26, 0, b""),
        (2, 1, 0, 0, 1, 0, 26, 0, b""),
        (2, 0, 1, 0, 1, 0, 26, 0, b""),
        (2, 0, 0, 1, 1, 0, 26, 0, b""),
        (2, 0, 0, 0, -1, 0, 26, 0, b""),
        (2, 0, 0, 0, 1, 0, 128, 0, b""),
    ],
)
def test_textbook_encode_rejects(arguments: tuple) -> None:
    with pytest.raises(ValueError):
        CoursePacket().encode(*arguments)


def test_textbook_decode_garbage() -> None:
    with pytest.raises(RtpError, match="RTP packet too short: 3 bytes"):
        CoursePacket().decode(b"abc")


def test_textbook_empty_packet() -> None:
    with pytest.raises(RuntimeError):
        CoursePacket().seqNum()
