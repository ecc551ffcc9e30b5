"""sdp.parse_announce: the SDPs real publishers send (captured from ffmpeg 5.1 and GStreamer
1.22 rtspclientsink), and the refusals, each with a reason the user can act on."""

from __future__ import annotations

import re
import socket
import subprocess
import threading

import pytest
from conftest import PEER_TIMEOUT, _missing_peer, need_tool

from mjpeg_rtsp.limits import MAX_FRAME_PIXELS
from mjpeg_rtsp.rtsp import MAX_BODY_BYTES
from mjpeg_rtsp.sdp import AnnouncedVideo, SdpError, parse_announce

# ffmpeg -re -f lavfi -i testsrc2=size=320x240:rate=25 -c:v mjpeg -huffman default
#        -f rtsp rtsp://127.0.0.1:PORT/live/cam   (Lavf59.27.100; "LIBAVFORMAT_VERSION" is as sent)
FFMPEG_ANNOUNCE = (
    "v=0\r\n"
    "o=- 0 0 IN IP4 127.0.0.1\r\n"
    "s=No Name\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "a=tool:libavformat LIBAVFORMAT_VERSION\r\n"
    "m=video 0 RTP/AVP 26\r\n"
    "b=AS:200\r\n"
    "a=control:streamid=0\r\n"
)

# The same with "-f lavfi -i sine -c:a pcm_mulaw" added: an audio stream beside the video.
FFMPEG_ANNOUNCE_WITH_AUDIO = FFMPEG_ANNOUNCE + (
    "m=audio 0 RTP/AVP 97\r\n"
    "b=AS:352\r\n"
    "a=rtpmap:97 PCMU/44100/1\r\n"
    "a=control:streamid=1\r\n"
)

# gst-launch-1.0 videotestsrc ! video/x-raw,format=I420,width=320,height=240,framerate=25/1
#   ! jpegenc ! rtspclientsink location=rtsp://127.0.0.1:PORT/live/cam   (GStreamer 1.22.0)
GST_ANNOUNCE = (
    "v=0\r\n"
    "o=- 1506745790 1 IN IP4 127.0.0.1\r\n"
    "s=Session streamed with GStreamer\r\n"
    "i=rtspclientsink\r\n"
    "t=0 0\r\n"
    "a=tool:GStreamer\r\n"
    "m=video 0 RTP/AVP 26\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "a=rtpmap:26 JPEG/90000\r\n"
    "a=framerate:25.000000\r\n"
    "a=control:stream=0\r\n"
    "a=ts-refclk:local\r\n"
    "a=mediaclk:sender\r\n"
    "a=ssrc:2190114338 cname:user2315715511@host-f8a2882c\r\n"
)

# The same at 2560x1440, 30000/1001 fps: over 2040 pixels, so a=x-dimensions.
GST_ANNOUNCE_LARGE = (
    "v=0\r\n"
    "o=- 3267280385 1 IN IP4 127.0.0.1\r\n"
    "s=Session streamed with GStreamer\r\n"
    "i=rtspclientsink\r\n"
    "t=0 0\r\n"
    "a=tool:GStreamer\r\n"
    "m=video 0 RTP/AVP 26\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "a=rtpmap:26 JPEG/90000\r\n"
    "a=framerate:29.970030\r\n"
    "a=x-dimensions:2560,1440\r\n"
    "a=control:stream=0\r\n"
    "a=ts-refclk:local\r\n"
    "a=mediaclk:sender\r\n"
    "a=ssrc:1784423917 cname:user508493922@host-8489f9b0\r\n"
)

HEAD = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\n"


def video(*lines: str, m: str = "m=video 0 RTP/AVP 26") -> str:
    return HEAD + "\r\n".join((m, *lines)) + "\r\n"


def test_ffmpeg_vector() -> None:
    assert parse_announce(FFMPEG_ANNOUNCE) == AnnouncedVideo(
        control="streamid=0", payload_type=26, clock_rate=90000,
        width=None, height=None, fps=None,
    )


def test_gstreamer_vectors() -> None:
    assert parse_announce(GST_ANNOUNCE) == AnnouncedVideo(
        control="stream=0", payload_type=26, clock_rate=90000,
        width=None, height=None, fps=25.0,
    )
    assert parse_announce(GST_ANNOUNCE_LARGE) == AnnouncedVideo(
        control="stream=0", payload_type=26, clock_rate=90000,
        width=2560, height=1440, fps=29.97003,
    )


def test_audio_is_refused_with_the_way_out() -> None:
    with pytest.raises(SdpError, match=r"audio.*publish video only \(ffmpeg -an\)"):
        parse_announce(FFMPEG_ANNOUNCE_WITH_AUDIO)
    with pytest.raises(SdpError, match="application"):
        parse_announce(video("a=control:a", "m=application 0 RTP/AVP 107"))


def test_dynamic_payload_type_with_rtpmap() -> None:
    found = parse_announce(video("a=rtpmap:96 jpeg/90000", "a=control:track1",
                                 m="m=video 0 RTP/AVP 96"))
    assert (found.payload_type, found.clock_rate, found.control) == (96, 90000, "track1")


def test_controls_as_written() -> None:
    absolute = "rtsp://127.0.0.1:8554/live/cam/trackID=0"
    assert parse_announce(video(f"a=control:{absolute}")).control == absolute
    assert parse_announce(video("a=control:*")).control == "*"
    assert parse_announce(video()).control is None
    # The session-level a=control is not the stream's.
    assert parse_announce(HEAD + "a=control:*\r\nm=video 0 RTP/AVP 26\r\n").control is None


