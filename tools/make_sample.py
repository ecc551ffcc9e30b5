"""Generate the sample Motion-JPEG movie (``movie.Mjpeg``) from our own test pattern.

Theory of operation
-------------------
Every frame is drawn from its index alone (:func:`render_frame`), with Pillow rectangles and
ellipses only: no fonts, so the output is the same on any machine with the same Pillow and
libjpeg build. Each frame shows, at 384x288:

* colour bars along the top (y 0..40);
* the frame counter: four large seven-segment digits (index modulo 10000) on a background
  whose colour cycles with ``index % 4``, above a strip of 16 black/white cells holding the
  index in binary, most significant bit first. All of it lies inside :data:`COUNTER_BOX`,
  so a test can crop that rectangle and compare it with the reference of any frame, or read
  the number back with :func:`read_frame_number`. Neighbouring frames differ in the last
  digit, in the background colour of the whole box and in at least one bit cell;
* a clock ``mm:ss.ff`` (minutes, seconds, hundredths) of ``index / fps``;
* a grey ramp along the bottom with a ball bouncing left and right (period 4 s).

Frames are encoded as baseline JPEG, 4:2:0, with the standard Huffman tables (no
``optimize``), which is what RFC 2435 payloaders expect (type 1, no restart markers). Each
frame must fit the course client's ``recv(20480)`` together with the 12-byte RTP header; a
frame that does not is re-encoded at a lower quality. Output formats: ``textbook`` (the
course's: five ASCII digits of the length, then the JPEG) or ``raw`` (concatenated JPEGs,
as ``ffmpeg -f mjpeg`` writes).

Usage: ``python tools/make_sample.py [-o movie.Mjpeg] [--frames 400] [--fps 20]
[--size 384x288] [--format textbook|raw] [--quality 80] [--max-bytes 20468]``
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageDraw, ImageStat

log = logging.getLogger("make_sample")

#: Geometry reference size; every coordinate below is for this size and scaled otherwise.
BASE_SIZE = (384, 288)
DEFAULT_FRAMES = 400
DEFAULT_FPS = 20.0
DEFAULT_QUALITY = 80
MIN_QUALITY = 30
#: The course client reads each datagram with ``recv(20480)``: 12-byte RTP header + JPEG.
MAX_DATAGRAM = 20480
RTP_HEADER_SIZE = 12
MAX_FRAME_BYTES = MAX_DATAGRAM - RTP_HEADER_SIZE

#: (left, top, right, bottom) of the frame counter (digits, bit strip and their background)
#: at 384x288; exclusive right/bottom as in ``Image.crop``.
COUNTER_BOX = (48, 48, 336, 200)
#: Number of binary cells under the digits; cell ``i`` holds bit ``15 - i`` of the index.
COUNTER_BITS = 16

_DIGITS = (56, 56, 104, 14, 16)  # left, top, height, stroke, gap (4 digits of width 56)
_DIGIT_WIDTH = 56
_BITS_TOP, _BITS_BOTTOM, _BITS_LEFT, _BIT_WIDTH = 172, 190, 56, 17
_CLOCK_TOP, _CLOCK_HEIGHT, _CLOCK_WIDTH, _CLOCK_STROKE = 210, 26, 14, 4
_RAMP_TOP = 244
_BALL_RADIUS = 18
_BALL_PERIOD_S = 4.0

_BARS = (
    (235, 235, 235),
    (235, 235, 16),
    (16, 235, 235),
    (16, 235, 16),
    (235, 16, 235),
    (235, 16, 16),
    (16, 16, 235),
    (16, 16, 16),
)
_BOX_COLOURS = ((0, 40, 160), (160, 40, 0), (0, 120, 60), (120, 0, 120))  # neighbours differ a lot
_LIT = (255, 220, 0)
_BACKGROUND = (40, 40, 48)
_CLOCK_COLOUR = (230, 230, 230)

# Segments a..g lit for each digit (a top, b top right, c bottom right, d bottom,
# e bottom left, f top left, g middle).
_SEGMENTS = {
    "0": "abcdef",
    "1": "bc",
    "2": "abdeg",
    "3": "abcdg",
    "4": "bcfg",
    "5": "acdfg",
    "6": "acdefg",
    "7": "abc",
    "8": "abcdefg",
    "9": "abcdfg",
}


class _Scale:
    """Maps coordinates drawn for :data:`BASE_SIZE` onto the requested size."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.fx = size[0] / BASE_SIZE[0]
        self.fy = size[1] / BASE_SIZE[1]

    def box(self, left: float, top: float, right: float, bottom: float) -> tuple[int, ...]:
        return (
            round(left * self.fx),
            round(top * self.fy),
            round(right * self.fx),
            round(bottom * self.fy),
        )


