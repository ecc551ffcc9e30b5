"""RTP fixed header and packet value type (RFC 3550 section 5.1).

Theory of operation
-------------------
An :class:`RtpPacket` is an immutable value: ``RtpPacket.parse(datagram)`` turns the bytes of
one UDP datagram into fields, and ``bytes(packet)`` turns the fields back into exactly the
bytes a conforming sender would put on the wire. Parsing checks every length before it reads
and reports the first problem as an :class:`RtpError` (a ``ValueError``) with a precise
message; building checks every field's range and raises ``ValueError``. Nothing here touches
sockets, threads or clocks: timestamps are plain integers supplied by the caller.

Senders that only need the 12-byte fixed header (no CSRC list, extension or padding), which
is every packet our server sends, use :func:`pack_header`, a single precompiled
``struct.Struct`` call.

Sequence numbers are 16-bit and timestamps 32-bit counters that wrap; :func:`seq_add`,
:func:`seq_gt`, :func:`seq_diff`, :func:`ts_add` and :func:`ts_diff` do the modular
arithmetic (RFC 1982 serial-number comparison) so callers never compare raw values.

Wire format (RFC 3550 section 5.1, header extension section 5.3.1)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |V=2|P|X|  CC   |M|     PT      |       sequence number         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                           timestamp                           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |           synchronization source (SSRC) identifier            |
    +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
    |       contributing source (CSRC) identifiers (CC of them)     |
    |                             ....                              |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |      defined by profile       |           length              |  only if X = 1;
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  length counts the
    |                        header extension                       |  32-bit words after
    |                             ....                              |  this line
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                            payload                            |
    |                             ....              +-+-+-+-+-+-+-+-+
    |                                               | padding count |  only if P = 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
"""

from __future__ import annotations

import enum
import functools
import struct
from dataclasses import dataclass

__all__ = [
    "JPEG_CLOCK_RATE",
    "MAX_CSRC_COUNT",
    "PT_JPEG",
    "RTP_HEADER_SIZE",
    "RTP_VERSION",
    "RtpError",
    "RtpPacket",
    "pack_header",
    "seq_add",
    "seq_diff",
    "seq_gt",
    "ts_add",
    "ts_diff",
]

RTP_VERSION = 2
RTP_HEADER_SIZE = 12
#: Static payload type for JPEG (RFC 3551 section 6, table 5; payload format RFC 2435).
PT_JPEG = 26
#: RTP clock rate for JPEG video, Hz (RFC 2435 section 3.1.3, RFC 3551 section 5).
JPEG_CLOCK_RATE = 90000
#: The CC field is 4 bits wide.
MAX_CSRC_COUNT = 15

_MAX_EXTENSION_BYTES = 0xFFFF * 4

_FIXED = struct.Struct("!BBHII")
_EXTENSION_HEADER = struct.Struct("!HH")


class RtpError(ValueError):
    """Raised when bytes are not a valid RTP packet (RFC 3550 section 5.1 / appendix A.1)."""


