"""RTCP packets (RFC 3550 section 6): SR, RR, SDES, BYE and compound packets.

Theory of operation
-------------------
Each RTCP packet type is an immutable value with ``__bytes__``; :func:`parse_compound`
splits one UDP datagram into its packets (RFC 3550 section 6.1) and returns a list of those
values, keeping types it does not model (APP, RTPFB, PSFB, XR, ...) as :class:`UnknownRtcp`.
:func:`build_compound` concatenates packets; the caller puts an SR or RR first and an SDES
with a CNAME after it, as section 6.1 requires (``parse_compound(..., strict=True)`` checks
those rules on receipt). Malformed input raises :class:`RtcpError` (a ``ValueError``) with a
precise message; out-of-range fields when building raise ``ValueError``.

Times are passed in: :func:`ntp_from_unix` converts a Unix time the caller read from its own
clock into the 64-bit NTP format of section 4, :func:`ntp_middle32` gives the compact form
used for LSR, and :func:`round_trip_time` applies the section 6.4.1 formula. This module
imports no sockets, threads or clocks.

Common header (section 6.4.1), followed by the type-specific body::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |V=2|P|  count  |      PT       |    length (32-bit words - 1)  |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

SR (PT=200, count = RC): SSRC of sender, NTP timestamp (64), RTP timestamp, sender's packet
count, sender's octet count, then RC report blocks. RR (PT=201): SSRC of packet sender, then
RC report blocks. Report block (24 bytes)::

    +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
    |                 SSRC_n (SSRC of source being reported)        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    | fraction lost |       cumulative number of packets lost       |  (signed 24-bit)
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |           extended highest sequence number received           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                      interarrival jitter                      |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                         last SR (LSR)                         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                   delay since last SR (DLSR)                  |
    +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+

SDES (PT=202, count = SC, section 6.5): SC chunks, each an SSRC/CSRC then items
``type(8) length(8) text``, ended by one or more zero octets up to the next 32-bit boundary.
BYE (PT=203, count = SC, section 6.6): SC SSRC/CSRC identifiers, then optionally a reason
``length(8) text`` padded with zeros to a 32-bit boundary.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .rtp import check_uint

__all__ = [
    "Bye",
    "CUMULATIVE_LOST_MAX",
    "CUMULATIVE_LOST_MIN",
    "NTP_UNIX_OFFSET",
    "PT_APP",
    "PT_BYE",
    "PT_RR",
    "PT_SDES",
    "PT_SR",
    "RTCP_VERSION",
    "ReceiverReport",
    "ReportBlock",
    "RtcpError",
    "RtcpPacket",
    "SDES_CNAME",
    "SDES_EMAIL",
    "SDES_END",
    "SDES_LOC",
    "SDES_NAME",
    "SDES_NOTE",
    "SDES_PHONE",
    "SDES_PRIV",
    "SDES_TOOL",
    "SenderReport",
    "SourceDescription",
    "UnknownRtcp",
    "build_compound",
    "dlsr_from_seconds",
    "ntp_from_unix",
    "ntp_middle32",
    "parse_compound",
    "round_trip_time",
    "unix_from_ntp",
]

RTCP_VERSION = 2

# Packet types (RFC 3550 section 12.1).
PT_SR = 200
PT_RR = 201
PT_SDES = 202
PT_BYE = 203
PT_APP = 204

# SDES item types (RFC 3550 section 12.2).
SDES_END = 0
SDES_CNAME = 1
SDES_NAME = 2
SDES_EMAIL = 3
SDES_PHONE = 4
SDES_LOC = 5
SDES_TOOL = 6
SDES_NOTE = 7
SDES_PRIV = 8

#: Range of the signed 24-bit "cumulative number of packets lost" (section 6.4.1); callers
#: clamp to it.
CUMULATIVE_LOST_MIN = -(1 << 23)
CUMULATIVE_LOST_MAX = (1 << 23) - 1

#: Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
NTP_UNIX_OFFSET = 2_208_988_800

_MAX_COUNT = 31  # the 5-bit RC/SC field
_HEADER = struct.Struct("!BBH")
_SR_INFO = struct.Struct("!IQIII")  # sender SSRC + sender info (section 6.4.1), 24 bytes
_BLOCK = struct.Struct("!IIIIII")  # report block, 24 bytes
_U32 = struct.Struct("!I")


class RtcpError(ValueError):
    """Raised when bytes are not a valid RTCP (compound) packet (RFC 3550 appendix A.2)."""


def _check_count(what: str, count: int) -> None:
    if count > _MAX_COUNT:
        raise ValueError(f"{count} {what}, at most {_MAX_COUNT} fit in one RTCP packet")


def _header(count: int, packet_type: int, body_length: int) -> bytes:
    """Common header for a body of ``body_length`` bytes (a multiple of 4)."""
    return _HEADER.pack(0x80 | count, packet_type, body_length // 4)


def _pad4(length: int) -> int:
    return -length % 4


@dataclass(frozen=True)
class ReportBlock:
    """Reception report block (RFC 3550 section 6.4.1).

    ``fraction_lost`` is an 8-bit fixed-point fraction (lost / expected * 256);
    ``cumulative_lost`` is signed 24-bit (negative when duplicates outnumber losses);
    ``highest_seq`` is the extended highest sequence number (cycles << 16 | seq);
    ``jitter`` is in RTP timestamp units; ``lsr`` is the middle 32 bits of the last SR's
    NTP timestamp and ``dlsr`` the delay since then in units of 1/65536 s.
    """

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_seq: int
    jitter: int
    lsr: int
    dlsr: int

    def __post_init__(self) -> None:
        check_uint("SSRC", self.ssrc, 32)
        check_uint("fraction lost", self.fraction_lost, 8)
        if not CUMULATIVE_LOST_MIN <= self.cumulative_lost <= CUMULATIVE_LOST_MAX:
            raise ValueError(
                f"cumulative lost {self.cumulative_lost} out of range "
                f"{CUMULATIVE_LOST_MIN}..{CUMULATIVE_LOST_MAX}"
            )
        check_uint("extended highest sequence number", self.highest_seq, 32)
        check_uint("jitter", self.jitter, 32)
        check_uint("LSR", self.lsr, 32)
        check_uint("DLSR", self.dlsr, 32)

    @classmethod
    def parse(cls, data: bytes | memoryview, offset: int = 0) -> ReportBlock:
        """Parse the 24-byte block at ``offset`` (the caller has checked the length)."""
        ssrc, lost, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset)
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 1 << 24
        return cls(ssrc, lost >> 24, cumulative, highest, jitter, lsr, dlsr)

    def __bytes__(self) -> bytes:
        lost = (self.fraction_lost << 24) | (self.cumulative_lost & 0xFFFFFF)
        return _BLOCK.pack(self.ssrc, lost, self.highest_seq, self.jitter, self.lsr, self.dlsr)


def _check_reports(reports: tuple[ReportBlock, ...]) -> None:
    _check_count("report blocks", len(reports))
    for block in reports:
        if not isinstance(block, ReportBlock):
            raise TypeError(f"report block must be a ReportBlock, got {type(block).__name__}")


@dataclass(frozen=True)
class SenderReport:
    """SR: sender report (RFC 3550 section 6.4.1).

    ``ntp_timestamp`` is the full 64-bit NTP time (section 4); ``rtp_timestamp`` is the same
    instant on the RTP media clock. Profile-specific extensions after the report blocks are
    ignored when parsing.
    """

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()

    def __post_init__(self) -> None:
        check_uint("SSRC", self.ssrc, 32)
        check_uint("NTP timestamp", self.ntp_timestamp, 64)
        check_uint("RTP timestamp", self.rtp_timestamp, 32)
        check_uint("sender's packet count", self.packet_count, 32)
        check_uint("sender's octet count", self.octet_count, 32)
        object.__setattr__(self, "reports", tuple(self.reports))
        _check_reports(self.reports)

    def __bytes__(self) -> bytes:
        body = _SR_INFO.pack(
            self.ssrc,
            self.ntp_timestamp,
            self.rtp_timestamp,
            self.packet_count,
            self.octet_count,
        ) + b"".join(bytes(block) for block in self.reports)
        return _header(len(self.reports), PT_SR, len(body)) + body


@dataclass(frozen=True)
class ReceiverReport:
    """RR: receiver report (RFC 3550 section 6.4.2)."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    def __post_init__(self) -> None:
        check_uint("SSRC", self.ssrc, 32)
        object.__setattr__(self, "reports", tuple(self.reports))
        _check_reports(self.reports)

    def __bytes__(self) -> bytes:
        body = _U32.pack(self.ssrc) + b"".join(bytes(block) for block in self.reports)
        return _header(len(self.reports), PT_RR, len(body)) + body