def counter_box(size: tuple[int, int] = BASE_SIZE) -> tuple[int, int, int, int]:
    """:data:`COUNTER_BOX` scaled to ``size``."""
    left, top, right, bottom = _Scale(size).box(*COUNTER_BOX)
    return left, top, right, bottom


def _rect(draw: ImageDraw.ImageDraw, scale: _Scale, box: tuple[float, ...], fill) -> None:
    left, top, right, bottom = scale.box(*box)
    if right > left and bottom > top:
        draw.rectangle((left, top, right - 1, bottom - 1), fill=fill)


def _seven_segment(
    draw: ImageDraw.ImageDraw,
    scale: _Scale,
    char: str,
    x: float,
    y: float,
    width: float,
    height: float,
    stroke: float,
    fill: tuple[int, int, int],
) -> None:
    half = height / 2
    segments = {
        "a": (x, y, x + width, y + stroke),
        "b": (x + width - stroke, y, x + width, y + half),
        "c": (x + width - stroke, y + half, x + width, y + height),
        "d": (x, y + height - stroke, x + width, y + height),
        "e": (x, y + half, x + stroke, y + height),
        "f": (x, y, x + stroke, y + half),
        "g": (x, y + half - stroke / 2, x + width, y + half + stroke / 2),
    }
    for name in _SEGMENTS[char]:
        _rect(draw, scale, segments[name], fill)


def _clock_text(index: int, fps: float) -> str:
    centis = int(index * 100 / fps + 1e-6)
    minutes, centis = divmod(centis, 6000)
    seconds, centis = divmod(centis, 100)
    return f"{minutes % 100:02d}:{seconds:02d}.{centis:02d}"


