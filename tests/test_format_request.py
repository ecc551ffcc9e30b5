"""format_request in both layouts: byte-exact vectors, and the textbook bytes the course sends."""

from __future__ import annotations

import pytest

from mjpeg_rtsp.client import RtspClient, textbook_target
from mjpeg_rtsp.rtsp import NEED_DATA, Dialect, Headers, Request, RtspReader, format_request


def textbook(method: str, *fields: tuple[str, str], body: bytes = b"") -> Request:
    return Request(method, "movie.Mjpeg", Headers(fields), body, dialect=Dialect.TEXTBOOK)


def course_client_request(code: str, seq: int, rtp_port: int, session: int) -> bytes:
    """What the course's Client.sendRtspRequest writes, spelt out independently of our code."""
    request = f"{code} movie.Mjpeg RTSP/1.0\nCSeq: {seq}"
    if code == "SETUP":
        request += f"\nTransport: RTP/UDP; client_port= {rtp_port}"
    else:
        request += f"\nSession: {session}"
    return request.encode()


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (
            textbook("SETUP", ("CSeq", "1"), ("Transport", "RTP/UDP; client_port= 25000")),
            b"SETUP movie.Mjpeg RTSP/1.0\nCSeq: 1\nTransport: RTP/UDP; client_port= 25000",
        ),
        (
            textbook("PLAY", ("CSeq", "2"), ("Session", "123456")),
            b"PLAY movie.Mjpeg RTSP/1.0\nCSeq: 2\nSession: 123456",
        ),
        (
            textbook("TEARDOWN", ("CSeq", "4"), ("Session", "0")),
            b"TEARDOWN movie.Mjpeg RTSP/1.0\nCSeq: 4\nSession: 0",
        ),
        # A stale Content-Length is dropped; a body gets its own length and a blank line.
        (
            textbook("SET_PARAMETER", ("CSeq", "5"), ("Content-Length", "99"), body=b"a: b\n"),
            b"SET_PARAMETER movie.Mjpeg RTSP/1.0\nCSeq: 5\nContent-Length: 5\n\na: b\n",
        ),
        (
            textbook("PLAY", ("CSeq", "6"), ("Session", "1\r\nX: y")),
            b"PLAY movie.Mjpeg RTSP/1.0\nCSeq: 6\nSession: 1 X: y",
        ),
        (
            Request("OPTIONS", "rtsp://h/m", Headers([("CSeq", "1"), ("User-Agent", "u")])),
            b"OPTIONS rtsp://h/m RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: u\r\n\r\n",
        ),
        (
            Request("SET_PARAMETER", "rtsp://h/m",
                    Headers([("CSeq", "2"), ("Content-Length", "0")]), b"a: b\r\n"),
            b"SET_PARAMETER rtsp://h/m RTSP/1.0\r\nCSeq: 2\r\nContent-Length: 6\r\n\r\na: b\r\n",
        ),
        (
            Request("PLAY", "rtsp://h/m", Headers([("CSeq", "3"), ("Session", "a\nb")])),
            b"PLAY rtsp://h/m RTSP/1.0\r\nCSeq: 3\r\nSession: a b\r\n\r\n",
        ),
    ],
)
def test_format_request_vectors(request_: Request, expected: bytes) -> None:
    assert format_request(request_) == expected


def test_textbook_request_is_completed_by_a_quiet_socket_and_reads_back_the_same() -> None:
    request = textbook("SETUP", ("CSeq", "1"), ("Transport", "RTP/UDP; client_port= 25000"))
    reader = RtspReader()
    reader.receive_data(format_request(request))
    assert reader.next_event() is NEED_DATA  # no blank line: it never ends by itself
    assert reader.pending_textbook_message()
    assert reader.flush_textbook_message() == request


def test_the_client_sends_what_the_course_client_sends() -> None:
    client = RtspClient(textbook_target("127.0.0.1", 8554, 25000, "movie.Mjpeg"))
    assert client.setup("RTP/UDP", 25000) == course_client_request("SETUP", 1, 25000, 0)
    client.session_id = "123456"
    for seq, (code, send) in enumerate(
        [("PLAY", client.play), ("PAUSE", client.pause), ("TEARDOWN", client.teardown)], 2
    ):
        assert send() == course_client_request(code, seq, 25000, 123456)
