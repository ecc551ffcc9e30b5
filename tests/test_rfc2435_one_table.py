"""RFC 2435 3.1.8 with ONE quantization table: what ffmpeg's and VLC's packetizers send for a
JPEG whose components share a table (Q >= 128, Length 64). The depacketizer uses that table
for every component; the rebuilt frame decodes exactly like the source."""

from __future__ import annotations

import io
import random
import struct

import pytest
from conftest import jpeg_bytes
from PIL import Image

from mjpeg_rtsp.jpeg import scan_jpeg
from mjpeg_rtsp.rfc2435 import JpegDepacketizer, Rfc2435Error

# An uneven table (natural order for Pillow), so that a wrong table shows in the pixels.
TABLE = [2 + (i * 7) % 23 for i in range(64)]


def shared_table_jpeg(subsampling: int, width: int = 48, height: int = 32) -> bytes:
    rng = random.Random(7)
    img = Image.new("RGB", (width, height))
    img.putdata([(rng.randrange(256), (x * 5) % 256, (y * 9) % 256)
                 for y in range(height) for x in range(width)])
    data = jpeg_bytes(img, qtables=[TABLE], subsampling=subsampling)
    info = scan_jpeg(data)
    assert list(info.qtables) == [0] and {c.tq for c in info.components} == {0}
    assert data.count(b"\xff\xdb") == 1  # one DQT segment, as ffmpeg's encoder writes
    return data


def pixels(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB").tobytes()


def one_table_payloads(source: bytes, rtype: int, q: int = 255, size: int = 200) -> list[bytes]:
    """The payloads, byte by byte: main header, then in the first one MBZ 0, precision 0,
    length 64 and the single table (zig-zag, as in DQT), then the scan data."""
    info = scan_jpeg(source)
    scan = source[info.scan_start:info.scan_end]
    table = info.qtables[0]
    assert len(table) == 64
    payloads = []
    for offset in range(0, len(scan), size):
        head = struct.pack("!I", offset) + bytes([rtype, q, 48 // 8, 32 // 8])
        if offset == 0:
            head += b"\x00\x00\x00\x40" + table
        payloads.append(head + scan[offset:offset + size])
    assert len(payloads) > 1
    return payloads


def push_all(depay: JpegDepacketizer, payloads: list[bytes], timestamp: int) -> bytes | None:
    out = None
    for k, payload in enumerate(payloads):
        out = depay.push(payload, timestamp, k == len(payloads) - 1)
    return out


@pytest.mark.parametrize(("subsampling", "rtype"), [(2, 1), (1, 0)])  # 4:2:0, 4:2:2
def test_one_table_is_used_for_every_component(subsampling: int, rtype: int) -> None:
    source = shared_table_jpeg(subsampling)
    out = push_all(JpegDepacketizer(), one_table_payloads(source, rtype), 9000)
    assert out is not None
    table = scan_jpeg(source).qtables[0]
    assert scan_jpeg(out).qtables == {0: table, 1: table}
    assert pixels(out) == pixels(source)


def test_one_static_table_is_cached_for_its_q() -> None:
    source = shared_table_jpeg(2)
    first = one_table_payloads(source, 1, q=200)
    later = [first[0][:8] + b"\x00\x00\x00\x00" + first[0][12 + 64:], *first[1:]]
    depay = JpegDepacketizer()
    a = push_all(depay, first, 1)
    b = push_all(depay, later, 2)
    assert a is not None and a == b and depay.frames_dropped == 0
    assert pixels(b) == pixels(source)


def test_one_16_bit_table() -> None:
    table16 = bytes(range(128))
    payload = (bytes.fromhex("00 000000 01 ff 02 02") + b"\x00\x01\x00\x80" + table16
               + b"\x00")
    out = JpegDepacketizer().push(payload, 1, True)
    assert out is not None
    # Both DQT segments are 16-bit (Pq = 1), for tables 0 and 1, with the one table.
    segment = b"\xff\xdb\x00\x83"
    assert out[2:4 + 131] == segment + b"\x10" + table16
    assert out[4 + 131:6 + 262] == segment + b"\x11" + table16


def test_less_than_one_table_is_refused() -> None:
    depay = JpegDepacketizer()
    with pytest.raises(Rfc2435Error) as excinfo:
        depay.push(bytes.fromhex("00 000000 01 ff 02 02 00 00 0020") + bytes(33), 1, True)
    assert str(excinfo.value) == (
        "quantization table length 32 too short for a table (precision 0x00 needs 64 bytes)"
    )
    with pytest.raises(Rfc2435Error, match=r"length 64 too short for a table \(precision "
                                           r"0x01 needs 128 bytes\)"):
        depay.push(bytes.fromhex("00 000000 01 ff 02 02 00 01 0040") + bytes(65), 2, True)
    assert depay.frames_dropped == 2