SdesItem = tuple[int, bytes]
SdesChunk = tuple[int, tuple[SdesItem, ...]]


@dataclass(frozen=True)
class SourceDescription:
    """SDES: source description (RFC 3550 section 6.5).

    ``chunks`` is a tuple of ``(ssrc, ((item_type, value), ...))``; item types are the
    ``SDES_*`` constants (1..255; 0 ends the list on the wire and is not an item), values are
    at most 255 bytes of UTF-8 text.
    """

    chunks: tuple[SdesChunk, ...]

    def __post_init__(self) -> None:
        chunks = tuple(
            (ssrc, tuple((kind, bytes(value)) for kind, value in items))
            for ssrc, items in self.chunks
        )
        object.__setattr__(self, "chunks", chunks)
        _check_count("SDES chunks", len(chunks))
        for ssrc, items in chunks:
            check_uint("SSRC", ssrc, 32)
            for kind, value in items:
                check_uint("SDES item type", kind, 8)
                if kind == SDES_END:
                    raise ValueError("SDES item type 0 is the end marker, not an item")
                if len(value) > 255:
                    raise ValueError(f"SDES item of {len(value)} bytes, at most 255 allowed")

    @classmethod
    def cname(cls, ssrc: int, cname: str) -> SourceDescription:
        """An SDES with one chunk holding one CNAME item (section 6.5.1)."""
        return cls(((ssrc, ((SDES_CNAME, cname.encode("utf-8")),)),))

    def cnames(self) -> dict[int, str]:
        """Map each chunk's SSRC to its CNAME, for chunks that carry one."""
        found: dict[int, str] = {}
        for ssrc, items in self.chunks:
            for kind, value in items:
                if kind == SDES_CNAME:
                    found[ssrc] = value.decode("utf-8", errors="replace")
                    break
        return found

    def __bytes__(self) -> bytes:
        parts = []
        for ssrc, items in self.chunks:
            chunk = bytearray(_U32.pack(ssrc))
            for kind, value in items:
                chunk += bytes((kind, len(value))) + value
            chunk += bytes(1 + _pad4(len(chunk) + 1))  # the END octet, then zeros to 32 bits
            parts.append(bytes(chunk))
        body = b"".join(parts)
        return _header(len(self.chunks), PT_SDES, len(body)) + body


