"""The player's RTSP client logic, sans I/O: exact requests, replies read by header name."""

from __future__ import annotations

import hashlib

import pytest

from mjpeg_rtsp.client import (
    ClientError,
    PlayerState,
    RtspClient,
    parse_rtsp_url,
    resolve_control,
    textbook_target,
)
from mjpeg_rtsp.rtsp import NEED_DATA, Response, RtspReader


def response(data: bytes) -> Response:
    reader = RtspReader()
    reader.receive_data(data)
    event = reader.next_event()
    if event is NEED_DATA:
        event = reader.flush_textbook_message()
    assert isinstance(event, Response)
    return event


SDP = (
    "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=cam\r\nt=0 0\r\na=control:*\r\n"
    "a=range:npt=0-12.5\r\n"
    "m=video 0 RTP/AVP 96\r\na=rtpmap:96 JPEG/90000\r\na=control:track1\r\n"
    "a=framerate:25\r\na=x-dimensions:2560,1440\r\n"
)


def describe_reply(cseq: int, base: str = "rtsp://cam:8554/live/") -> bytes:
    body = SDP.encode()
    return (
        f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Base: {base}\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_parse_urls():
    target = parse_rtsp_url("rtsp://bob:s%40cret@cam.local:8554/live/main?x=1")
    assert (target.host, target.port, target.path) == ("cam.local", 8554, "/live/main")
    assert target.url == "rtsp://cam.local:8554/live/main?x=1"  # no credentials in requests
    assert (target.user, target.password) == ("bob", "s@cret")
    assert parse_rtsp_url("rtsp://[::1]/a").port == 554
    for bad in ["http://x/y", "rtsp://", "rtsp://h:99999/x"]:
        with pytest.raises(ValueError):
            parse_rtsp_url(bad)


def test_control_urls():
    assert resolve_control("rtsp://h/a/", "track1") == "rtsp://h/a/track1"
    assert resolve_control("rtsp://h/a", "track1") == "rtsp://h/a/track1"
    assert resolve_control("rtsp://h/a/", "rtsp://other/x") == "rtsp://other/x"
    assert resolve_control("rtsp://h/a/", "*") == "rtsp://h/a/"


def test_textbook_requests_are_byte_exact():
    client = RtspClient(textbook_target("127.0.0.1", 8554, 25000, "movie.Mjpeg"))
    assert client.setup("udp") == (
        b"SETUP movie.Mjpeg RTSP/1.0\nCSeq: 1\nTransport: RTP/UDP; client_port= 25000"
    )
    reply = client.receive(response(b"RTSP/1.0 200 OK\nCSeq: 1\nSession: 123456"))
    assert reply.ok and client.state is PlayerState.READY and client.session_id == "123456"
    assert client.play() == b"PLAY movie.Mjpeg RTSP/1.0\nCSeq: 2\nSession: 123456"
    client.receive(response(b"RTSP/1.0 200 OK\nCSeq: 2\nSession: 123456"))
    assert client.state is PlayerState.PLAYING
    assert client.pause() == b"PAUSE movie.Mjpeg RTSP/1.0\nCSeq: 3\nSession: 123456"
    client.receive(response(b"RTSP/1.0 200 OK\nCSeq: 3\nSession: 123456"))
    assert client.state is PlayerState.READY
    assert client.teardown() == b"TEARDOWN movie.Mjpeg RTSP/1.0\nCSeq: 4\nSession: 123456"
    client.receive(response(b"RTSP/1.0 200 OK\nCSeq: 4\nSession: 123456"))
    assert client.state is PlayerState.INIT


def test_standard_flow_reads_headers_by_name():
    client = RtspClient(parse_rtsp_url("rtsp://cam:8554/live"))
    assert client.options().startswith(b"OPTIONS rtsp://cam:8554/live RTSP/1.0\r\nCSeq: 1\r\n")
    client.receive(response(
        b"RTSP/1.0 200 OK\r\nPublic: OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER\r\n"
        b"CSeq: 1\r\n\r\n"
    ))
    assert "GET_PARAMETER" in client.public
    client.describe()
    client.receive(response(describe_reply(2)))
    media = client.media
    assert media.control_url == "rtsp://cam:8554/live/track1"
    assert media.aggregate_url == "rtsp://cam:8554/live/"
    assert media.payload_type == 96 and media.clock_rate == 90000
    assert (media.width, media.height, media.fps, media.duration) == (2560, 1440, 25.0, 12.5)
    setup = client.setup("udp", 5000)
    assert b"SETUP rtsp://cam:8554/live/track1 RTSP/1.0\r\n" in setup
    assert b"Transport: RTP/AVP;unicast;client_port=5000-5001\r\n" in setup
    # Session ids need not be numeric; the timeout is taken; header order does not matter.
    client.receive(response(
        b"RTSP/1.0 200 OK\r\nSession: Ab-12.x_y;timeout=30\r\n"
        b"Transport: RTP/AVP;unicast;client_port=5000-5001;server_port=7000-7001;ssrc=DEADBEEF\r\n"
        b"CSeq: 3\r\n\r\n"
    ))
    assert client.session_id == "Ab-12.x_y" and client.session_timeout == 30
    assert client.server_ports == (7000, 7001) and client.ssrc == 0xDEADBEEF
    play = client.play(5)
    assert b"PLAY rtsp://cam:8554/live/ RTSP/1.0\r\n" in play
    assert b"Range: npt=5.000-\r\n" in play and b"Session: Ab-12.x_y\r\n" in play
    reply = client.receive(response(
        b"RTSP/1.0 200 OK\r\nCSeq: 4\r\nRange: npt=5.000-12.500\r\n"
        b"RTP-Info: url=rtsp://cam:8554/live/track1;seq=17;rtptime=99999\r\n\r\n"
    ))
    assert reply.play_range == (5.0, 12.5)
    assert reply.rtp_info == {"url": "rtsp://cam:8554/live/track1", "seq": "17",
                              "rtptime": "99999"}
    assert client.keepalive().startswith(b"GET_PARAMETER rtsp://cam:8554/live/ RTSP/1.0\r\n")


def test_stale_and_unknown_replies_are_ignored():
    client = RtspClient(parse_rtsp_url("rtsp://cam/live"))
    client.options()
    assert client.receive(response(b"RTSP/1.0 200 OK\r\nCSeq: 7\r\n\r\n")) is None
    assert client.receive(response(b"RTSP/1.0 200 OK\r\nCSeq: x\r\n\r\n")) is None


def test_errors_are_reported_not_applied():
    client = RtspClient(parse_rtsp_url("rtsp://cam/live"))
    client.describe()
    reply = client.receive(response(b"RTSP/1.0 404 Not Found\r\nCSeq: 1\r\n\r\n"))
    assert not reply.ok and reply.response.status == 404 and client.media is None


def test_describe_without_jpeg_is_an_error():
    client = RtspClient(parse_rtsp_url("rtsp://cam/live"))
    client.describe()
    body = b"v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    data = (b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Type: application/sdp\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body
    with pytest.raises(ClientError, match="no Motion-JPEG"):
        client.receive(response(data))


def test_digest_authentication_answers_the_challenge():
    client = RtspClient(parse_rtsp_url("rtsp://alice:wonder@cam/live"))
    client.describe()
    reply = client.receive(response(
        b"RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\n"
        b'WWW-Authenticate: Digest realm="cams", nonce="abc123"\r\n\r\n'
    ))
    retry = reply.retry.decode()
    assert retry.startswith("DESCRIBE rtsp://cam/live RTSP/1.0\r\nCSeq: 2\r\n")
    ha1 = hashlib.md5(b"alice:cams:wonder").hexdigest()
    ha2 = hashlib.md5(b"DESCRIBE:rtsp://cam/live").hexdigest()
    expected = hashlib.md5(f"{ha1}:abc123:{ha2}".encode()).hexdigest()
    assert (
        'Authorization: Digest username="alice", realm="cams", nonce="abc123", '
        f'uri="rtsp://cam/live", response="{expected}"\r\n'
    ) in retry
    # The same challenge again means the password is wrong: no endless retries.
    again = client.receive(response(
        b"RTSP/1.0 401 Unauthorized\r\nCSeq: 2\r\n"
        b'WWW-Authenticate: Digest realm="cams", nonce="abc123"\r\n\r\n'
    ))
    assert again.retry is None


def test_basic_authentication():
    client = RtspClient(parse_rtsp_url("rtsp://u:p@cam/live"))
    client.options()
    reply = client.receive(response(
        b'RTSP/1.0 401 Unauthorized\r\nCSeq: 1\r\nWWW-Authenticate: Basic realm="x"\r\n\r\n'
    ))
    assert b"Authorization: Basic dTpw\r\n" in reply.retry


def test_authentication_gives_up_against_ever_new_nonces():
    client = RtspClient(parse_rtsp_url("rtsp://alice:wrong@cam/live"))
    client.describe()
    retries = 0
    for n in range(10):
        reply = client.receive(response(
            f"RTSP/1.0 401 Unauthorized\r\nCSeq: {n + 1}\r\n"
            f'WWW-Authenticate: Digest realm="cams", nonce="n{n}"\r\n\r\n'.encode()
        ))
        if reply is None or reply.retry is None:
            break
        retries += 1
    assert retries == 3
