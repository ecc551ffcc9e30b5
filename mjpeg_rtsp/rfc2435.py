"""RFC 2435 "RTP Payload Format for JPEG-compressed Video": payloader and depayloader.

Theory of operation
-------------------
Sending (section 3): the JPEG is first scanned (:func:`mjpeg_rtsp.jpeg.scan_jpeg`) so that its
headers can be dropped; only the entropy-coded scan data travels, split into fragments that
each carry an 8-byte main JPEG header (3.1) with the byte offset of the fragment, a restart
marker header (3.1.7) when the type is 64-127, and -- in the first fragment only -- a
quantization table header (3.1.8) with the frame's own tables (Q = 255, "dynamic tables").
The RTP marker bit goes on the last fragment; the RTP layer (not this module) sets it.

Receiving (section 4.1, appendices A and B): :class:`JpegDepacketizer` concatenates fragments
of one timestamp as long as their offsets are contiguous from 0, and when the marker packet
arrives it rebuilds a complete JFIF-style header (SOI, DQT, SOF0, DHT with the Annex K
tables, DRI, SOS) in front of the scan data and appends EOI. Tables come from the in-band
quantization header (Q >= 128) or are computed from Q by the appendix A scaling (Q < 128).
Anything missing or out of order drops the whole frame; partial frames are never emitted.

Pure byte manipulation: no sockets, clocks or image libraries.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .jpeg import STANDARD_HUFFMAN_TABLES, JpegInfo
from .limits import MAX_FRAME_BYTES, MAX_FRAME_PIXELS, FrameTooLargeError

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "JpegDepacketizer",
    "Rfc2435Error",
    "Rfc2435Header",
    "build_jpeg_header",
    "make_qtables",
    "packetize",
    "parse_header",
]

DEFAULT_MAX_PAYLOAD = 1400

MAIN_HEADER_SIZE = 8
RESTART_HEADER_SIZE = 4
QTABLE_HEADER_SIZE = 4
MAX_FRAGMENT_OFFSET = 0xFFFFFF  # 24-bit field (3.1.2)
MAX_DIMENSION = 2040  # 255 * 8: the largest width/height the 8-bit fields can express (3.1.5)
DYNAMIC_Q = 255  # Q value announcing in-band tables that change per frame (3.1.4)

_RESTART_COUNT_ALL = 0x3FFF  # 3.1.7: F=1, L=1, count=0x3FFF -> "reassemble the whole frame"


class Rfc2435Error(ValueError):
    """A malformed or unsupported RFC 2435 payload."""


class Rfc2435FrameTooLargeError(Rfc2435Error, FrameTooLargeError):
    """A well-formed frame over the receiver's limits (pixels or bytes, see limits.py)."""


# ---------------------------------------------------------------------------------------------
# Header parsing (section 3.1)
#
#   0                   1                   2                   3
#   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  | Type-specific |              Fragment Offset                  |   3.1 main header
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |      Type     |       Q       |     Width     |     Height    |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |       Restart Interval        |F|L|       Restart Count       |   3.1.7 (types 64-127)
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
#  |      MBZ      |   Precision   |             Length            |   3.1.8 (Q >= 128,
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+         offset 0 only)
#  |                    Quantization Table Data                    |
#  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+


@dataclass(frozen=True)
class Rfc2435Header:
    """Every field of the RFC 2435 headers of one payload.

    ``width`` and ``height`` are the raw 8-bit fields, in units of 8 pixels (3.1.5, 3.1.6);
    0 means the dimension is given out of band (SDP ``a=x-dimensions``). The restart fields
    are None unless 64 <= type <= 127; the quantization table fields are None unless
    Q >= 128 and the fragment offset is 0. ``data_offset`` is where the scan data begins.
    """

    type_specific: int
    fragment_offset: int
    type: int
    q: int
    width: int
    height: int
    restart_interval: int | None
    restart_first: bool | None
    restart_last: bool | None
    restart_count: int | None
    qt_mbz: int | None
    qt_precision: int | None
    qt_length: int | None
    qt_data: bytes | None
    data_offset: int

    @property
    def pixel_width(self) -> int:
        """Width in pixels as carried by the header (a multiple of 8; 0 = out of band)."""
        return self.width * 8

    @property
    def pixel_height(self) -> int:
        """Height in pixels as carried by the header (a multiple of 8; 0 = out of band)."""
        return self.height * 8