@dataclass(frozen=True)
class Bye:
    """BYE: goodbye (RFC 3550 section 6.6); ``reason`` is at most 255 bytes of UTF-8 text."""

    sources: tuple[int, ...]
    reason: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "reason", bytes(self.reason))
        _check_count("BYE sources", len(self.sources))
        for source in self.sources:
            check_uint("SSRC", source, 32)
        if len(self.reason) > 255:
            raise ValueError(f"BYE reason of {len(self.reason)} bytes, at most 255 allowed")

    def __bytes__(self) -> bytes:
        body = b"".join(_U32.pack(source) for source in self.sources)
        if self.reason:
            reason = bytes((len(self.reason),)) + self.reason
            body += reason + bytes(_pad4(len(reason)))
        return _header(len(self.sources), PT_BYE, len(body)) + body


@dataclass(frozen=True)
class UnknownRtcp:
    """Any other RTCP packet (APP, feedback, XR, ...), kept verbatim.

    ``count`` is the 5-bit field after the padding bit; ``body`` is everything after the
    4-byte common header, without padding, a multiple of 4 bytes.
    """

    packet_type: int
    count: int
    body: bytes = b""

    def __post_init__(self) -> None:
        check_uint("packet type", self.packet_type, 8)
        check_uint("count", self.count, 5)
        object.__setattr__(self, "body", bytes(self.body))
        if len(self.body) % 4:
            raise ValueError(f"RTCP body of {len(self.body)} bytes is not a multiple of 4")
        if len(self.body) > 0xFFFF * 4:
            raise ValueError(f"RTCP body of {len(self.body)} bytes is too long")

    def __bytes__(self) -> bytes:
        return _header(self.count, self.packet_type, len(self.body)) + self.body


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | UnknownRtcp