def render_frame(
    index: int, fps: float = DEFAULT_FPS, size: tuple[int, int] = BASE_SIZE
) -> Image.Image:
    """Draw frame ``index`` (0-based) of the test pattern as an RGB image of ``size``."""
    if index < 0 or index >= 1 << COUNTER_BITS:
        raise ValueError(f"frame index {index} out of range 0..{(1 << COUNTER_BITS) - 1}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    scale = _Scale(size)
    image = Image.new("RGB", size, _BACKGROUND)
    draw = ImageDraw.Draw(image)
    base_w, base_h = BASE_SIZE

    bar_width = base_w / len(_BARS)
    for i, colour in enumerate(_BARS):
        _rect(draw, scale, (i * bar_width, 0, (i + 1) * bar_width, 40), colour)

    _rect(draw, scale, COUNTER_BOX, _BOX_COLOURS[index % len(_BOX_COLOURS)])
    left, top, height, stroke, gap = _DIGITS
    for i, char in enumerate(f"{index % 10000:04d}"):
        x = left + i * (_DIGIT_WIDTH + gap)
        _seven_segment(draw, scale, char, x, top, _DIGIT_WIDTH, height, stroke, _LIT)
    for i in range(COUNTER_BITS):
        bit = (index >> (COUNTER_BITS - 1 - i)) & 1
        x = _BITS_LEFT + i * _BIT_WIDTH
        colour = (255, 255, 255) if bit else (0, 0, 0)
        _rect(draw, scale, (x + 2, _BITS_TOP, x + _BIT_WIDTH - 2, _BITS_BOTTOM), colour)

    text = _clock_text(index, fps)
    advance = _CLOCK_WIDTH + 6
    narrow = 10
    total = sum(narrow if c in ":." else advance for c in text)
    x = (base_w - total) / 2
    for char in text:
        if char in ":.":
            bottom = _CLOCK_TOP + _CLOCK_HEIGHT
            dot = (x + 2, bottom - _CLOCK_STROKE, x + 2 + _CLOCK_STROKE, bottom)
            _rect(draw, scale, dot, _CLOCK_COLOUR)
            if char == ":":
                mid = _CLOCK_TOP + _CLOCK_HEIGHT / 3
                _rect(
                    draw,
                    scale,
                    (x + 2, mid, x + 2 + _CLOCK_STROKE, mid + _CLOCK_STROKE),
                    _CLOCK_COLOUR,
                )
            x += narrow
        else:
            _seven_segment(
                draw,
                scale,
                char,
                x,
                _CLOCK_TOP,
                _CLOCK_WIDTH,
                _CLOCK_HEIGHT,
                _CLOCK_STROKE,
                _CLOCK_COLOUR,
            )
            x += advance

    steps = 32
    for i in range(steps):
        level = round(255 * i / (steps - 1))
        _rect(
            draw,
            scale,
            (i * base_w / steps, _RAMP_TOP, (i + 1) * base_w / steps, base_h),
            (level, level, level),
        )
    phase = (index / fps) % _BALL_PERIOD_S / _BALL_PERIOD_S  # 0..1 over one period
    travel = 1 - abs(2 * phase - 1)  # triangle wave: 0 -> 1 -> 0
    cx = _BALL_RADIUS + travel * (base_w - 2 * _BALL_RADIUS)
    cy = (_RAMP_TOP + base_h) / 2
    ball = scale.box(cx - _BALL_RADIUS, cy - _BALL_RADIUS, cx + _BALL_RADIUS, cy + _BALL_RADIUS)
    draw.ellipse(ball, fill=(220, 40, 40), outline=(255, 255, 255), width=2)
    return image


def read_frame_number(image: Image.Image) -> int:
    """Read the frame index back from the binary strip of a rendered (and decoded) frame.

    Works on any size produced by :func:`render_frame`; each cell's centre is thresholded
    at mid-grey, so JPEG artefacts do not matter.
    """
    scale = _Scale(image.size)
    grey = image.convert("L")
    value = 0
    for i in range(COUNTER_BITS):
        x = _BITS_LEFT + i * _BIT_WIDTH
        cell = scale.box(x + 5, _BITS_TOP + 4, x + _BIT_WIDTH - 5, _BITS_BOTTOM - 4)
        mean = ImageStat.Stat(grey.crop(cell)).mean[0]
        value = (value << 1) | (mean >= 128)
    return value


def encode_frame(image: Image.Image, quality: int = DEFAULT_QUALITY) -> bytes:
    """Baseline JPEG, 4:2:0, standard Huffman tables (RFC 2435 type 1 compatible)."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, subsampling=2, optimize=False, progressive=False)
    return buffer.getvalue()


def encode_fitting(image: Image.Image, quality: int, limit: int = MAX_FRAME_BYTES) -> bytes:
    """Encode at ``quality``, stepping down by 5 until the JPEG is at most ``limit`` bytes."""
    while True:
        data = encode_frame(image, quality)
        if len(data) <= limit:
            return data
        if quality - 5 < MIN_QUALITY:
            raise ValueError(f"frame of {len(data)} bytes at quality {quality} exceeds {limit}")
        log.info("frame of %d bytes at quality %d too big, retrying", len(data), quality)
        quality -= 5


def generate(
    frames: int = DEFAULT_FRAMES,
    fps: float = DEFAULT_FPS,
    size: tuple[int, int] = BASE_SIZE,
    quality: int = DEFAULT_QUALITY,
    max_bytes: int = MAX_FRAME_BYTES,
) -> Iterator[bytes]:
    """Yield the JPEG of every frame, each at most ``max_bytes`` long."""
    for index in range(frames):
        yield encode_fitting(render_frame(index, fps, size), quality, max_bytes)


def write_movie(path: Path, jpegs: Iterator[bytes], fmt: str = "textbook") -> tuple[int, int]:
    """Write frames in ``fmt`` ("textbook" or "raw"); return (frame count, largest frame)."""
    count = largest = 0
    with open(path, "wb") as out:
        for data in jpegs:
            if fmt == "textbook":
                if len(data) > 99999:
                    raise ValueError(f"frame of {len(data)} bytes needs more than 5 digits")
                out.write(b"%05d" % len(data))
            out.write(data)
            count += 1
            largest = max(largest, len(data))
    return count, largest


def _parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 384x288, got {text!r}") from None
    # RFC 2435 section 3.1.5/3.1.6 carries width and height in units of 8 pixels, max 2040.
    if not (8 <= width <= 2040 and 8 <= height <= 2040) or width % 8 or height % 8:
        raise argparse.ArgumentTypeError(
            f"size {text}: width and height must be multiples of 8 in 8..2040 (RFC 2435)"
        )
    return width, height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("movie.Mjpeg"))
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES)
    parser.add_argument("--fps", type=float, default=DEFAULT_FPS)
    parser.add_argument("--size", type=_parse_size, default=BASE_SIZE)
    parser.add_argument("--format", choices=("textbook", "raw"), default="textbook")
    parser.add_argument("--quality", type=int, default=DEFAULT_QUALITY)
    parser.add_argument(
        "--max-bytes",
        type=int,
        default=None,
        help="largest JPEG allowed (default for the textbook format: the course client's "
        "recv(20480) minus the 12-byte RTP header; no limit for raw)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.frames <= 1 << COUNTER_BITS:
        parser.error(f"--frames must be in 1..{1 << COUNTER_BITS}")
    if args.fps <= 0:
        parser.error("--fps must be positive")
    if not MIN_QUALITY <= args.quality <= 95:
        parser.error(f"--quality must be in {MIN_QUALITY}..95")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    max_bytes = args.max_bytes
    if max_bytes is None:
        max_bytes = MAX_FRAME_BYTES if args.format == "textbook" else 99999999
    jpegs = generate(args.frames, args.fps, args.size, args.quality, max_bytes)
    try:
        count, largest = write_movie(args.output, jpegs, args.format)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    log.info(
        "wrote %s: %d frames, %d bytes, largest frame %d bytes",
        args.output,
        count,
        args.output.stat().st_size,
        largest,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
