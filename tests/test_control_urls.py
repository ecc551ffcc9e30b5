"""Control URLs (RFC 2326 C.1.1), sans I/O: the exact SETUP and PLAY requests the player
sends for each way a server may describe its stream (with or without Content-Base or
Content-Location, with or without a session-level ``a=control``, absolute, relative or
``*`` controls, base URLs with and without a trailing ``/``)."""

from __future__ import annotations

import pytest

from mjpeg_rtsp.client import RtspClient, parse_rtsp_url, resolve_control
from mjpeg_rtsp.rtsp import Response, RtspReader

UA = b"User-Agent: mjpeg-rtsp-player/0.1\r\n"


def _response(data: bytes) -> Response:
    reader = RtspReader()
    reader.receive_data(data)
    event = reader.next_event()
    assert isinstance(event, Response)
    return event


def _sdp(session_control: str | None, media_control: str | None) -> bytes:
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=cam", "t=0 0"]
    if session_control is not None:
        lines.append(f"a=control:{session_control}")
    lines += ["m=video 0 RTP/AVP 26", "a=rtpmap:26 JPEG/90000"]
    if media_control is not None:
        lines.append(f"a=control:{media_control}")
    return ("\r\n".join(lines) + "\r\n").encode()


def _describe_reply(base_headers: str, body: bytes) -> bytes:
    return (
        f"RTSP/1.0 200 OK\r\nCSeq: 1\r\n{base_headers}Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _requests(url: str, base_headers: str, session_control: str | None,
              media_control: str | None) -> tuple[bytes, bytes]:
    """(SETUP, PLAY) as sent after a DESCRIBE of ``url`` answered as given."""
    client = RtspClient(parse_rtsp_url(url))
    client.describe()
    client.receive(_response(_describe_reply(base_headers,
                                             _sdp(session_control, media_control))))
    setup = client.setup("udp", 5000)
    client.receive(_response(
        b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nSession: 42\r\n"
        b"Transport: RTP/AVP;unicast;client_port=5000-5001;server_port=7000-7001\r\n\r\n"
    ))
    return setup, client.play()


def _setup(url: str) -> bytes:
    return (f"SETUP {url} RTSP/1.0\r\nCSeq: 2\r\n"
            "Transport: RTP/AVP;unicast;client_port=5000-5001\r\n").encode() + UA + b"\r\n"


def _play(url: str) -> bytes:
    return f"PLAY {url} RTSP/1.0\r\nCSeq: 3\r\nSession: 42\r\n".encode() + UA + b"\r\n"


CASES = [
    # (id, DESCRIBEd URL, base headers, session control, media control, SETUP URL, PLAY URL)
    ("base-slash-star", "rtsp://cam:8554/live", "Content-Base: rtsp://cam:8554/live/\r\n",
     "*", "track1", "rtsp://cam:8554/live/track1", "rtsp://cam:8554/live/"),
    ("base-no-slash-star", "rtsp://cam:8554/live", "Content-Base: rtsp://cam:8554/live\r\n",
     "*", "track1", "rtsp://cam:8554/live/track1", "rtsp://cam:8554/live"),
    # VLC: the session-level control is the Content-Base itself, as an absolute URL.
    ("vlc", "rtsp://127.0.0.1:8554/vlc", "Content-Base: rtsp://127.0.0.1:8554/vlc\r\n",
     "rtsp://127.0.0.1:8554/vlc", "rtsp://127.0.0.1:8554/vlc/trackID=0",
     "rtsp://127.0.0.1:8554/vlc/trackID=0", "rtsp://127.0.0.1:8554/vlc"),
    ("absolute-session-equals-slashed-base", "rtsp://h/a", "Content-Base: rtsp://h/a/\r\n",
     "rtsp://h/a/", "t", "rtsp://h/a/t", "rtsp://h/a/"),
    # rtsp-server-perl / ffmpeg style: no Content-Base, no session-level control.
    ("no-base-no-session-control", "rtsp://127.0.0.1:8554/cam", "", None, "streamid=0",
     "rtsp://127.0.0.1:8554/cam/streamid=0", "rtsp://127.0.0.1:8554/cam"),
    ("no-base-no-session-control-slash", "rtsp://h/cam/", "", None, "streamid=0",
     "rtsp://h/cam/streamid=0", "rtsp://h/cam/"),
    ("no-base-star", "rtsp://h:554/cam", "", "*", "trackID=1",
     "rtsp://h:554/cam/trackID=1", "rtsp://h:554/cam"),
    ("base-no-session-control", "rtsp://h/x", "Content-Base: rtsp://h/x/\r\n", None, "track1",
     "rtsp://h/x/track1", "rtsp://h/x/"),
    ("content-location", "rtsp://h/x", "Content-Location: rtsp://h/y\r\n", "*", "v",
     "rtsp://h/y/v", "rtsp://h/y"),
    ("content-base-wins", "rtsp://h/x",
     "Content-Location: rtsp://h/y\r\nContent-Base: rtsp://h/z/\r\n", "*", "v",
     "rtsp://h/z/v", "rtsp://h/z/"),
    ("absolute-media-control", "rtsp://h/x", "Content-Base: rtsp://h/x/\r\n", "*",
     "rtsp://other:9000/media/v", "rtsp://other:9000/media/v", "rtsp://h/x/"),
    ("relative-session-control", "rtsp://h/x", "Content-Base: rtsp://h/x/\r\n", "all", "v",
     "rtsp://h/x/v", "rtsp://h/x/all"),
    ("no-media-control", "rtsp://h/x", "Content-Base: rtsp://h/x\r\n", "*", None,
     "rtsp://h/x", "rtsp://h/x"),
    ("star-media-control", "rtsp://h/x", "", None, "*", "rtsp://h/x", "rtsp://h/x"),
]


@pytest.mark.parametrize(("url", "base", "session", "media", "setup_url", "play_url"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_setup_and_play_urls_are_byte_exact(url, base, session, media, setup_url, play_url):
    setup, play = _requests(url, base, session, media)
    assert setup == _setup(setup_url)
    assert play == _play(play_url)


def test_pause_teardown_and_keepalive_use_the_aggregate_url_as_given():
    client = RtspClient(parse_rtsp_url("rtsp://127.0.0.1:8554/cam"))
    client.describe()
    client.receive(_response(_describe_reply("", _sdp(None, "streamid=0"))))
    assert client.pause().startswith(b"PAUSE rtsp://127.0.0.1:8554/cam RTSP/1.0\r\n")
    assert client.keepalive().startswith(b"OPTIONS rtsp://127.0.0.1:8554/cam RTSP/1.0\r\n")
    assert client.teardown().startswith(b"TEARDOWN rtsp://127.0.0.1:8554/cam RTSP/1.0\r\n")


@pytest.mark.parametrize(("base", "control", "expected"), [
    ("rtsp://h/a", "", "rtsp://h/a"),
    ("rtsp://h/a", "*", "rtsp://h/a"),
    ("rtsp://h/a/", "*", "rtsp://h/a/"),
    ("rtsp://h/a", "t1", "rtsp://h/a/t1"),
    ("rtsp://h/a/", "t1", "rtsp://h/a/t1"),
    ("rtsp://h/a/", "/t1", "rtsp://h/a/t1"),
    ("rtsp://h/a", "rtsp://h/a", "rtsp://h/a"),
    ("rtsp://h/a", "RTSP://other/b", "RTSP://other/b"),
    ("rtsp://h/a", "rtspu://other/b", "rtspu://other/b"),
])
def test_resolve_control(base, control, expected):
    assert resolve_control(base, control) == expected