def check_uint(name: str, value: int, bits: int) -> None:
    """Refuse a packet field that is not an unsigned ``bits``-bit int (RTP and RTCP alike)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{name} {value} out of range 0..{(1 << bits) - 1}")


@dataclass(frozen=True)
class RtpPacket:
    """One RTP packet (RFC 3550 section 5.1).

    ``csrc`` is the contributing-source list (section 5.1, at most 15 entries);
    ``extension_profile`` is ``None`` when there is no header extension (X = 0), otherwise
    the 16-bit "defined by profile" value and ``extension`` the extension data, a multiple of
    4 bytes (section 5.3.1). ``padding`` is the number of padding octets at the end of the
    packet *including* the final count octet (section 5.1, P bit); 0 means no padding.
    Padding octets other than the count are written as zeros and ignored when parsing.
    """

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension_profile: int | None = None
    extension: bytes = b""
    padding: int = 0

    def __post_init__(self) -> None:
        check_uint("payload type", self.payload_type, 7)
        check_uint("sequence number", self.sequence_number, 16)
        check_uint("timestamp", self.timestamp, 32)
        check_uint("SSRC", self.ssrc, 32)
        if type(self.payload) is not bytes:
            object.__setattr__(self, "payload", bytes(self.payload))
        if type(self.extension) is not bytes:
            object.__setattr__(self, "extension", bytes(self.extension))
        if type(self.csrc) is not tuple:
            object.__setattr__(self, "csrc", tuple(self.csrc))
        object.__setattr__(self, "marker", bool(self.marker))
        if len(self.csrc) > MAX_CSRC_COUNT:
            raise ValueError(f"{len(self.csrc)} CSRCs, at most {MAX_CSRC_COUNT} allowed")
        for source in self.csrc:
            check_uint("CSRC", source, 32)
        if self.extension_profile is None:
            if self.extension:
                raise ValueError("extension data given without extension_profile")
        else:
            check_uint("extension profile", self.extension_profile, 16)
            if len(self.extension) % 4:
                raise ValueError(
                    f"extension length {len(self.extension)} is not a multiple of 4 bytes"
                )
            if len(self.extension) > _MAX_EXTENSION_BYTES:
                raise ValueError(
                    f"extension length {len(self.extension)} exceeds {_MAX_EXTENSION_BYTES} bytes"
                )
        check_uint("padding", self.padding, 8)

    @property
    def header_size(self) -> int:
        """Bytes before the payload: fixed header, CSRC list and header extension."""
        size = RTP_HEADER_SIZE + 4 * len(self.csrc)
        if self.extension_profile is not None:
            size += 4 + len(self.extension)
        return size

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> RtpPacket:
        """Parse one RTP packet, checking it as RFC 3550 appendix A.1 describes.

        Raises :class:`RtpError` for a short packet, a version other than 2, a CSRC list or
        header extension running past the end, or a padding count of 0 or larger than what
        follows the header.
        """
        length = len(data)
        if length < RTP_HEADER_SIZE:
            raise RtpError(f"RTP packet too short: {length} bytes")
        first, second, seq, timestamp, ssrc = _FIXED.unpack_from(data, 0)
        version = first >> 6
        if version != RTP_VERSION:
            raise RtpError(f"RTP version {version}, expected {RTP_VERSION}")
        offset = RTP_HEADER_SIZE
        cc = first & 0x0F
        csrc: tuple[int, ...] = ()
        if cc:
            needed = offset + 4 * cc
            if needed > length:
                raise RtpError(f"CSRC count {cc} needs {needed} bytes, have {length}")
            csrc = struct.unpack_from(f"!{cc}I", data, offset)
            offset = needed
        extension_profile = None
        extension = b""
        if first & 0x10:
            if offset + 4 > length:
                raise RtpError(f"header extension needs {offset + 4} bytes, have {length}")
            extension_profile, words = _EXTENSION_HEADER.unpack_from(data, offset)
            offset += 4
            end = offset + 4 * words
            if end > length:
                raise RtpError(
                    f"header extension of {words} words needs {end} bytes, have {length}"
                )
            extension = bytes(data[offset:end])
            offset = end
        end = length
        padding = 0
        if first & 0x20:
            if end == offset:
                raise RtpError("padding bit set but no padding count byte")
            padding = data[end - 1]
            if padding == 0:
                raise RtpError("padding length 0 is invalid")
            if padding > end - offset:
                raise RtpError(f"padding length {padding} exceeds payload")
            end -= padding
        return cls(
            payload_type=second & 0x7F,
            sequence_number=seq,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=bytes(data[offset:end]),
            marker=bool(second & 0x80),
            csrc=csrc,
            extension_profile=extension_profile,
            extension=extension,
            padding=padding,
        )

    def __bytes__(self) -> bytes:
        """Serialise to wire format (RFC 3550 section 5.1)."""
        first = (
            (RTP_VERSION << 6)
            | (0x20 if self.padding else 0)
            | (0x10 if self.extension_profile is not None else 0)
            | len(self.csrc)
        )
        second = (0x80 if self.marker else 0) | self.payload_type
        parts = [_FIXED.pack(first, second, self.sequence_number, self.timestamp, self.ssrc)]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension_profile is not None:
            parts.append(_EXTENSION_HEADER.pack(self.extension_profile, len(self.extension) // 4))
            parts.append(self.extension)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)


def pack_header(
    payload_type: int, sequence_number: int, timestamp: int, ssrc: int, marker: bool
) -> bytes:
    """Return the fixed 12-byte RTP header (RFC 3550 section 5.1): V=2, P=0, X=0, CC=0.

    The sender's fast path; equal to ``bytes(RtpPacket(...))`` of a packet with an empty
    payload and no CSRC list, extension or padding. Raises ``ValueError`` for out-of-range
    fields.
    """
    if not 0 <= payload_type <= 0x7F:
        raise ValueError(f"payload type {payload_type} out of range 0..127")
    if not 0 <= sequence_number <= 0xFFFF:
        raise ValueError(f"sequence number {sequence_number} out of range 0..65535")
    if not 0 <= timestamp <= 0xFFFFFFFF:
        raise ValueError(f"timestamp {timestamp} out of range 0..4294967295")
    if not 0 <= ssrc <= 0xFFFFFFFF:
        raise ValueError(f"SSRC {ssrc} out of range 0..4294967295")
    second = (0x80 | payload_type) if marker else payload_type
    return _FIXED.pack(0x80, second, sequence_number, timestamp, ssrc)


@functools.lru_cache(maxsize=256)
def _header_template(count: int, payload_type: int) -> tuple[int, int, int, int]:
    """``count`` headers as one big-endian integer with sequence offsets 0..count-1, the
    marker on the last and zero timestamps and SSRCs; and the masks that add a first
    sequence number, a timestamp and an SSRC to every header at once."""
    base = b"".join(
        _FIXED.pack(0x80, payload_type | (0x80 if i == count - 1 else 0), i, 0, 0)
        for i in range(count)
    )
    at = [8 * RTP_HEADER_SIZE * (count - 1 - i) for i in range(count)]  # each header's lsb
    return (int.from_bytes(base, "big"), sum(1 << (a + 64) for a in at),
            sum(1 << (a + 32) for a in at), sum(1 << a for a in at))


def pack_headers(
    count: int, payload_type: int, first_sequence: int, timestamp: int, ssrc: int
) -> bytes:
    """The fixed headers of one frame's ``count`` packets, back to back (``count`` x 12
    bytes): sequence numbers from ``first_sequence`` (wrapping), one timestamp and SSRC,
    the marker on the last. Equal to ``b"".join(pack_header(...) for each packet)``.

    The sender's per-session hot path: one integer sum for the whole frame instead of a
    ``struct.pack`` per packet (about 6x faster at 41 packets; bench/header_micro.py).
    """
    if first_sequence + count > 0x10000 or not (
        0 <= first_sequence and 0 <= timestamp <= 0xFFFFFFFF and 0 <= ssrc <= 0xFFFFFFFF
    ):
        # Wrapping (once in 65536 / count frames) or out of range: header by header.
        last = count - 1
        return b"".join(pack_header(payload_type, (first_sequence + i) & 0xFFFF, timestamp,
                                    ssrc, i == last) for i in range(count))
    base, seq_mask, ts_mask, ssrc_mask = _header_template(count, payload_type)
    return (base + first_sequence * seq_mask + timestamp * ts_mask + ssrc * ssrc_mask).to_bytes(
        RTP_HEADER_SIZE * count, "big")


def seq_add(a: int, b: int) -> int:
    """Return ``a + b`` modulo 2**16 (sequence numbers wrap, RFC 3550 section 5.1)."""
    return (a + b) & 0xFFFF


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between 16-bit sequence numbers, in [-32768, 32767].

    Two numbers exactly 32768 apart give -32768 (the case RFC 1982 leaves undefined).
    """
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def seq_gt(a: int, b: int) -> bool:
    """RFC 1982 serial-number comparison ``a > b`` for 16-bit sequence numbers.

    ``seq_gt(0, 65535)`` is true (0 follows 65535). For numbers exactly 32768 apart the
    comparison is undefined in RFC 1982 section 3.2; both directions return ``False``.
    """
    return seq_diff(a, b) > 0


