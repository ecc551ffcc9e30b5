"""Re-encode JPEG frames that RFC 2435 cannot carry, with Pillow.

Theory of operation
-------------------
RFC 2435 (section 3.1.3, appendix B) can only describe baseline, 8-bit, three-component
YCbCr frames with 4:2:2 or 4:2:0 sampling, two 8-bit quantization tables and the Annex K.3
Huffman tables, because the receiver rebuilds the JPEG header from a few fields. Frames
outside that (progressive, optimized Huffman, 4:4:4, grayscale, CMYK, 16-bit tables...) are
decoded with Pillow and encoded again as baseline 4:2:0 with default (standard) Huffman
tables. To keep the quality equivalent the source's own quantization tables are reused
(clamped to 1..255 so they fit 8-bit DQT entries): the luma table for Y and the chroma table
for Cb/Cr, or the luma table for both when the source has only one. Restart intervals and
metadata segments are dropped.

This is the only module of the core that imports an image library; it runs on the server
side before packetizing, never in the protocol path of the receiver.
"""

from __future__ import annotations

import io
import struct

from PIL import Image

from .jpeg import JpegError, scan_jpeg
from .limits import MAX_REENCODE_PIXELS

__all__ = ["make_rfc2435_compatible"]

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error,
                  Image.DecompressionBombError)


def _clamped(table: list[int] | tuple[int, ...]) -> list[int]:
    return [min(255, max(1, int(v))) for v in table]


def _source_tables(img: Image.Image) -> list[list[int]] | None:
    """Luma and chroma tables (natural order, as Pillow's ``qtables`` wants) of a JPEG source."""
    quant: dict[int, list[int]] = getattr(img, "quantization", None) or {}
    if not quant:
        return None
    # Pillow's JPEG plugin records each SOF component as (id, h, v, table id) in ``layer``.
    layers = getattr(img, "layer", None) or []
    ids = [entry[3] for entry in layers if len(entry) >= 4]
    luma_id = ids[0] if ids and ids[0] in quant else min(quant)
    if len(ids) >= 2 and ids[1] in quant:
        chroma_id = ids[1]
    else:
        others = sorted(k for k in quant if k != luma_id)
        chroma_id = others[0] if others else luma_id
    luma, chroma = quant[luma_id], quant[chroma_id]
    if len(luma) != 64 or len(chroma) != 64:
        return None
    return [_clamped(luma), _clamped(chroma)]


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise JpegError(
            f"frame of {width}x{height} pixels is too large to re-encode "
            f"(the limit is {max_pixels} pixels)"
        )


def encode_rfc2435(img: Image.Image, **quality_or_qtables: object) -> bytes:
    """``img`` as a JPEG that RFC 2435 carries as it is (type 1): baseline, 4:2:0, the
    standard Huffman tables that appendix B rebuilds. Give ``quality`` or ``qtables``."""
    out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", subsampling=2, optimize=False, progressive=False,
                            **quality_or_qtables)
    return out.getvalue()


def make_rfc2435_compatible(jpeg: bytes, max_pixels: int = MAX_REENCODE_PIXELS) -> bytes:
    """Re-encode a frame as baseline 3-component 4:2:0 JPEG with standard Huffman tables.

    The result can be sent as RFC 2435 type 1 (section 3.1.3): SOF0, 8-bit samples, Y 2x2,
    Cb/Cr 1x1 sharing one table, 8-bit quantization tables and the Annex K.3 Huffman tables
    that appendix B rebuilds. The source's quantization tables are reused (clamped to
    1..255); without any (non-JPEG input) Pillow's quality 75 tables are used. Restart
    intervals are dropped.

    Raises :class:`JpegError` if Pillow cannot decode the input, or if it has more than
    ``max_pixels`` pixels (checked from the header, before decoding).
    """
    if jpeg[:2] == b"\xff\xd8":
        try:
            header = scan_jpeg(jpeg)
        except JpegError as exc:
            raise JpegError(f"cannot decode frame for re-encoding: {exc}") from exc
        _check_size(header.width, header.height, max_pixels)
    try:
        with Image.open(io.BytesIO(jpeg)) as img:
            _check_size(*img.size, max_pixels)  # for input that is not a JPEG
            img.load()
            tables = _source_tables(img)
            rgb = img.convert("RGB")
    except _DECODE_ERRORS as exc:
        raise JpegError(f"cannot decode frame for re-encoding: {exc}") from exc
    if tables is not None:
        result = encode_rfc2435(rgb, qtables=tables)
    else:
        result = encode_rfc2435(rgb, quality=75)
    info = scan_jpeg(result)
    if info.rfc2435_type not in (0, 1):
        raise JpegError(f"re-encoded frame is still not RFC 2435 compatible: "
                        f"{info.incompatibility}")
    return result