def parse_header(payload: bytes | bytearray | memoryview) -> Rfc2435Header:
    """Parse the RFC 2435 headers at the start of an RTP payload (sections 3.1, 3.1.7, 3.1.8).

    Raises :class:`Rfc2435Error` with a precise message when the payload is too short for the
    headers its fields announce, or uses a dynamically defined type (128-255, section 3.1.3).
    """
    n = len(payload)
    if n < MAIN_HEADER_SIZE:
        raise Rfc2435Error(f"payload too short for the JPEG main header: {n} < 8 bytes")
    type_specific = payload[0]
    fragment_offset = (payload[1] << 16) | (payload[2] << 8) | payload[3]
    type_, q, width, height = payload[4], payload[5], payload[6], payload[7]
    if type_ >= 128:
        raise Rfc2435Error(f"unsupported dynamically defined JPEG type {type_}")
    if q == 0:
        raise Rfc2435Error("reserved Q value 0")
    pos = MAIN_HEADER_SIZE
    ri = rf = rl = rc = None
    if 64 <= type_ <= 127:
        if n < pos + RESTART_HEADER_SIZE:
            raise Rfc2435Error(
                f"payload too short for the restart marker header: {n} < {pos + 4} bytes"
            )
        ri = (payload[pos] << 8) | payload[pos + 1]
        word = (payload[pos + 2] << 8) | payload[pos + 3]
        rf, rl, rc = bool(word & 0x8000), bool(word & 0x4000), word & 0x3FFF
        pos += RESTART_HEADER_SIZE
    mbz = prec = length = None
    qt_data = None
    if q >= 128 and fragment_offset == 0:
        if n < pos + QTABLE_HEADER_SIZE:
            raise Rfc2435Error(
                f"payload too short for the quantization table header: {n} < {pos + 4} bytes"
            )
        mbz, prec = payload[pos], payload[pos + 1]
        length = (payload[pos + 2] << 8) | payload[pos + 3]
        pos += QTABLE_HEADER_SIZE
        if n < pos + length:
            raise Rfc2435Error(
                f"quantization table data truncated: length {length} but only "
                f"{n - pos} bytes follow the header"
            )
        qt_data = bytes(payload[pos : pos + length])
        pos += length
    return Rfc2435Header(
        type_specific=type_specific,
        fragment_offset=fragment_offset,
        type=type_,
        q=q,
        width=width,
        height=height,
        restart_interval=ri,
        restart_first=rf,
        restart_last=rl,
        restart_count=rc,
        qt_mbz=mbz,
        qt_precision=prec,
        qt_length=length,
        qt_data=qt_data,
        data_offset=pos,
    )


# ---------------------------------------------------------------------------------------------
# Sending (section 3)


