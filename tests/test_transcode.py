"""Tests for mjpeg_rtsp.transcode: re-encoding frames RFC 2435 (section 3.1.3) cannot carry."""

from __future__ import annotations

import io
import math
import struct

import pytest
from conftest import jpeg_bytes
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageStat

from mjpeg_rtsp.jpeg import JpegError, scan_jpeg
from mjpeg_rtsp.rfc2435 import JpegDepacketizer, packetize
from mjpeg_rtsp.transcode import make_rfc2435_compatible


def scene(width: int = 96, height: int = 64) -> Image.Image:
    """A smooth, natural-ish picture: gradients and soft shapes."""
    img = Image.new("RGB", (width, height))
    img.putdata(
        [
            (40 + x * 150 // width, 60 + y * 120 // height, 200 - (x + y) * 80 // (width + height))
            for y in range(height)
            for x in range(width)
        ]
    )
    draw = ImageDraw.Draw(img)
    draw.ellipse((10, 8, 50, 48), fill=(220, 180, 60))
    draw.rectangle((55, 20, 85, 55), fill=(60, 90, 160))
    return img.filter(ImageFilter.GaussianBlur(2))


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def psnr(a: Image.Image, b: Image.Image) -> float:
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    mse = sum(rms * rms for rms in ImageStat.Stat(diff).rms) / 3
    return math.inf if mse == 0 else 10 * math.log10(255 * 255 / mse)


def sixteen_bit_tables(data: bytes) -> bytes:
    """Rewrite every 8-bit DQT table of a Pillow JPEG as a 16-bit (Pq=1) table."""
    info = scan_jpeg(data)
    out, pos = bytearray(data[:2]), 2
    while pos < info.scan_start:
        marker = data[pos + 1]
        length = struct.unpack("!H", data[pos + 2 : pos + 4])[0]
        segment = data[pos : pos + 2 + length]
        if marker == 0xDB:
            tid = segment[4] & 0x0F
            body = bytes([0x10 | tid]) + b"".join(struct.pack("!H", v) for v in segment[5:69])
            segment = b"\xff\xdb" + struct.pack("!H", len(body) + 2) + body
        out += segment
        pos += 2 + length
    return bytes(out) + data[info.scan_start :]


SOURCES = {
    "progressive": lambda: jpeg_bytes(scene(), quality=85, progressive=True),
    "optimized": lambda: jpeg_bytes(scene(), quality=85, optimize=True),
    "444": lambda: jpeg_bytes(scene(), quality=85, subsampling=0),
    "444-restart": lambda: jpeg_bytes(scene(), quality=85, subsampling=0, restart_marker_rows=1),
    "grayscale": lambda: jpeg_bytes(scene().convert("L"), quality=85),
    "cmyk": lambda: jpeg_bytes(scene().convert("CMYK"), quality=85),
    "16-bit tables": lambda: sixteen_bit_tables(jpeg_bytes(scene(), quality=85)),
}


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_incompatible_kind_becomes_compatible(kind: str) -> None:
    source = SOURCES[kind]()
    assert scan_jpeg(source).rfc2435_type is None
    result = make_rfc2435_compatible(source)
    info = scan_jpeg(result)
    assert info.rfc2435_type == 1
    assert info.restart_interval == 0
    assert decode(result).size == decode(source).size
    assert psnr(decode(source), decode(result)) >= 35
    # And it really travels: packetize, depacketize, decode.
    depay = JpegDepacketizer()
    payloads = packetize(result, info, 500)
    frames = [depay.push(p, 1, k == len(payloads) - 1) for k, p in enumerate(payloads)]
    assert frames[-1] is not None
    assert decode(frames[-1]).tobytes() == decode(result).tobytes()


def test_quality_75_tables_reused() -> None:
    source = jpeg_bytes(scene(), quality=75, progressive=True)
    result = make_rfc2435_compatible(source)
    src_q, out_q = decode(source).quantization, decode(result).quantization
    assert out_q[0] == src_q[0]
    assert out_q[1] == src_q[1]
    assert scan_jpeg(result).qtables[0] == scan_jpeg(source).qtables[0]


def test_grayscale_uses_luma_table_for_chroma() -> None:
    source = jpeg_bytes(scene().convert("L"), quality=60)
    out_q = decode(make_rfc2435_compatible(source)).quantization
    luma = decode(source).quantization[0]
    assert out_q[0] == luma and out_q[1] == luma


def test_large_table_values_are_clamped() -> None:
    source = sixteen_bit_tables(jpeg_bytes(scene(), quality=85))
    data = bytearray(source)
    at = data.find(b"\xff\xdb\x00\x83\x10")  # first 16-bit table, first entry
    data[at + 5 : at + 7] = b"\x01\x2c"  # 300: not 8-bit representable
    result = make_rfc2435_compatible(bytes(data))
    assert decode(result).quantization[0][0] == 255
    assert scan_jpeg(result).qtable_precision == {0: 0, 1: 0}


def test_already_compatible_frame_stays_compatible() -> None:
    source = jpeg_bytes(scene(), quality=90, subsampling=1)
    result = make_rfc2435_compatible(source)
    assert scan_jpeg(result).rfc2435_type == 1
    assert psnr(decode(source), decode(result)) >= 35


@pytest.mark.parametrize("data", [b"", b"not a jpeg at all", b"\xff\xd8\xff\xe0\x00\x10JFIF"])
def test_undecodable_input_raises_jpeg_error(data: bytes) -> None:
    with pytest.raises(JpegError, match="cannot decode frame for re-encoding"):
        make_rfc2435_compatible(data)


def test_truncated_progressive_raises_jpeg_error() -> None:
    source = SOURCES["progressive"]()
    with pytest.raises(JpegError):
        make_rfc2435_compatible(source[: len(source) // 3])