def _parse_reports(
    data: bytes | memoryview, packet: int, first_block: int, end: int, count: int, kind: str
) -> tuple[ReportBlock, ...]:
    needed = first_block + count * _BLOCK.size
    if needed > end:
        raise RtcpError(
            f"{kind} at offset {packet} with {count} report blocks needs "
            f"{needed - packet} bytes, have {end - packet}"
        )
    return tuple(ReportBlock.parse(data, first_block + i * _BLOCK.size) for i in range(count))


def _parse_sdes(data: bytes | memoryview, packet: int, end: int, count: int) -> SourceDescription:
    chunks = []
    offset = packet + 4
    for index in range(count):
        where = f"SDES chunk {index} at offset {packet}"
        if offset + 4 > end:
            raise RtcpError(f"{where} truncated: no room for its SSRC")
        (ssrc,) = _U32.unpack_from(data, offset)
        offset += 4
        items = []
        while True:
            if offset >= end:
                raise RtcpError(f"{where} has no end-of-list octet")
            kind = data[offset]
            if kind == SDES_END:
                offset += 1 + _pad4(offset + 1 - packet)
                if offset > end:
                    raise RtcpError(f"{where}: padding after the end octet runs past the packet")
                break
            if offset + 2 > end:
                raise RtcpError(f"{where}: item type {kind} has no length octet")
            length = data[offset + 1]
            value_end = offset + 2 + length
            if value_end > end:
                raise RtcpError(f"{where}: item of {length} bytes runs past the packet")
            items.append((kind, bytes(data[offset + 2 : value_end])))
            offset = value_end
        chunks.append((ssrc, tuple(items)))
    return SourceDescription(tuple(chunks))


def _parse_bye(data: bytes | memoryview, packet: int, end: int, count: int) -> Bye:
    needed = packet + 4 + 4 * count
    if needed > end:
        raise RtcpError(
            f"BYE at offset {packet} with {count} sources needs {needed - packet} bytes, "
            f"have {end - packet}"
        )
    sources = struct.unpack_from(f"!{count}I", data, packet + 4)
    reason = b""
    if needed < end:
        length = data[needed]
        if needed + 1 + length > end:
            raise RtcpError(
                f"BYE at offset {packet}: reason of {length} bytes runs past the packet"
            )
        reason = bytes(data[needed + 1 : needed + 1 + length])
    return Bye(sources, reason)