def test_framerate_session_level_and_ignored_when_unusable() -> None:
    assert parse_announce(HEAD + "a=framerate:30\r\nm=video 0 RTP/AVP 26\r\n").fps == 30.0
    for bad in ("0", "-5", "abc", "1e9", "5000", ""):
        assert parse_announce(video(f"a=framerate:{bad}")).fps is None, bad


@pytest.mark.parametrize(
    ("sdp", "reason"),
    [
        (HEAD, "no video stream"),
        (HEAD + "m=audio 0 RTP/AVP 0\r\n", "no video stream"),
        (video("m=video 0 RTP/AVP 26"), "2 video streams"),
        (video("a=rtpmap:96 H264/90000", m="m=video 0 RTP/AVP 96"), r"H264/90000, not Motion-JPEG"),
        (video(m="m=video 0 RTP/AVP 96"), "payload type 96, not Motion-JPEG"),
        (video("a=rtpmap:26 H263/90000"), "not Motion-JPEG"),
        (video("a=rtpmap:96 H264/90000", m="m=video 0 RTP/AVP 26 96"), "formats 26 96"),
        (video("a=rtpmap:26 JPEG/8000"), "8000 Hz clock"),
        (video("a=rtpmap:50 JPEG/90000", m="m=video 0 RTP/AVP 50"), "neither"),
        (video(m="m=video 0 RTP/SAVP 26"), "RTP/SAVP"),
        (video("a=x-dimensions:wide,tall"), "not WIDTH,HEIGHT"),
        (video("a=x-dimensions:0,480"), "1..65535"),
        (video("a=x-dimensions:70000,480"), "1..65535"),
        (video("a=x-dimensions:65535,65535"), f"limit of {MAX_FRAME_PIXELS} pixels"),
        ("m=video 0 RTP/AVP 26\r\n", "no 'v=0'"),
        ("hello world", "expected '<type>=<value>'"),
        ("", "no 'v=0'"),
    ],
)
def test_refusals(sdp: str, reason: str) -> None:
    with pytest.raises(SdpError, match=reason):
        parse_announce(sdp)


def test_size_is_bounded() -> None:
    padding = "a=x-note:" + "z" * 1000 + "\r\n"
    huge = video(*[padding.strip()] * (MAX_BODY_BYTES // len(padding) + 1))
    with pytest.raises(SdpError, match=f"exceeds {MAX_BODY_BYTES}"):
        parse_announce(huge)
    # Just under the limit is parsed as usual.
    fits = video(*[padding.strip()] * (MAX_BODY_BYTES // len(padding) - 1))
    assert parse_announce(fits).payload_type == 26


# --- the peers themselves: what they announce today ------------------------------------------


class AnnounceCatcher:
    """An RTSP listener that answers OPTIONS and ANNOUNCE with 200 and refuses SETUP (461),
    keeping the ANNOUNCE body: the publisher then gives up on its own."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.body: str | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(PEER_TIMEOUT)
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(PEER_TIMEOUT)
            buffer = b""
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                while b"\r\n\r\n" in buffer:
                    head, rest = buffer.split(b"\r\n\r\n", 1)
                    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                    size = int(length.group(1)) if length else 0
                    if len(rest) < size:
                        break
                    body, buffer = rest[:size], rest[size:]
                    cseq = re.search(rb"(?im)^cseq:\s*(\d+)", head)
                    method = head.split(b" ", 1)[0]
                    status = "200 OK"
                    extra = ""
                    if method == b"ANNOUNCE":
                        self.body = body.decode()
                    elif method == b"OPTIONS":
                        extra = "Public: OPTIONS, ANNOUNCE, SETUP, RECORD, TEARDOWN\r\n"
                    elif method != b"ANNOUNCE":
                        status = "461 Unsupported Transport"
                    reply = f"RTSP/1.0 {status}\r\nCSeq: {cseq.group(1).decode() if cseq else 0}"
                    conn.sendall(f"{reply}\r\n{extra}\r\n".encode())

    def close(self) -> None:
        self.listener.close()
        self.thread.join(PEER_TIMEOUT)


def catch_announce(args_for_url) -> str:
    catcher = AnnounceCatcher()
    try:
        url = f"rtsp://127.0.0.1:{catcher.port}/live/cam"
        subprocess.run(args_for_url(url), capture_output=True, timeout=PEER_TIMEOUT,
                       stdin=subprocess.DEVNULL)
        catcher.thread.join(PEER_TIMEOUT)
    finally:
        catcher.close()
    assert catcher.body is not None, "the publisher sent no ANNOUNCE"
    return catcher.body


def test_ffmpeg_announces_what_we_take() -> None:
    ffmpeg = need_tool("ffmpeg")
    body = catch_announce(lambda url: [
        ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi",
        "-i", "testsrc2=size=320x240:rate=25", "-frames:v", "5", "-c:v", "mjpeg",
        "-huffman", "default", "-f", "rtsp", url,
    ])
    found = parse_announce(body)
    assert (found.payload_type, found.clock_rate) == (26, 90000)
    assert found.control  # ffmpeg names its stream (streamid=0)


def test_gstreamer_announces_what_we_take() -> None:
    gst = need_tool("gst-launch-1.0")
    inspect = need_tool("gst-inspect-1.0")
    if subprocess.run([inspect, "rtspclientsink"], capture_output=True).returncode != 0:
        _missing_peer("GStreamer's rtspclientsink is not installed (Debian: gstreamer1.0-rtsp)")
    body = catch_announce(lambda url: [
        gst, "-q", "videotestsrc", "num-buffers=5", "!",
        "video/x-raw,format=I420,width=2560,height=1440,framerate=30/1", "!",
        "jpegenc", "!", "rtspclientsink", f"location={url}",
    ])
    found = parse_announce(body)
    assert (found.payload_type, found.width, found.height, found.fps) == (26, 2560, 1440, 30.0)
