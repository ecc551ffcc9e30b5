"""The player's decode for display: draft scales, the half decode of large frames, and the
decoders' order (two threads may finish out of order; the picture on show never goes back)."""

from __future__ import annotations

from conftest import jpeg_bytes
from PIL import Image, ImageChops, ImageDraw, ImageStat

from mjpeg_rtsp.client import parse_rtsp_url
from mjpeg_rtsp.controller import ReleasedFrame
from mjpeg_rtsp.player import HALF_DECODE_PIXELS, Player, PlayerOptions, decode_for_display


def picture(size: tuple[int, int]) -> Image.Image:
    img = Image.new("RGB", size, (20, 90, 200))
    draw = ImageDraw.Draw(img)
    w, h = size
    draw.rectangle((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=(250, 240, 20))
    return img


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    diff = ImageChops.difference(a, b).convert("L")
    return ImageStat.Stat(diff).mean[0]


def test_a_large_frame_at_two_thirds_is_decoded_at_half_and_enlarged() -> None:
    source = picture((1920, 1080))
    assert 1920 * 1080 >= HALF_DECODE_PIXELS
    image, width, height = decode_for_display(jpeg_bytes(source, quality=90), (1280, 720))
    assert (width, height) == (1920, 1080) and image.size == (1280, 720)
    # The picture is the source's, scaled: the half decode loses detail, not content.
    assert mean_difference(image, source.resize((1280, 720), Image.BOX)) < 3


def test_smaller_frames_and_near_sizes_are_decoded_whole() -> None:
    source = picture((1280, 720))  # under HALF_DECODE_PIXELS
    image, *_ = decode_for_display(jpeg_bytes(source, quality=90), (853, 480))
    assert image.size == (853, 480)
    assert mean_difference(image, source.resize((853, 480), Image.BOX)) < 2
    big = picture((1920, 1080))  # shown at 0.9: whole, then shrunk
    image, *_ = decode_for_display(jpeg_bytes(big, quality=90), (1728, 972))
    assert image.size == (1728, 972)


def test_frames_decoded_out_of_order_are_shown_in_order(tmp_path) -> None:
    """Two decoders: a frame that finishes first waits for the earlier one, so pictures,
    counts and saved frames keep the release order; a frame dropped unseen (its verdict)
    lets the next one through."""
    player = Player(parse_rtsp_url("rtsp://127.0.0.1:1/none"),
                    PlayerOptions(save_frames=str(tmp_path)))
    player._running = True
    frames = {n: jpeg_bytes(picture((64 + 8 * n, 48)), quality=80) for n in range(1, 5)}
    for order in (2, 1, 4):  # decoded in this order; 3 was skipped before decoding
        player._decode_queue.put((order, ReleasedFrame(frames[order], order / 10, order)))
    player._decode_queue.put(None)
    player._decode_loop()  # this thread takes the three items in that order
    assert player.latest_frame().width == 64 + 16  # 1 and 2 are out; 4 waits for 3's verdict
    assert player.counters.frames_decoded == 2
    player._in_order.finish(3, None)  # 3's verdict: skipped
    assert player.latest_frame().width == 64 + 32
    saved = sorted(p.name for p in tmp_path.iterdir())
    assert [(tmp_path / name).read_bytes() for name in saved] == [frames[1], frames[2],
                                                                  frames[4]]