def packetize(
    jpeg: bytes | bytearray | memoryview,
    info: JpegInfo,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
) -> list[bytes]:
    """Split a frame's scan data into RTP payloads (RFC 2435 section 3).

    ``jpeg[info.scan_start:info.scan_end]`` (EOI stripped) is cut into fragments so that each
    payload, headers included, is at most ``max_payload`` bytes. Every payload has the main
    header (3.1: type-specific 0, 24-bit offset, ``info.rfc2435_type``, Q = 255, width/8 and
    height/8 rounded up, 0 above 2040 pixels), a restart marker header (3.1.7: interval, F=1,
    L=1, count 0x3FFF) when the type is >= 64, and the first payload carries the quantization
    table header (3.1.8: MBZ 0, precision 0, length 128, luma then chroma table, zig-zag).

    Raises ValueError if the frame is not RFC 2435 compatible, or ``max_payload`` cannot carry
    at least one byte of scan data after the first payload's headers.
    """
    rtype = info.rfc2435_type
    if rtype is None:
        raise ValueError(f"JPEG cannot be sent as RFC 2435: {info.incompatibility}")
    luma = info.qtables[info.components[0].tq]
    chroma = info.qtables[info.components[1].tq]
    if len(luma) != 64 or len(chroma) != 64:
        raise ValueError("RFC 2435 packetizer needs 8-bit quantization tables")
    restart = b""
    if rtype >= 64:
        restart = struct.pack("!HH", info.restart_interval, 0xC000 | _RESTART_COUNT_ALL)
    qheader = struct.pack("!BBH", 0, 0, 128) + luma + chroma
    first_overhead = MAIN_HEADER_SIZE + len(restart) + len(qheader)
    if max_payload < first_overhead + 1:
        raise ValueError(
            f"max_payload {max_payload} too small: the first packet needs {first_overhead} "
            "bytes of headers plus at least 1 byte of scan data"
        )
    scan = memoryview(jpeg)[info.scan_start : info.scan_end]
    total = len(scan)
    if total > MAX_FRAGMENT_OFFSET + 1:
        raise ValueError(f"scan data of {total} bytes exceeds the 24-bit fragment offset")
    width8 = (info.width + 7) // 8 if info.width <= MAX_DIMENSION else 0
    height8 = (info.height + 7) // 8 if info.height <= MAX_DIMENSION else 0
    tail = struct.pack("!BBBB", rtype, DYNAMIC_Q, width8, height8) + restart
    payloads: list[bytes] = []
    offset = 0
    while True:
        extra = qheader if offset == 0 else b""
        room = max_payload - MAIN_HEADER_SIZE - len(restart) - len(extra)
        chunk = scan[offset : offset + room]
        head = struct.pack("!I", offset)  # type-specific 0 in the top byte
        payloads.append(b"".join((head, tail, extra, chunk)))
        offset += len(chunk)
        if offset >= total:
            return payloads


# ---------------------------------------------------------------------------------------------
# Appendix A: tables from Q (1..99); tables are in zig-zag order, as in DQT and 3.1.8.

# T.81 Annex K.1 / K.2 tables in natural (row-major) order.
_LUMA_K1 = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)
_CHROMA_K2 = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
)


def _zigzag_order() -> tuple[int, ...]:
    """Natural-order index of each zig-zag position (T.81 figure A.6)."""
    order = []
    for s in range(15):  # anti-diagonals: row + col == s
        cells = [(r, s - r) for r in range(8) if 0 <= s - r < 8]
        if s % 2 == 0:
            cells.reverse()  # even diagonals run bottom-left to top-right
        order.extend(r * 8 + c for r, c in cells)
    return tuple(order)


ZIGZAG = _zigzag_order()


