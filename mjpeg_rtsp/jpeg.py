"""JPEG marker scanner (ITU-T T.81 / ISO 10918-1), pure Python, no image library.

Theory of operation
-------------------
A JPEG file is a sequence of marker segments (T.81 B.1.1.4): ``FF xx`` followed, for most
markers, by a 16-bit big-endian length that counts itself. :func:`scan_jpeg` walks those
segments from SOI, decoding only the few that matter for RTP transport (DQT, SOFn, DHT, DRI,
SOS) and skipping the rest by their length -- so an EXIF thumbnail inside APP1, with its own
``FFD9``, never ends the frame. After an SOS header comes entropy-coded data, which has no
length: it ends at the first ``FF`` followed by a byte that is not ``00`` (stuffing), ``D0-D7``
(RSTn) or ``FF`` (fill). That search is done by a compiled regular expression so it runs at C
speed over the bulk of every frame. Progressive files have several scans separated by more
DHT/SOS segments; the walk simply continues until EOI.

The result, :class:`JpegInfo`, records the absolute offsets of the scan data and everything
RFC 2435 (section 3.1.3 and 4.1) needs to decide whether the frame can be carried as type 0
(4:2:2) or type 1 (4:2:0), with +64 when restart markers are present, and if not, why not.

Every malformed or truncated input raises :class:`JpegError`; no other exception escapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "STANDARD_HUFFMAN_TABLES",
    "Component",
    "JpegError",
    "JpegInfo",
    "JpegTruncatedError",
    "find_frame_end",
    "find_scan_end",
    "frame_size",
    "scan_jpeg",
]


class JpegError(ValueError):
    """A malformed, truncated or unsupported JPEG byte string.

    ``offset`` is the absolute index in the input where the problem was found, when known.
    """

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


class JpegTruncatedError(JpegError):
    """The input ends before the JPEG does: more bytes might complete it.

    Lets a reader that scans a window of a larger file tell "read further" from "corrupt".
    """


@dataclass(frozen=True)
class Component:
    """One frame component from the SOF header (T.81 B.2.2): id, sampling factors, table."""

    id: int
    h: int
    v: int
    tq: int


@dataclass(frozen=True)
class JpegInfo:
    """What :func:`scan_jpeg` learnt about one JPEG frame. Offsets are absolute."""

    width: int
    height: int
    sof: int
    precision: int
    components: tuple[Component, ...]
    qtables: dict[int, bytes]
    qtable_precision: dict[int, int]
    huffman_tables: dict[tuple[int, int], bytes]
    restart_interval: int
    scan_start: int
    scan_end: int
    end: int
    rfc2435_type: int | None
    incompatibility: str | None


# ---------------------------------------------------------------------------------------------
# Annex K.3 "typical" Huffman tables (T.81 tables K.3-K.6), in DHT layout: 16 code-length
# counts followed by the symbol values. Keyed (Tc class, Th id): class 0 = DC, 1 = AC;
# id 0 = luminance, 1 = chrominance. RFC 2435 appendix B rebuilds exactly these.

def _runs(*spans: tuple[int, int]) -> list[int]:
    out: list[int] = []
    for first, last in spans:
        out.extend(range(first, last + 1))
    return out


_DC_LUMA_COUNTS = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
_DC_CHROMA_COUNTS = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
_DC_SYMBOLS = list(range(12))

_AC_LUMA_COUNTS = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D]
_AC_LUMA_SYMBOLS = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61,
    0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1, 0x15, 0x52,
    0xD1, 0xF0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0A, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x25,
    0x26, 0x27, 0x28, 0x29, 0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A,
] + _runs(
    (0x43, 0x4A), (0x53, 0x5A), (0x63, 0x6A), (0x73, 0x7A), (0x83, 0x8A), (0x92, 0x9A),
    (0xA2, 0xAA), (0xB2, 0xBA), (0xC2, 0xCA), (0xD2, 0xDA), (0xE1, 0xEA), (0xF1, 0xFA),
)

_AC_CHROMA_COUNTS = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77]
_AC_CHROMA_SYMBOLS = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61,
    0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09, 0x23, 0x33,
    0x52, 0xF0, 0x15, 0x62, 0x72, 0xD1, 0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25, 0xF1, 0x17, 0x18,
    0x19, 0x1A, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A,
] + _runs(
    (0x43, 0x4A), (0x53, 0x5A), (0x63, 0x6A), (0x73, 0x7A), (0x82, 0x8A), (0x92, 0x9A),
    (0xA2, 0xAA), (0xB2, 0xBA), (0xC2, 0xCA), (0xD2, 0xDA), (0xE2, 0xEA), (0xF2, 0xFA),
)

STANDARD_HUFFMAN_TABLES: dict[tuple[int, int], bytes] = {
    (0, 0): bytes(_DC_LUMA_COUNTS + _DC_SYMBOLS),
    (1, 0): bytes(_AC_LUMA_COUNTS + _AC_LUMA_SYMBOLS),
    (0, 1): bytes(_DC_CHROMA_COUNTS + _DC_SYMBOLS),
    (1, 1): bytes(_AC_CHROMA_COUNTS + _AC_CHROMA_SYMBOLS),
}

# ---------------------------------------------------------------------------------------------
# Marker codes (T.81 table B.1).

SOI = 0xD8
EOI = 0xD9
SOS = 0xDA
DQT = 0xDB
DHT = 0xC4
DRI = 0xDD
_SOF_MARKERS = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_LOSSLESS = frozenset({0xC3, 0xC7, 0xCB, 0xCF})
_ARITHMETIC = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_HIERARCHICAL = frozenset({0xC5, 0xC6, 0xC7, 0xCD, 0xCE, 0xCF})
# Markers that stand alone, without a length field (T.81 B.1.1.3): TEM and RST0-RST7.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})

# The end of entropy-coded data (T.81 B.1.1.5): 0xFF followed by anything but a stuffed 0x00,
# a restart marker or another 0xFF (fill byte; the marker is the last 0xFF of the run).
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_FILL = re.compile(rb"\xff+")
# The search runs piece by piece: one regex call holds the GIL, and scan data dense with
# stuffed FF00 pairs is searched at only ~70 MB/s, so a piece stays a few milliseconds.
_SCAN_PIECE = 1 << 18


def _find_scan_end(data: bytes | bytearray | memoryview, start: int, n: int) -> int:
    """Offset of the marker that ends the entropy-coded data beginning at ``start``."""
    pos = start
    while pos < n - 1:
        stop = min(n, pos + _SCAN_PIECE + 1)
        found = _SCAN_END.search(data, pos, stop)
        if found is not None:
            return found.start()
        pos = stop - 1  # the last byte may start a marker that the next piece completes
    raise JpegTruncatedError(
        f"truncated JPEG: scan data starting at offset {start} has no EOI marker", start
    )


def find_scan_end(data: bytes | bytearray | memoryview, start: int, end: int) -> int | None:
    """Offset of the marker ending the entropy-coded data that begins at ``start``, searching
    ``data[start:end]`` (T.81 B.1.1.5); None when there is none yet.

    For readers of streams that get a frame piece by piece: after None, search again from
    ``end - 1`` once more bytes have come (a marker's 0xFF may be the last byte so far).
    """
    try:
        return _find_scan_end(data, start, end)
    except JpegTruncatedError:
        return None


@dataclass
class _Walk:
    """Mutable state of one marker walk."""

    sof: int | None = None
    precision: int = 0
    width: int = 0
    height: int = 0
    components: tuple[Component, ...] = ()
    restart_interval: int = 0
    scan_start: int = -1
    scans: int = 0
    first_scan: tuple[tuple[int, int, int], ...] = ()
    first_scan_params: tuple[int, int, int] = (0, 63, 0)
    huffman_all_standard: bool = True


def _u16(data: bytes | bytearray | memoryview, pos: int) -> int:
    return (data[pos] << 8) | data[pos + 1]


def _parse_dqt(seg: memoryview, pos: int, qtables: dict[int, bytes], prec: dict[int, int]) -> None:
    """DQT (T.81 B.2.4.1): one or more tables Pq/Tq + 64 (or 128) bytes in zig-zag order."""
    i = 0
    while i < len(seg):
        pq, tq = seg[i] >> 4, seg[i] & 0x0F
        if pq > 1 or tq > 3:
            raise JpegError(f"DQT at offset {pos}: invalid Pq={pq} Tq={tq}", pos)
        size = 64 * (pq + 1)
        if i + 1 + size > len(seg):
            raise JpegError(f"DQT at offset {pos}: table {tq} truncated", pos)
        qtables[tq] = bytes(seg[i + 1 : i + 1 + size])
        prec[tq] = pq
        i += 1 + size


def _parse_dht(seg: memoryview, pos: int, tables: dict[tuple[int, int], bytes], w: _Walk) -> None:
    """DHT (T.81 B.2.4.2): one or more tables Tc/Th + 16 counts + symbols."""
    i = 0
    while i < len(seg):
        if i + 17 > len(seg):
            raise JpegError(f"DHT at offset {pos}: table header truncated", pos)
        tc, th = seg[i] >> 4, seg[i] & 0x0F
        if tc > 1 or th > 3:
            raise JpegError(f"DHT at offset {pos}: invalid Tc={tc} Th={th}", pos)
        n = sum(seg[i + 1 : i + 17])
        if i + 17 + n > len(seg):
            raise JpegError(f"DHT at offset {pos}: table ({tc}, {th}) truncated", pos)
        table = bytes(seg[i + 1 : i + 17 + n])
        tables[(tc, th)] = table
        if STANDARD_HUFFMAN_TABLES.get((tc, th)) != table:
            w.huffman_all_standard = False
        i += 17 + n


def _parse_sof(marker: int, seg: memoryview, pos: int, w: _Walk) -> None:
    """SOFn (T.81 B.2.2): precision, height, width, Nf components (id, Hi/Vi, Tqi)."""
    if w.sof is not None:
        raise JpegError(f"second SOF marker at offset {pos}", pos)
    if len(seg) < 6:
        raise JpegError(f"SOF at offset {pos}: segment too short", pos)
    nf = seg[5]
    if nf == 0 or len(seg) != 6 + 3 * nf:
        raise JpegError(f"SOF at offset {pos}: length does not match {nf} components", pos)
    w.sof = marker
    w.precision = seg[0]
    w.height = _u16(seg, 1)
    w.width = _u16(seg, 3)
    if w.width == 0:
        raise JpegError(f"SOF at offset {pos}: width is 0", pos)
    if w.height == 0:
        raise JpegError(f"SOF at offset {pos}: height 0 (DNL) is not supported", pos)
    comps = []
    for k in range(nf):
        cid, hv, tq = seg[6 + 3 * k], seg[7 + 3 * k], seg[8 + 3 * k]
        h, v = hv >> 4, hv & 0x0F
        if not (1 <= h <= 4 and 1 <= v <= 4) or tq > 3:
            raise JpegError(f"SOF at offset {pos}: invalid component {cid} parameters", pos)
        comps.append(Component(cid, h, v, tq))
    w.components = tuple(comps)


def _parse_sos(seg: memoryview, pos: int, w: _Walk, qtables: dict[int, bytes]) -> None:
    """SOS (T.81 B.2.3): Ns components (id, Td/Ta), Ss, Se, Ah/Al."""
    if w.sof is None:
        raise JpegError(f"SOS at offset {pos} before any SOF", pos)
    if len(seg) < 1:
        raise JpegError(f"SOS at offset {pos}: segment too short", pos)
    ns = seg[0]
    if ns == 0 or len(seg) != 1 + 2 * ns + 3:
        raise JpegError(f"SOS at offset {pos}: length does not match {ns} components", pos)
    w.scans += 1
    if w.scans == 1:
        for c in w.components:
            if c.tq not in qtables:
                raise JpegError(
                    f"component {c.id} uses undefined quantization table {c.tq}", pos
                )
        w.first_scan = tuple(
            (seg[1 + 2 * k], seg[2 + 2 * k] >> 4, seg[2 + 2 * k] & 0x0F) for k in range(ns)
        )
        w.first_scan_params = (seg[1 + 2 * ns], seg[2 + 2 * ns], seg[3 + 2 * ns])


def _walk(
    data: bytes | bytearray | memoryview,
    start: int,
    parse: bool,
    until_sof: bool = False,
) -> tuple[_Walk, dict[int, bytes], dict[int, int], dict[tuple[int, int], bytes], int]:
    """Walk markers from SOI at ``start`` to EOI; return state, tables and the EOI offset.

    With ``until_sof`` (and not ``parse``) the walk stops at the SOF, which it parses, and
    the offset returned is the SOF's."""
    n = len(data)
    if start < 0 or start + 2 > n:
        raise JpegError(f"no JPEG data at offset {start} (input is {n} bytes)", start)
    if data[start] != 0xFF or data[start + 1] != SOI:
        raise JpegError(f"no SOI marker at offset {start}", start)
    view = memoryview(data)
    w = _Walk()
    qtables: dict[int, bytes] = {}
    qprec: dict[int, int] = {}
    huff: dict[tuple[int, int], bytes] = {}
    pos = start + 2
    while True:
        if pos >= n:
            raise JpegTruncatedError(f"truncated JPEG: no EOI marker (data ends at offset {n})", n)
        if data[pos] != 0xFF:
            raise JpegError(f"expected a marker at offset {pos}, found 0x{data[pos]:02X}", pos)
        # Skip fill bytes (T.81 B.1.1.2): any number of 0xFF may precede a marker code.
        if pos + 1 < n and data[pos + 1] == 0xFF:
            pos = _FILL.match(data, pos).end() - 1  # type: ignore[union-attr]
        if pos + 1 >= n:
            raise JpegTruncatedError(f"truncated JPEG: marker cut off at offset {pos}", pos)
        marker = data[pos + 1]
        if marker == EOI:
            if w.scans == 0:
                raise JpegError(f"EOI at offset {pos} before any SOS (no scan data)", pos)
            return w, qtables, qprec, huff, pos
        if marker == SOI:
            raise JpegError(f"unexpected SOI marker at offset {pos} inside a frame", pos)
        if marker == 0x00:
            raise JpegError(f"invalid marker FF00 at offset {pos}", pos)
        if marker in _STANDALONE:
            pos += 2
            continue
        if pos + 4 > n:
            raise JpegTruncatedError(
                f"truncated JPEG: segment FF{marker:02X} at offset {pos} cut off", pos
            )
        length = _u16(data, pos + 2)
        if length < 2:
            raise JpegError(f"segment FF{marker:02X} at offset {pos}: bad length {length}", pos)
        seg_end = pos + 2 + length
        if seg_end > n:
            raise JpegTruncatedError(
                f"truncated JPEG: segment FF{marker:02X} at offset {pos} (length {length}) "
                f"runs past the end of the data ({n} bytes)",
                pos,
            )
        seg = view[pos + 4 : seg_end]
        if marker == SOS:
            if parse:
                _parse_sos(seg, pos, w, qtables)
            elif w.sof is None:
                raise JpegError(f"SOS at offset {pos} before any SOF", pos)
            else:
                w.scans += 1
            if w.scans == 1:
                w.scan_start = seg_end
            pos = _find_scan_end(data, seg_end, n)
            continue
        if parse:
            if marker == DQT:
                _parse_dqt(seg, pos, qtables, qprec)
            elif marker == DHT:
                _parse_dht(seg, pos, huff, w)
            elif marker == DRI:
                if length != 4:
                    raise JpegError(f"DRI at offset {pos}: length {length}, expected 4", pos)
                w.restart_interval = _u16(seg, 0)
            elif marker in _SOF_MARKERS:
                _parse_sof(marker, seg, pos, w)
        elif marker in _SOF_MARKERS:
            if until_sof:
                _parse_sof(marker, seg, pos, w)
                return w, qtables, qprec, huff, pos
            w.sof = marker  # SOS only needs to know that some SOF came first
        pos = seg_end


def _incompatibility(
    w: _Walk,
    qtables: dict[int, bytes],
    qprec: dict[int, int],
) -> tuple[int | None, str | None]:
    """Decide the RFC 2435 type (section 3.1.3, 4.1) or give the reason it cannot be used."""
    sof = w.sof if w.sof is not None else 0
    if sof in _PROGRESSIVE:
        return None, "progressive JPEG"
    if sof in _LOSSLESS:
        return None, "lossless JPEG"
    if sof in _ARITHMETIC:
        return None, "arithmetic-coded JPEG"
    if sof in _HIERARCHICAL:
        return None, "hierarchical JPEG"
    if w.precision != 8:
        return None, f"{w.precision}-bit samples"
    if sof != 0xC0:
        return None, f"extended sequential JPEG (SOF{sof - 0xC0})"
    comps = w.components
    if len(comps) == 1:
        return None, "1 component (grayscale)"
    if len(comps) == 4:
        return None, "4 components (CMYK/YCCK)"
    if len(comps) != 3:
        return None, f"{len(comps)} components"
    y, cb, cr = comps
    if (cb.h, cb.v, cr.h, cr.v) != (1, 1, 1, 1) or (y.h, y.v) not in ((2, 1), (2, 2)):
        if (y.h, y.v, cb.h, cb.v, cr.h, cr.v) == (1, 1, 1, 1, 1, 1):
            return None, "4:4:4 chroma sampling"
        if (y.h, y.v) == (1, 2) and (cb.h, cb.v, cr.h, cr.v) == (1, 1, 1, 1):
            return None, "4:4:0 chroma sampling"
        if (y.h, y.v) == (4, 1) and (cb.h, cb.v, cr.h, cr.v) == (1, 1, 1, 1):
            return None, "4:1:1 chroma sampling"
        return None, (
            f"unsupported sampling factors {y.h}x{y.v}, {cb.h}x{cb.v}, {cr.h}x{cr.v}"
        )
    if cb.tq != cr.tq:
        return None, "chroma components use different quantization tables"
    if qprec.get(y.tq, 0) or qprec.get(cb.tq, 0):
        return None, "16-bit quantization tables"
    if not w.huffman_all_standard:
        return None, "optimized (non-standard) Huffman tables"
    if w.scans != 1:
        return None, f"{w.scans} scans (non-interleaved baseline)"
    expected = ((y.id, 0, 0), (cb.id, 1, 1), (cr.id, 1, 1))
    if w.first_scan != expected:
        return None, "scan does not use the standard Huffman table selection"
    if w.first_scan_params != (0, 63, 0):
        return None, "unexpected spectral selection in a baseline scan"
    base = 0 if y.v == 1 else 1
    return base + (64 if w.restart_interval > 0 else 0), None


def scan_jpeg(data: bytes | bytearray | memoryview, start: int = 0) -> JpegInfo:
    """Walk the markers of the JPEG at ``data[start]`` (SOI) through SOS to EOI.

    Offsets in the result are absolute indices into ``data``. APPn/COM segments are skipped
    by length (T.81 B.1.1.4); entropy-coded data ends at the first marker other than RSTn
    (T.81 B.1.1.5). The RFC 2435 type is decided per RFC 2435 section 3.1.3 and 4.1: baseline
    SOF0, 8-bit samples, three components sampled 2x1/2x2 + 1x1 + 1x1, one shared chroma
    quantization table, 8-bit tables and the Annex K.3 Huffman tables (or no DHT at all).

    Raises :class:`JpegError` on anything malformed or truncated.
    """
    w, qtables, qprec, huff, eoi = _walk(data, start, parse=True)
    rtype, reason = _incompatibility(w, qtables, qprec)
    return JpegInfo(
        width=w.width,
        height=w.height,
        sof=w.sof if w.sof is not None else 0,
        precision=w.precision,
        components=w.components,
        qtables=qtables,
        qtable_precision=qprec,
        huffman_tables=huff,
        restart_interval=w.restart_interval,
        scan_start=w.scan_start,
        scan_end=eoi,
        end=eoi + 2,
        rfc2435_type=rtype,
        incompatibility=reason,
    )


def find_frame_end(data: bytes | bytearray | memoryview, start: int) -> int:
    """Return the offset just past the EOI of the JPEG whose SOI is at ``data[start]``.

    For raw concatenated-JPEG streams. Same walk as :func:`scan_jpeg` (T.81 B.1.1.4/B.1.1.5)
    without decoding the table segments; raises :class:`JpegError` if there is no EOI.
    """
    _w, _q, _p, _h, eoi = _walk(data, start, parse=False)
    return eoi + 2


def frame_size(data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """``(width, height)`` from the SOF of the JPEG at ``data[0]``, reading only the headers.

    For a receiver that must know what a frame would cost before decoding it (T.81 B.2.2);
    the entropy-coded data is never looked at. Raises :class:`JpegError` if no valid SOF
    comes before the first scan.
    """
    w, _q, _p, _h, _pos = _walk(data, 0, parse=False, until_sof=True)
    return w.width, w.height