def parse_compound(
    data: bytes | bytearray | memoryview, *, strict: bool = False
) -> list[RtcpPacket]:
    """Split and parse a compound RTCP packet (RFC 3550 sections 6.1 and appendix A.2).

    Every packet must have version 2 and a length that stays inside ``data``; padding (P bit)
    is removed. With ``strict=True`` the section 6.1 rules are also enforced: the first
    packet is an SR or RR, only the last packet may be padded, and an SDES with a CNAME is
    present. Raises :class:`RtcpError` on the first problem.
    """
    total = len(data)
    if total == 0:
        raise RtcpError("RTCP packet is empty")
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < total:
        if offset + 4 > total:
            raise RtcpError(
                f"RTCP header at offset {offset} truncated: {total - offset} bytes left"
            )
        first, packet_type, words = _HEADER.unpack_from(data, offset)
        version = first >> 6
        if version != RTCP_VERSION:
            raise RtcpError(f"RTCP version {version} at offset {offset}, expected {RTCP_VERSION}")
        end = offset + 4 * (words + 1)
        if end > total:
            raise RtcpError(
                f"RTCP length {words} at offset {offset} needs {end - offset} bytes, "
                f"have {total - offset}"
            )
        body_start = offset + 4
        body_end = end
        if first & 0x20:
            if strict and end != total:
                raise RtcpError(f"padding on RTCP packet at offset {offset}, which is not last")
            padding = data[end - 1]
            if padding == 0:
                raise RtcpError(f"RTCP padding length 0 at offset {offset} is invalid")
            if padding > end - body_start:
                raise RtcpError(
                    f"RTCP padding length {padding} at offset {offset} exceeds the packet"
                )
            body_end -= padding
        count = first & 0x1F
        if packet_type == PT_SR:
            if body_start + _SR_INFO.size > body_end:
                raise RtcpError(
                    f"SR at offset {offset} too short: {body_end - offset} bytes, need "
                    f"{4 + _SR_INFO.size}"
                )
            ssrc, ntp, rtp_ts, packets_sent, octets = _SR_INFO.unpack_from(data, body_start)
            reports = _parse_reports(
                data, offset, body_start + _SR_INFO.size, body_end, count, "SR"
            )
            packets.append(SenderReport(ssrc, ntp, rtp_ts, packets_sent, octets, reports))
        elif packet_type == PT_RR:
            if body_start + 4 > body_end:
                raise RtcpError(f"RR at offset {offset} too short: no room for its SSRC")
            (ssrc,) = _U32.unpack_from(data, body_start)
            reports = _parse_reports(data, offset, body_start + 4, body_end, count, "RR")
            packets.append(ReceiverReport(ssrc, reports))
        elif packet_type == PT_SDES:
            packets.append(_parse_sdes(data, offset, body_end, count))
        elif packet_type == PT_BYE:
            packets.append(_parse_bye(data, offset, body_end, count))
        else:
            body = bytes(data[body_start:body_end])
            body += bytes(_pad4(len(body)))  # only odd padding can misalign it
            packets.append(UnknownRtcp(packet_type, count, body))
        offset = end
    if strict:
        _check_compound_rules(packets)
    return packets


def _check_compound_rules(packets: list[RtcpPacket]) -> None:
    if not isinstance(packets[0], (SenderReport, ReceiverReport)):
        raise RtcpError(f"compound RTCP starts with {type(packets[0]).__name__}, not an SR or RR")
    if not any(isinstance(p, SourceDescription) and p.cnames() for p in packets):
        raise RtcpError("compound RTCP has no SDES CNAME")


def build_compound(*packets: RtcpPacket) -> bytes:
    """Concatenate RTCP packets into one compound packet (RFC 3550 section 6.1).

    The caller orders them: an SR or RR first, then an SDES with a CNAME, then any BYE last.
    """
    if not packets:
        raise ValueError("a compound RTCP packet needs at least one packet")
    return b"".join(bytes(packet) for packet in packets)


def ntp_from_unix(seconds: float) -> int:
    """64-bit NTP timestamp (RFC 3550 section 4) for a Unix time in seconds.

    The integer part counts seconds since 1900-01-01 (modulo 2**32, so era 1 after 2036
    wraps as the RFC describes), the fraction part units of 2**-32 s.
    """
    whole = int(seconds // 1)
    fraction = int((seconds - whole) * (1 << 32))
    fraction = min(max(fraction, 0), 0xFFFFFFFF)
    return (((whole + NTP_UNIX_OFFSET) & 0xFFFFFFFF) << 32) | fraction


def unix_from_ntp(ntp: int) -> float:
    """Inverse of :func:`ntp_from_unix` (era 0, i.e. dates 1900..2036)."""
    return (ntp >> 32) - NTP_UNIX_OFFSET + (ntp & 0xFFFFFFFF) / (1 << 32)


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp: the LSR field (section 6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF


def dlsr_from_seconds(seconds: float) -> int:
    """A delay in seconds as the DLSR field: units of 1/65536 s (section 6.4.1)."""
    return min(max(int(seconds * 65536), 0), 0xFFFFFFFF)


def round_trip_time(arrival_middle32: int, lsr: int, dlsr: int) -> float:
    """Round-trip time in seconds from a report block (RFC 3550 section 6.4.1, figure 2).

    ``arrival_middle32`` is :func:`ntp_middle32` of the time the report arrived; the result
    is ``A - LSR - DLSR`` modulo 2**32 in units of 1/65536 s. Meaningless when ``lsr`` is
    0 (no SR received yet); the caller skips that case.
    """
    return ((arrival_middle32 - lsr - dlsr) & 0xFFFFFFFF) / 65536