def make_qtables(q: int) -> tuple[bytes, bytes]:
    """Luma and chroma quantization tables (zig-zag order) for 1 <= Q <= 99 (RFC 2435 app. A).

    The Annex K tables are scaled by 5000/Q below 50 and by 200 - 2Q from 50 up, rounded and
    limited to 1..255; Q = 50 gives the Annex K tables themselves.
    """
    if not 1 <= q <= 99:
        raise ValueError(f"Q must be in 1..99 for appendix A tables, got {q}")
    scale = 5000 // q if q < 50 else 200 - 2 * q

    def scaled(table: tuple[int, ...]) -> bytes:
        return bytes(min(255, max(1, (table[ZIGZAG[i]] * scale + 50) // 100)) for i in range(64))

    return scaled(_LUMA_K1), scaled(_CHROMA_K2)


# ---------------------------------------------------------------------------------------------
# Appendix B: rebuild the JPEG header.


def _segment(marker: int, body: bytes) -> bytes:
    return struct.pack("!BBH", 0xFF, marker, len(body) + 2) + body


def _dqt(table_id: int, table: bytes) -> bytes:
    if len(table) == 64:
        return _segment(0xDB, bytes([table_id]) + table)
    if len(table) == 128:
        return _segment(0xDB, bytes([0x10 | table_id]) + table)
    raise ValueError(f"quantization table must be 64 or 128 bytes, got {len(table)}")


def build_jpeg_header(
    type_: int,
    width: int,
    height: int,
    luma_q: bytes,
    chroma_q: bytes,
    restart_interval: int = 0,
) -> bytes:
    """Build the JPEG header for a depacketized frame (RFC 2435 appendix B).

    SOI, one DQT per table (table 0 luma, table 1 chroma; 64-byte tables are 8-bit, 128-byte
    tables 16-bit), SOF0 (8-bit, three components: Y sampled 2x1 for type 0 / 2x2 for type 1,
    Cb and Cr 1x1 sharing table 1), the four Annex K.3 DHT tables, DRI when
    ``restart_interval`` > 0, and SOS for the single interleaved scan. Types 64-127 are
    treated as ``type_ - 64`` (3.1.7).
    """
    base = type_ & 0x3F if type_ < 128 else -1
    if base not in (0, 1):
        raise ValueError(f"unsupported RFC 2435 type {type_}")
    if not (1 <= width <= 0xFFFF and 1 <= height <= 0xFFFF):
        raise ValueError(f"invalid frame size {width}x{height}")
    if not 0 <= restart_interval <= 0xFFFF:
        raise ValueError(f"invalid restart interval {restart_interval}")
    y_sampling = 0x21 if base == 0 else 0x22
    parts = [
        b"\xff\xd8",
        _dqt(0, bytes(luma_q)),
        _dqt(1, bytes(chroma_q)),
        _segment(
            0xC0,
            struct.pack("!BHHB", 8, height, width, 3)
            + bytes([1, y_sampling, 0, 2, 0x11, 1, 3, 0x11, 1]),
        ),
    ]
    for (tc, th), table in sorted(STANDARD_HUFFMAN_TABLES.items(), key=lambda kv: kv[0][::-1]):
        parts.append(_segment(0xC4, bytes([(tc << 4) | th]) + table))
    if restart_interval:
        parts.append(_segment(0xDD, struct.pack("!H", restart_interval)))
    parts.append(_segment(0xDA, bytes([3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0])))
    return b"".join(parts)


# ---------------------------------------------------------------------------------------------
# Receiving (section 4.1)


class JpegDepacketizer:
    """Rebuild complete JPEG files from RFC 2435 payloads (section 4.1, appendices A and B).

    Feed payloads in sequence order (reordering is the jitter buffer's job). A frame is
    emitted when the packet with the marker bit arrives and every fragment of that timestamp
    was contiguous from offset 0; otherwise the partial frame is dropped and counted in
    :attr:`frames_dropped`. Fragments seen before offset 0 of a frame make the frame
    incomplete; late fragments of an already finished timestamp are ignored.

    ``width``/``height`` come from SDP ``a=x-dimensions``: they are used when the header's
    field is 0 (dimension > 2040), and also when they round up to the header's value, which
    restores sizes that are not multiples of 8.

    A frame of more than ``max_pixels`` is refused at its first fragment, and one whose scan
    data grows past ``max_bytes`` when the fragment that would cross it arrives
    (:class:`Rfc2435FrameTooLargeError`); nothing more of it is buffered.
    """

    def __init__(
        self,
        width: int | None = None,
        height: int | None = None,
        max_pixels: int = MAX_FRAME_PIXELS,
        max_bytes: int = MAX_FRAME_BYTES,
    ) -> None:
        self.width = width
        self.height = height
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.frames_dropped = 0
        self._static_tables: dict[int, tuple[bytes, bytes]] = {}
        self._last_done: int | None = None
        self._reset()

    def _reset(self) -> None:
        self._ts: int | None = None
        self._buf = bytearray()
        self._broken = False
        self._first: Rfc2435Header | None = None
        self._tables: tuple[bytes, bytes] | None = None
        self._size = (0, 0)

    def _abandon(self) -> None:
        """Count the current partial frame as dropped and forget it."""
        self.frames_dropped += 1
        self._last_done = self._ts
        self._reset()

    def _begin(self, timestamp: int) -> None:
        if self._ts is not None and timestamp != self._ts:
            self._abandon()  # the marker packet of the previous frame never came
        self._ts = timestamp

    def push(
        self, payload: bytes | bytearray | memoryview, timestamp: int, marker: bool
    ) -> bytes | None:
        """Add one RTP payload; return a complete JPEG (SOI..EOI) when a frame completes.

        Raises :class:`Rfc2435Error` for a malformed payload (the frame it belongs to is then
        dropped as incomplete).
        """
        if timestamp == self._last_done:
            return None  # a straggler of a frame already emitted or dropped
        self._begin(timestamp)
        try:
            header = self._check(parse_header(payload))
        except Rfc2435Error:
            self._broken = True
            if marker:
                self._abandon()
            raise
        if not self._broken and header.fragment_offset != len(self._buf):
            self._broken = True  # a fragment is missing, or arrived out of order
        if self._broken:
            if marker:
                self._abandon()
            return None
        data = memoryview(payload)[header.data_offset :]
        if len(self._buf) + len(data) > self.max_bytes:
            self._broken = True
            self._buf = bytearray()
            if marker:
                self._abandon()
            raise Rfc2435FrameTooLargeError(
                f"frame data exceeds {self.max_bytes} bytes at offset {header.fragment_offset}"
            )
        self._buf += data
        if not marker:
            return None
        frame = self._assemble()
        self._last_done = self._ts
        self._reset()
        if frame is None:
            self.frames_dropped += 1
        return frame

    def _check(self, header: Rfc2435Header) -> Rfc2435Header:
        """Validate a header against the supported types and the frame's first header."""
        if header.type & 0x3F not in (0, 1):
            raise Rfc2435Error(f"unsupported JPEG type {header.type}")
        if header.fragment_offset == 0:
            self._first = header
            self._tables = self._tables_for(header)
            self._size = (
                self._dimension(header.width, self.width, "width"),
                self._dimension(header.height, self.height, "height"),
            )
            if self._size[0] * self._size[1] > self.max_pixels:
                raise Rfc2435FrameTooLargeError(
                    f"{self._size[0]}x{self._size[1]} frame exceeds {self.max_pixels} pixels"
                )
        elif self._first is not None:
            first = self._first
            if (header.type, header.q, header.width, header.height) != (
                first.type, first.q, first.width, first.height,
            ):
                raise Rfc2435Error(
                    "type, Q or dimensions changed within a frame at offset "
                    f"{header.fragment_offset}"
                )
        return header

    def _tables_for(self, header: Rfc2435Header) -> tuple[bytes, bytes] | None:
        """Quantization tables for a frame: appendix A for Q < 128, in-band otherwise (3.1.8)."""
        q = header.q
        if q < 128:
            return make_qtables(min(q, 99))
        length = header.qt_length or 0
        data = header.qt_data or b""
        if length == 0:
            if q == DYNAMIC_Q:
                raise Rfc2435Error("Q=255 requires in-band quantization tables (length 0)")
            return self._static_tables.get(q)  # tables sent earlier for this Q
        prec = header.qt_precision or 0
        sizes = [128 if prec & (1 << i) else 64 for i in range(2)]
        if length >= sum(sizes):
            tables = (data[: sizes[0]], data[sizes[0] : sizes[0] + sizes[1]])
        elif length >= sizes[0]:
            # One table: the JPEG's components all use it. ffmpeg's and VLC's packetizers
            # send one table per DQT table of the source (3.1.8 leaves the count open), so
            # it quantizes chroma as well.
            tables = (data[: sizes[0]],) * 2
        else:
            raise Rfc2435Error(
                f"quantization table length {length} too short for a table "
                f"(precision 0x{prec:02X} needs {sizes[0]} bytes)"
            )
        if q != DYNAMIC_Q:
            self._static_tables[q] = tables
        return tables

    def _dimension(self, field: int, configured: int | None, name: str) -> int:
        if configured is not None and 0 < configured <= 0xFFFF and (
            field == 0 or (configured + 7) // 8 == field
        ):
            return configured
        if field == 0 and configured is not None and configured > 0xFFFF:
            # SOF0 holds 16 bits; a larger a=x-dimensions must not reach build_jpeg_header.
            raise Rfc2435Error(f"{name} {configured} from a=x-dimensions exceeds 65535")
        if field == 0:
            raise Rfc2435Error(f"{name} is 0 in the header and no a=x-dimensions was given")
        return field * 8

    def _assemble(self) -> bytes | None:
        first, tables = self._first, self._tables
        if first is None or tables is None:
            return None
        width, height = self._size
        restart = first.restart_interval or 0
        header = build_jpeg_header(first.type, width, height, tables[0], tables[1], restart)
        eoi = b"" if self._buf.endswith(b"\xff\xd9") else b"\xff\xd9"
        return b"".join((header, self._buf, eoi))