def ts_add(a: int, b: int) -> int:
    """Return ``a + b`` modulo 2**32 (RTP timestamps wrap, RFC 3550 section 5.1)."""
    return (a + b) & 0xFFFFFFFF


def ts_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between 32-bit RTP timestamps, in [-2**31, 2**31 - 1]."""
    return ((a - b + 0x80000000) & 0xFFFFFFFF) - 0x80000000


class SeqVerdict(enum.Enum):
    """What RFC 3550 appendix A.1 ``update_seq`` makes of one sequence number."""

    FIRST = "first"  # the source's first packet
    AHEAD = "ahead"  # the next one, or after a gap of fewer than MAX_DROPOUT
    BEHIND = "behind"  # a duplicate or reordered packet, at most MAX_MISORDER behind
    JUMP = "jump"  # a very large jump: ignored unless the next packet follows it
    RESTART = "restart"  # it followed a jump: the source restarted at this number


#: RFC 3550 appendix A.1 constants.
MAX_DROPOUT = 3000
MAX_MISORDER = 100


class SequenceTracker:
    """RFC 3550 appendix A.1 sequence-number tracking, the one rule for the receive path.

    :meth:`update` classifies each 16-bit sequence number (:class:`SeqVerdict`) and gives
    its extended value: ``cycles`` (counted when the number wraps forward) plus the number;
    a reordered packet from before a wrap gets the previous cycle. After a confirmed
    restart the extended numbering starts again at the restarting packet's own number, and
    the held packet before it was that number minus one. Probation of new sources
    (``MIN_SEQUENTIAL``) is left out: the first packet starts the source.
    """

    def __init__(self) -> None:
        self._max: int | None = None
        self._cycles = 0
        self._bad: int | None = None

    @property
    def extended_max(self) -> int | None:
        """The extended highest sequence number (``cycles + max_seq``), None before any."""
        return None if self._max is None else self._cycles + self._max

    def update(self, seq: int) -> tuple[SeqVerdict, int | None]:
        """Classify ``seq``; its extended number, None for a jump (which counts for nothing)."""
        check_uint("sequence number", seq, 16)
        if self._max is None:
            self._start(seq)
            return SeqVerdict.FIRST, seq
        udelta = (seq - self._max) & 0xFFFF
        if udelta < MAX_DROPOUT:
            if seq < self._max:
                self._cycles += 1 << 16  # wrapped forward
            self._max = seq
            return SeqVerdict.AHEAD, self._cycles + seq
        if udelta <= (1 << 16) - MAX_MISORDER:
            if seq != self._bad:
                self._bad = (seq + 1) & 0xFFFF
                return SeqVerdict.JUMP, None
            self._start(seq)  # two sequential packets after a jump: the source restarted
            return SeqVerdict.RESTART, seq
        return SeqVerdict.BEHIND, self._cycles + self._max - ((1 << 16) - udelta)

    def _start(self, seq: int) -> None:
        self._max, self._cycles, self._bad = seq, 0, None


class SequenceUnwrapper:
    """Map wrapping counters (16-bit RTP sequence numbers by default) to unbounded ints.

    Each value is placed at the extension nearest to the highest extended value seen so far,
    in the spirit of RFC 3550 appendix A.1 (``cycles`` + ``max_seq``): ``65535, 0`` gives
    ``65535, 65536``; a packet from just before the wrap that arrives after it (``0, 65535``
    after ``65534``) gives ``65535``. A jump of half the range or more is read as going
    backwards. The first value is returned unchanged, so values before it may be negative.
    ``bits=32`` unwraps RTP timestamps.
    """

    def __init__(self, bits: int = 16) -> None:
        self._modulus = 1 << bits
        self._half = self._modulus >> 1
        self._highest: int | None = None

    @property
    def highest(self) -> int | None:
        """The highest extended value returned so far (None before the first)."""
        return self._highest

    def peek(self, value: int) -> int:
        """The extended value :meth:`unwrap` would return, without recording it."""
        if not 0 <= value < self._modulus:
            raise ValueError(f"value {value} out of range 0..{self._modulus - 1}")
        if self._highest is None:
            return value
        delta = (value - self._highest + self._half) % self._modulus - self._half
        return self._highest + delta

    def unwrap(self, seq: int) -> int:
        """Return the extended value of ``seq`` and remember it if it is the highest."""
        extended = self.peek(seq)
        if self._highest is None or extended > self._highest:
            self._highest = extended
        return extended

    def reset(self) -> None:
        """Forget everything; the next value is taken as it is."""
        self._highest = None
