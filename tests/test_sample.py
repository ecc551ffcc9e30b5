"""The sample movie (movie.Mjpeg) and its generator tools/make_sample.py."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat, JpegImagePlugin

ROOT = Path(__file__).resolve().parent.parent
MOVIE = ROOT / "movie.Mjpeg"
RECV_SIZE = 20480  # the course client's rtpSocket.recv(20480)
RTP_HEADER = 12

_spec = importlib.util.spec_from_file_location("make_sample", ROOT / "tools" / "make_sample.py")
assert _spec is not None and _spec.loader is not None
make_sample = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_sample)

# Annex K.3 luminance DC Huffman table as it appears in a DHT segment (class 0, id 0).
STANDARD_DC_LUMINANCE = bytes.fromhex("00 00 01 05 01 01 01 01 01 01 00 00 00 00 00 00 00") + bytes(
    range(12)
)


def split_textbook(data: bytes) -> list[bytes]:
    """Independent reader: 5 ASCII digits of length, then that many JPEG bytes, repeated."""
    frames = []
    offset = 0
    while offset < len(data):
        prefix = data[offset : offset + 5]
        assert len(prefix) == 5 and prefix.isdigit(), f"bad length prefix at {offset}: {prefix!r}"
        length = int(prefix)
        frame = data[offset + 5 : offset + 5 + length]
        assert len(frame) == length, f"frame at {offset} truncated"
        frames.append(frame)
        offset += 5 + length
    return frames


def markers(jpeg: bytes) -> list[int]:
    """Marker codes of the JPEG header segments, from SOI up to and including SOS."""
    assert jpeg[:2] == b"\xff\xd8"
    found = [0xD8]
    offset = 2
    while offset < len(jpeg):
        assert jpeg[offset] == 0xFF, f"no marker at {offset}"
        code = jpeg[offset + 1]
        found.append(code)
        if code == 0xDA:
            return found
        offset += 2 + int.from_bytes(jpeg[offset + 2 : offset + 4], "big")
    raise AssertionError("no SOS marker")


@pytest.fixture(scope="module")
def frames() -> list[bytes]:
    return split_textbook(MOVIE.read_bytes())


@pytest.fixture(scope="module")
def decoded(frames: list[bytes]) -> list[Image.Image]:
    images = []
    for frame in frames:
        image = Image.open(io.BytesIO(frame))
        image.load()
        images.append(image)
    return images


def test_frame_count_and_sizes(frames: list[bytes]) -> None:
    assert len(frames) == 400
    largest = max(len(frame) for frame in frames)
    assert largest + RTP_HEADER <= RECV_SIZE
    assert all(frame.endswith(b"\xff\xd9") for frame in frames)


def test_every_frame_is_baseline_420_384x288(frames: list[bytes]) -> None:
    for frame in frames:
        image = Image.open(io.BytesIO(frame))
        assert image.format == "JPEG"
        assert image.size == (384, 288)
        assert image.mode == "RGB"
        assert JpegImagePlugin.get_sampling(image) == 2  # 4:2:0
        assert "progressive" not in image.info and "progression" not in image.info
        codes = markers(frame)
        assert 0xC0 in codes  # SOF0: baseline DCT
        assert not {0xC1, 0xC2, 0xC3, 0xDD} & set(codes)  # no other SOF, no restart interval
        assert STANDARD_DC_LUMINANCE in frame[: frame.index(b"\xff\xda")]


def test_first_frame_matches_reference(decoded: list[Image.Image]) -> None:
    reference = make_sample.render_frame(0, 20, (384, 288))
    reencoded = Image.open(io.BytesIO(make_sample.encode_frame(reference)))
    box = make_sample.COUNTER_BOX
    # against the reference through the same JPEG encoder: equal up to encoder differences
    assert max(ImageStat.Stat(ImageChops.difference(decoded[0], reencoded)).mean) < 1.0
    # against the drawn pixels: only JPEG loss, which 4:2:0 puts mostly in the chroma
    luma = ImageChops.difference(decoded[0].convert("L"), reference.convert("L"))
    assert ImageStat.Stat(luma).mean[0] < 3.0
    assert ImageStat.Stat(luma.crop(box)).mean[0] < 3.0
    assert max(ImageStat.Stat(ImageChops.difference(decoded[0], reference)).mean) < 8.0


def _box_difference(a: Image.Image, b: Image.Image) -> float:
    box = make_sample.COUNTER_BOX
    return sum(ImageStat.Stat(ImageChops.difference(a.crop(box), b.crop(box))).mean) / 3


def test_counter_region_differs_between_neighbours(decoded: list[Image.Image]) -> None:
    smallest = min(_box_difference(a, b) for a, b in zip(decoded, decoded[1:], strict=False))
    assert smallest > 35


def test_counter_region_identifies_the_frame(decoded: list[Image.Image]) -> None:
    for index in (0, 1, 9, 10, 42, 199, 200, 398, 399):
        own = make_sample.render_frame(index, 20, (384, 288))
        distance = _box_difference(decoded[index], own)
        for other in (index - 1, index + 1):
            if 0 <= other < 400:
                reference = make_sample.render_frame(other, 20, (384, 288))
                assert distance < _box_difference(decoded[index], reference) / 4


def test_frame_number_reads_back(decoded: list[Image.Image]) -> None:
    assert [make_sample.read_frame_number(image) for image in decoded] == list(range(400))


def test_counter_box_constant() -> None:
    assert make_sample.COUNTER_BOX == (48, 48, 336, 200)
    assert make_sample.counter_box((384, 288)) == make_sample.COUNTER_BOX
    assert make_sample.counter_box((768, 576)) == (96, 96, 672, 400)


def test_render_is_deterministic_and_moves() -> None:
    first = make_sample.render_frame(7, 20, (384, 288))
    assert first.tobytes() == make_sample.render_frame(7, 20, (384, 288)).tobytes()
    outside = (0, 244, 384, 288)  # the ball moves along the bottom band
    later = make_sample.render_frame(8, 20, (384, 288))
    assert first.crop(outside).tobytes() != later.crop(outside).tobytes()


def test_clock_text() -> None:
    assert make_sample._clock_text(0, 20) == "00:00.00"
    assert make_sample._clock_text(42, 20) == "00:02.10"
    assert make_sample._clock_text(399, 20) == "00:19.95"
    assert make_sample._clock_text(1201, 20) == "01:00.05"
    assert make_sample._clock_text(1, 30) == "00:00.03"


def test_cli_textbook_is_reproducible(tmp_path: Path) -> None:
    outputs = []
    for name in ("a.Mjpeg", "b.Mjpeg"):
        path = tmp_path / name
        assert make_sample.main(["-o", str(path), "--frames", "5"]) == 0
        outputs.append(path.read_bytes())
    assert outputs[0] == outputs[1]
    assert len(split_textbook(outputs[0])) == 5


def test_cli_raw_and_other_size(tmp_path: Path) -> None:
    path = tmp_path / "raw.mjpeg"
    arguments = ["-o", str(path), "--frames", "3", "--format", "raw", "--size", "192x144"]
    assert make_sample.main(arguments) == 0
    data = path.read_bytes()
    starts = [i for i in range(len(data) - 2) if data[i : i + 3] == b"\xff\xd8\xff"]
    assert starts[0] == 0 and len(starts) == 3
    for number, start in enumerate(starts):
        end = starts[number + 1] if number + 1 < len(starts) else len(data)
        image = Image.open(io.BytesIO(data[start:end]))
        assert image.size == (192, 144)
        assert make_sample.read_frame_number(image) == number


def test_cli_rejects_bad_size(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        make_sample.main(["-o", str(tmp_path / "x"), "--size", "383x288"])


def test_oversized_frames_are_reencoded_smaller() -> None:
    image = make_sample.render_frame(0, 20, (384, 288))
    full = make_sample.encode_frame(image, 80)
    fitted = make_sample.encode_fitting(image, 80, limit=len(full) - 1)
    assert len(fitted) < len(full)
    with pytest.raises(ValueError):
        make_sample.encode_fitting(image, 80, limit=100)
