"""MJPEG files (both layouts, corrupt ones), VideoStream's course API, media paths, SDP."""

from __future__ import annotations

import os
import shutil

import pytest
from conftest import textbook_frames

from mjpeg_rtsp.media import (
    MediaLibrary,
    MediaNotFoundError,
    MjpegFile,
    MjpegLayout,
    UnsupportedMediaError,
)
from mjpeg_rtsp.rtsp import Dialect, Headers, Request
from mjpeg_rtsp.sdp import VideoDescription, build_sdp, parse_sdp
from mjpeg_rtsp.service import Connection, RtspService, ServerConfig
from mjpeg_rtsp.session import SessionRegistry
from VideoStream import VideoStream


def test_video_stream_course_api(media_root):
    expected = textbook_frames(media_root / "short.Mjpeg")
    stream = VideoStream(str(media_root / "short.Mjpeg"))
    assert stream.frameNbr() == 0
    got = []
    while frame := stream.nextFrame():
        got.append(frame)
        assert stream.frameNbr() == len(got)
    assert got == expected and len(got) == 40
    assert stream.nextFrame() == b""
    stream.seek(39)
    assert stream.nextFrame() == expected[39]


def test_raw_layout_gives_the_same_frames(media_root):
    textbook = MjpegFile(str(media_root / "short.Mjpeg"))
    raw = MjpegFile(str(media_root / "short.mjpeg"))
    assert textbook.index.layout is MjpegLayout.TEXTBOOK and raw.index.layout is MjpegLayout.RAW
    assert raw.frame_count == textbook.frame_count == 40
    assert (raw.width, raw.height) == (384, 288)
    for n in (0, 17, 39):
        assert raw.frame(n) == textbook.frame(n)
    with pytest.raises(IndexError):
        raw.frame(40)


@pytest.mark.parametrize("name", ["short.Mjpeg", "short.mjpeg"])
def test_reading_ahead_makes_the_next_frames_payloads_with_one_read(media_root, name,
                                                                   monkeypatch):
    reference = MjpegFile(str(media_root / name))
    expected = [reference.rtp_payloads(n, 1400) for n in range(40)]
    media = MjpegFile(str(media_root / name))
    reads = []
    real_pread = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, size, at: reads.append(size) or
                        real_pread(fd, size, at))
    media.rtp_payloads(5, 1400)  # one frame: no reading ahead
    assert len(reads) == 1
    assert media.rtp_payloads(10, 1400, ahead=8) == expected[10]
    assert len(reads) == 2  # frames 10-17 in one read
    assert [media.rtp_payloads(n, 1400) for n in range(10, 18)] == expected[10:18]
    assert len(reads) == 2  # all cached
    assert media.rtp_payloads(3, 1400, ahead=8) == expected[3]  # up to cached frame 5
    assert len(reads) == 3 and [media.rtp_payloads(n, 1400) for n in range(3, 5)] == \
        expected[3:5]
    assert media.rtp_payloads(36, 1400, ahead=8) == expected[36]  # up to the last frame
    assert [media.rtp_payloads(n, 1400) for n in range(36, 40)] == expected[36:]
    assert len(reads) == 4


def test_index_is_shared_between_opens(media_root):
    library = MediaLibrary(str(media_root))
    assert library.open("movie.Mjpeg") is library.open("/movie.Mjpeg/")


def test_reindexes_a_changed_file(tmp_path, media_root):
    shutil.copy(media_root / "short.Mjpeg", tmp_path / "a.Mjpeg")
    library = MediaLibrary(str(tmp_path))
    first = library.open("a.Mjpeg")
    frames = textbook_frames(tmp_path / "a.Mjpeg")
    with open(tmp_path / "a.Mjpeg", "wb") as f:
        for frame in frames[:10]:
            f.write(b"%05d" % len(frame) + frame)
    second = library.open("a.Mjpeg")
    assert second is not first and second.frame_count == 10


