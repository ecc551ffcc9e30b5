"""RTCP packets (RFC 3550 section 6) and compound packets: vectors, errors, properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mjpeg_rtsp.rtcp import (
    CUMULATIVE_LOST_MAX,
    CUMULATIVE_LOST_MIN,
    PT_APP,
    SDES_CNAME,
    SDES_TOOL,
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpError,
    SenderReport,
    SourceDescription,
    UnknownRtcp,
    build_compound,
    dlsr_from_seconds,
    ntp_from_unix,
    ntp_middle32,
    parse_compound,
    round_trip_time,
    unix_from_ntp,
)

# SR: V=2 RC=0 PT=200 length 6 | SSRC 0x11223344 | NTP 0xdd12ad80.80000000
# (Unix 1500000000.5) | RTP ts 90000 | 10 packets | 1000 octets
SR_BYTES = bytes.fromhex("80c80006 11223344 dd12ad80 80000000 00015f90 0000000a 000003e8")
# SDES: V=2 SC=1 PT=202 length 4 | SSRC | CNAME(1) len 9 "user@host" | END | no more padding
SDES_BYTES = bytes.fromhex("81ca0004 11223344 01097573 65724068 6f737400")
# RR: V=2 RC=1 PT=201 length 7 | SSRC 0x01020304 | block: SSRC 0x11223344, fraction 64/256,
# cumulative lost -3, extended highest seq 0x0001ffff, jitter 32, LSR 0xad808000,
# DLSR 0x00018000 (1.5 s)
RR_BYTES = bytes.fromhex("81c90007 01020304 11223344 40fffffd 0001ffff 00000020 ad808000 00018000")
# BYE: V=2 SC=1 PT=203 length 3 | SSRC | reason len 4 "done" + 3 zero octets
BYE_BYTES = bytes.fromhex("81cb0003 11223344 04646f6e 65000000")

SR = SenderReport(
    ssrc=0x11223344,
    ntp_timestamp=0xDD12AD80_80000000,
    rtp_timestamp=90000,
    packet_count=10,
    octet_count=1000,
)
SDES = SourceDescription.cname(0x11223344, "user@host")
BLOCK = ReportBlock(
    ssrc=0x11223344,
    fraction_lost=64,
    cumulative_lost=-3,
    highest_seq=0x0001FFFF,
    jitter=32,
    lsr=0xAD808000,
    dlsr=0x00018000,
)
RR = ReceiverReport(0x01020304, (BLOCK,))
BYE = Bye((0x11223344,), b"done")


def test_sr_sdes_compound_vector() -> None:
    data = SR_BYTES + SDES_BYTES
    assert build_compound(SR, SDES) == data
    packets = parse_compound(data, strict=True)
    assert packets == [SR, SDES]
    sr, sdes = packets
    assert isinstance(sr, SenderReport)
    assert sr.ssrc == 0x11223344
    assert sr.ntp_timestamp == ntp_from_unix(1_500_000_000.5)
    assert sr.rtp_timestamp == 90000
    assert sr.packet_count == 10
    assert sr.octet_count == 1000
    assert sr.reports == ()
    assert isinstance(sdes, SourceDescription)
    assert sdes.chunks == ((0x11223344, ((SDES_CNAME, b"user@host"),)),)
    assert sdes.cnames() == {0x11223344: "user@host"}


def test_rr_with_negative_cumulative_lost() -> None:
    assert bytes(RR) == RR_BYTES
    (rr,) = parse_compound(RR_BYTES)
    assert rr == RR
    (block,) = rr.reports
    assert block.fraction_lost == 64
    assert block.cumulative_lost == -3
    assert block.highest_seq == 0x0001FFFF
    assert block.jitter == 32
    assert block.lsr == 0xAD808000
    assert block.dlsr == dlsr_from_seconds(1.5)


def test_cumulative_lost_limits() -> None:
    for lost, wire in ((CUMULATIVE_LOST_MAX, "7fffff"), (CUMULATIVE_LOST_MIN, "800000")):
        block = ReportBlock(1, 0, lost, 0, 0, 0, 0)
        assert bytes(block)[5:8] == bytes.fromhex(wire)
        assert ReportBlock.parse(bytes(block)) == block


def test_sr_with_report_blocks() -> None:
    sr = SenderReport(1, 2, 3, 4, 5, (BLOCK, BLOCK))
    data = bytes(sr)
    assert data[:4] == bytes.fromhex("82c80012")
    assert len(data) == 4 + 24 + 2 * 24
    assert parse_compound(data) == [sr]


def test_bye_with_reason() -> None:
    assert bytes(BYE) == BYE_BYTES
    assert parse_compound(BYE_BYTES) == [BYE]


def test_bye_without_reason_and_reason_filling_a_word() -> None:
    plain = Bye((1, 2))
    assert bytes(plain) == bytes.fromhex("82cb0002 00000001 00000002")
    assert parse_compound(bytes(plain)) == [plain]
    three = Bye((1,), b"end")
    assert bytes(three) == bytes.fromhex("81cb0002 00000001 03656e64")
    assert parse_compound(bytes(three)) == [three]


def test_sdes_chunk_padding() -> None:
    empty = SourceDescription(((5, ()),))
    assert bytes(empty) == bytes.fromhex("81ca0002 00000005 00000000")
    # items of 2 + 2 bytes: 4 + 4 + END + 3 zeros
    two = SourceDescription(((5, ((SDES_CNAME, b"ab"), (SDES_TOOL, b""))),))
    assert bytes(two) == bytes.fromhex("81ca0003 00000005 01026162 06000000")
    multi = SourceDescription(((1, ((SDES_CNAME, b"a"),)), (2, ((SDES_CNAME, b"bc"),))))
    data = bytes(multi)
    assert data == bytes.fromhex("82ca0005 00000001 01016100 00000002 01026263 00000000")
    assert parse_compound(data) == [multi]
    assert multi.cnames() == {1: "a", 2: "bc"}


def test_unknown_packet_kept() -> None:
    app = bytes.fromhex("80cc0002 00000001 6e616d65")
    (packet,) = parse_compound(app)
    assert packet == UnknownRtcp(PT_APP, 0, bytes.fromhex("00000001 6e616d65"))
    assert bytes(packet) == app


def test_padding_is_removed() -> None:
    padded = bytes.fromhex("a0c90002 01020304 00000004")
    assert parse_compound(padded) == [ReceiverReport(0x01020304)]


def test_full_compound_round_trip() -> None:
    data = build_compound(RR, SDES, BYE)
    assert data == RR_BYTES + SDES_BYTES + BYE_BYTES
    assert parse_compound(data, strict=True) == [RR, SDES, BYE]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "RTCP packet is empty"),
        (bytes.fromhex("80c9"), "RTCP header at offset 0 truncated: 2 bytes left"),
        (bytes.fromhex("40c90000"), "RTCP version 1 at offset 0, expected 2"),
        (bytes.fromhex("80c90005 01020304"), "RTCP length 5 at offset 0 needs 24 bytes, have 8"),
        (SR_BYTES + bytes.fromhex("80c9"), "RTCP header at offset 28 truncated: 2 bytes left"),
        (SR_BYTES + bytes.fromhex("00c90000"), "RTCP version 0 at offset 28, expected 2"),
        (bytes.fromhex("80c80001 11223344"), "SR at offset 0 too short: 8 bytes, need 28"),
        (bytes.fromhex("80c90000"), "RR at offset 0 too short: no room for its SSRC"),
        (
            bytes.fromhex("81c90001 01020304"),
            "RR at offset 0 with 1 report blocks needs 32 bytes, have 8",
        ),
        (
            bytes.fromhex("82c80008") + SR_BYTES[4:] + bytes(8),
            "SR at offset 0 with 2 report blocks needs 76 bytes, have 36",
        ),
        (bytes.fromhex("81ca0000"), "SDES chunk 0 at offset 0 truncated: no room for its SSRC"),
        (
            bytes.fromhex("81ca0002 00000001 01020000"),
            "SDES chunk 0 at offset 0 has no end-of-list octet",
        ),
        (
            bytes.fromhex("81ca0002 00000001 01050000"),
            "SDES chunk 0 at offset 0: item of 5 bytes runs past the packet",
        ),
        (
            bytes.fromhex("81ca0002 00000001 00000001") + bytes.fromhex("00"),
            "RTCP header at offset 12 truncated: 1 bytes left",
        ),
        (
            bytes.fromhex("82cb0001 00000001"),
            "BYE at offset 0 with 2 sources needs 12 bytes, have 8",
        ),
        (
            bytes.fromhex("81cb0002 00000001 09616263"),
            "BYE at offset 0: reason of 9 bytes runs past the packet",
        ),
        (bytes.fromhex("a0c90001 00000000"), "RTCP padding length 0 at offset 0 is invalid"),
        (
            bytes.fromhex("a0c90001 00000009"),
            "RTCP padding length 9 at offset 0 exceeds the packet",
        ),
    ],
)
def test_parse_errors(data: bytes, message: str) -> None:
    with pytest.raises(RtcpError) as info:
        parse_compound(data)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("packets", "message"),
    [
        ((SDES,), "compound RTCP starts with SourceDescription, not an SR or RR"),
        ((BYE,), "compound RTCP starts with Bye, not an SR or RR"),
        ((RR,), "compound RTCP has no SDES CNAME"),
    ],
)
def test_strict_compound_rules(packets: tuple, message: str) -> None:
    data = build_compound(*packets)
    assert parse_compound(data) == list(packets)  # lenient by default
    with pytest.raises(RtcpError) as info:
        parse_compound(data, strict=True)
    assert str(info.value) == message


def test_strict_rejects_padding_before_the_last_packet() -> None:
    padded = bytes.fromhex("a0c90002 01020304 00000004")
    with pytest.raises(RtcpError, match="padding on RTCP packet at offset 0, which is not last"):
        parse_compound(padded + SDES_BYTES, strict=True)
    padded_last = bytes.fromhex("a1ca0005 11223344 01097573 65724068 6f737400 00000004")
    assert parse_compound(SR_BYTES + padded_last, strict=True) == [SR, SDES]


def test_rtcp_error_is_value_error() -> None:
    assert issubclass(RtcpError, ValueError)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ReportBlock(1, 256, 0, 0, 0, 0, 0), "fraction lost 256 out of range 0..255"),
        (
            lambda: ReportBlock(1, 0, 1 << 23, 0, 0, 0, 0),
            "cumulative lost 8388608 out of range -8388608..8388607",
        ),
        (
            lambda: SenderReport(1, 1 << 64, 0, 0, 0),
            "NTP timestamp 18446744073709551616 out of range 0..18446744073709551615",
        ),
        (
            lambda: ReceiverReport(1, (BLOCK,) * 32),
            "32 report blocks, at most 31 fit in one RTCP packet",
        ),
        (lambda: ReceiverReport(-1), "SSRC -1 out of range 0..4294967295"),
        (
            lambda: SourceDescription(((1, ((0, b"x"),)),)),
            "SDES item type 0 is the end marker, not an item",
        ),
        (
            lambda: SourceDescription(((1, ((SDES_CNAME, bytes(256)),)),)),
            "SDES item of 256 bytes, at most 255 allowed",
        ),
        (lambda: Bye((1,), bytes(256)), "BYE reason of 256 bytes, at most 255 allowed"),
        (lambda: Bye(tuple(range(32))), "32 BYE sources, at most 31 fit in one RTCP packet"),
        (lambda: UnknownRtcp(204, 0, b"abc"), "RTCP body of 3 bytes is not a multiple of 4"),
        (lambda: UnknownRtcp(204, 32), "count 32 out of range 0..31"),
        (lambda: build_compound(), "a compound RTCP packet needs at least one packet"),
    ],
)
def test_build_validation(build, message: str) -> None:
    with pytest.raises(ValueError) as info:
        build()
    assert str(info.value) == message


def test_ntp_conversions() -> None:
    assert ntp_from_unix(0) == 2_208_988_800 << 32
    assert ntp_from_unix(1_500_000_000.5) == 0xDD12AD80_80000000
    assert ntp_from_unix(1_500_000_000.25) & 0xFFFFFFFF == 0x40000000
    assert unix_from_ntp(0xDD12AD80_80000000) == 1_500_000_000.5
    assert ntp_middle32(0xDD12AD80_80000000) == 0xAD808000
    # the NTP era rolls over on 2036-02-07 06:28:16 UTC (RFC 3550 section 4)
    assert ntp_from_unix(2_085_978_496.0) == 0
    assert dlsr_from_seconds(1.5) == 0x00018000
    assert dlsr_from_seconds(-1) == 0


def test_round_trip_time_rfc_example() -> None:
    # RFC 3550 section 6.4.1, figure 2: A = 0xb710:8000, LSR = 0xb705:2000,
    # DLSR = 0x0005:4000 -> delay 0x0006:2000 = 6.125 s
    assert round_trip_time(0xB7108000, 0xB7052000, 0x00054000) == 6.125


@given(st.floats(0, 2_000_000_000, allow_nan=False))
def test_ntp_from_unix_property(seconds: float) -> None:
    ntp = ntp_from_unix(seconds)
    assert 0 <= ntp < 1 << 64
    assert abs(unix_from_ntp(ntp) - seconds) < 1e-6


u32 = st.integers(0, 0xFFFFFFFF)
blocks = st.builds(
    ReportBlock,
    ssrc=u32,
    fraction_lost=st.integers(0, 255),
    cumulative_lost=st.integers(CUMULATIVE_LOST_MIN, CUMULATIVE_LOST_MAX),
    highest_seq=u32,
    jitter=u32,
    lsr=u32,
    dlsr=u32,
)
block_lists = st.lists(blocks, max_size=3).map(tuple)
items = st.tuples(st.integers(1, 255), st.binary(max_size=20))
rtcp_packets = st.one_of(
    st.builds(
        SenderReport,
        ssrc=u32,
        ntp_timestamp=st.integers(0, (1 << 64) - 1),
        rtp_timestamp=u32,
        packet_count=u32,
        octet_count=u32,
        reports=block_lists,
    ),
    st.builds(ReceiverReport, ssrc=u32, reports=block_lists),
    st.builds(
        SourceDescription,
        chunks=st.lists(st.tuples(u32, st.lists(items, max_size=3).map(tuple)), max_size=3).map(
            tuple
        ),
    ),
    st.builds(Bye, sources=st.lists(u32, max_size=4).map(tuple), reason=st.binary(max_size=30)),
    st.builds(
        UnknownRtcp,
        packet_type=st.sampled_from([204, 205, 206, 207, 199]),
        count=st.integers(0, 31),
        body=st.binary(max_size=24).map(lambda b: b[: len(b) // 4 * 4]),
    ),
)


@given(st.lists(rtcp_packets, min_size=1, max_size=5))
def test_compound_round_trip(packets: list) -> None:
    data = build_compound(*packets)
    assert len(data) % 4 == 0
    assert parse_compound(data) == packets
    assert build_compound(*parse_compound(data)) == data


def _check_only_rtcp_error(data: bytes) -> None:
    try:
        packets = parse_compound(data)
    except RtcpError:
        return
    assert parse_compound(build_compound(*packets)) == packets


@given(st.binary(max_size=120))
def test_random_bytes_only_raise_rtcp_error(data: bytes) -> None:
    _check_only_rtcp_error(data)


@given(
    st.lists(rtcp_packets, min_size=1, max_size=3),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    st.integers(0, 10_000),
)
def test_mutated_compounds_only_raise_rtcp_error(packets: list, flips: list, cut: int) -> None:
    data = bytearray(build_compound(*packets))
    for position, value in flips:
        data[position % len(data)] = value
    _check_only_rtcp_error(bytes(data[: max(cut, 1)]))
    _check_only_rtcp_error(bytes(data))