def corrupt_variants(media_root):
    good = (media_root / "short.Mjpeg").read_bytes()
    raw = (media_root / "short.mjpeg").read_bytes()
    first_len = int(good[:5])
    return {
        "truncated.Mjpeg": (good[: len(good) - 100], "truncated: frame 39"),
        "baddigits.Mjpeg": (good[: 5 + first_len] + b"12a45" + good[10 + first_len :],
                            "frame 1 at byte"),
        "wronglength.Mjpeg": (b"%05d" % (first_len - 10) + good[5:], "frame 0"),
        "garbage.mjpeg": (b"hello world, not a movie" * 10, "not a Motion-JPEG file"),
        "empty.mjpeg": (b"", "not a Motion-JPEG file"),
        "rawtruncated.mjpeg": (raw[: len(raw) // 2], "corrupt or truncated"),
        "rawjunk.mjpeg": (raw + b"junk", "unexpected bytes after frame 39"),
    }


def test_corrupt_files_give_clear_errors(tmp_path, media_root):
    for name, (data, message) in corrupt_variants(media_root).items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UnsupportedMediaError) as info:
            MjpegFile(str(tmp_path / name))
        assert message in str(info.value), (name, str(info.value))


def test_corrupt_file_is_415_on_the_wire_level(tmp_path, media_root, caplog):
    for name, (data, _) in corrupt_variants(media_root).items():
        (tmp_path / name).write_bytes(data)
    service = RtspService(MediaLibrary(str(tmp_path)), SessionRegistry(5), ServerConfig(),
                          lambda: 0.0)
    for name in corrupt_variants(media_root):
        request = Request("DESCRIBE", f"rtsp://h/{name}", Headers([("CSeq", "1")]))
        reply = service.handle(request, Connection(1, "127.0.0.1"))
        assert reply.response.status == 415
    assert "truncated" in caplog.text


@pytest.fixture
def jail(tmp_path, media_root):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    shutil.copy(media_root / "short.Mjpeg", root / "sub" / "clip.mjpeg")
    outside = tmp_path / "secret.mjpeg"
    shutil.copy(media_root / "short.Mjpeg", outside)
    (tmp_path / "passwd").write_text("root:x:0:0")
    os.symlink(outside, root / "link-out.mjpeg")
    os.symlink(tmp_path, root / "dir-out")
    os.symlink(root / "sub" / "clip.mjpeg", root / "link-in.mjpeg")
    return MediaLibrary(str(root))


@pytest.mark.parametrize(
    "path",
    [
        "../secret.mjpeg",
        "sub/../../secret.mjpeg",
        "%2e%2e/secret.mjpeg",
        "%2E%2E%2Fsecret.mjpeg",
        "..%2fsecret.mjpeg",
        "%252e%252e/secret.mjpeg",
        "/../secret.mjpeg",
        "//etc/passwd",
        "..\\secret.mjpeg",
        "link-out.mjpeg",
        "dir-out/secret.mjpeg",
        "dir-out/passwd",
        "sub/clip.mjpeg%00.txt",
        "passwd",
        "sub",
        "",
        "missing.mjpeg",
    ],
)
def test_nothing_outside_the_media_folder(jail, path):
    with pytest.raises(MediaNotFoundError):
        jail.open(path)


def test_inside_paths_resolve(jail):
    assert jail.open("sub/clip.mjpeg").frame_count == 40
    assert jail.open("/sub/clip.mjpeg").frame_count == 40
    assert jail.open("link-in.mjpeg").frame_count == 40
    assert jail.open("sub/clip%2Emjpeg").frame_count == 40


def test_sdp_exact():
    sdp = build_sdp(VideoDescription("movie.Mjpeg", 384, 288, 20, 20.0), "127.0.0.1", 1234)
    assert sdp == (
        "v=0\r\n"
        "o=- 1234 1 IN IP4 127.0.0.1\r\n"
        "s=movie.Mjpeg\r\n"
        "c=IN IP4 0.0.0.0\r\n"
        "t=0 0\r\n"
        "a=tool:mjpeg-rtsp\r\n"
        "a=type:broadcast\r\n"
        "a=control:*\r\n"
        "a=range:npt=0-20.000\r\n"
        "m=video 0 RTP/AVP 26\r\n"
        "a=rtpmap:26 JPEG/90000\r\n"
        "a=control:stream=0\r\n"
        "a=framerate:20\r\n"
    )
    parsed = parse_sdp(sdp)
    [video] = parsed.media
    assert video.kind == "video" and video.formats == ["26"]
    assert video.rtpmap() == {26: ("JPEG", 90000)}
    assert video.attribute("control") == "stream=0"
    assert parsed.attribute("range") == "npt=0-20.000"


def test_sdp_large_frames_get_x_dimensions():
    sdp = build_sdp(VideoDescription("big", 3840, 2160, 29.97, 10.0), "::1", 1)
    assert "a=x-dimensions:3840,2160\r\n" in sdp
    assert "a=framerate:29.97\r\n" in sdp
    assert "c=IN IP6 ::\r\n" in sdp


def test_textbook_dialect_is_not_affected_by_sdp(media_root):
    service = RtspService(MediaLibrary(str(media_root)), SessionRegistry(5), ServerConfig(),
                          lambda: 0.0)
    request = Request("DESCRIBE", "movie.Mjpeg", Headers([("CSeq", "4")]),
                      dialect=Dialect.TEXTBOOK)
    reply = service.handle(request, Connection(1, "127.0.0.1"))
    assert reply.response.status == 200 and reply.dialect is Dialect.TEXTBOOK
