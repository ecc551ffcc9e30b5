"""RTSP framing and formatting, both dialects, fed whole, byte by byte and split at every point."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mjpeg_rtsp.headers import (
    RangeError,
    parse_npt_range,
    parse_port_range,
    parse_session_header,
    parse_transport,
)
from mjpeg_rtsp.rtsp import (
    NEED_DATA,
    Dialect,
    Headers,
    InterleavedFrame,
    RemoteProtocolError,
    Request,
    Response,
    RtspError,
    RtspReader,
    RtspStatus,
    format_interleaved,
    format_request,
    format_response,
)

DESCRIBE = (
    b"DESCRIBE rtsp://127.0.0.1:8554/movie.Mjpeg RTSP/1.0\r\n"
    b"CSeq: 2\r\n"
    b"User-Agent: Lavf59.27.100\r\n"
    b"Accept: application/sdp\r\n"
    b"\r\n"
)
SET_PARAMETER = (
    b"SET_PARAMETER rtsp://h/movie.Mjpeg RTSP/1.0\r\nCSeq: 9\r\nContent-Length: 11\r\n\r\n"
    b"hello: 1\r\n\r"
)
TEXTBOOK_SETUP = b"SETUP movie.Mjpeg RTSP/1.0\nCSeq: 1\nTransport: RTP/UDP; client_port= 25000"
TEXTBOOK_PLAY = b"PLAY movie.Mjpeg RTSP/1.0\nCSeq: 2\nSession: 123456"
RESPONSE = b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nSession: abc;timeout=60\r\n\r\n"
INTERLEAVED = b"$\x01\x00\x04abcd"


def feed_all(chunks: list[bytes], flush: bool = False) -> list:
    reader = RtspReader()
    events = []
    for chunk in chunks:
        reader.receive_data(chunk)
        while (event := reader.next_event()) is not NEED_DATA:
            events.append(event)
    if flush:
        request = reader.flush_textbook_message()
        if request is not None:
            events.append(request)
    return events


def splits(data: bytes):
    yield [data]
    yield [bytes([b]) for b in data]
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]


def test_standard_request_every_field():
    [request] = feed_all([DESCRIBE])
    assert isinstance(request, Request)
    assert request.method == "DESCRIBE"
    assert request.target == "rtsp://127.0.0.1:8554/movie.Mjpeg"
    assert request.version == "RTSP/1.0"
    assert request.dialect is Dialect.STANDARD
    assert list(request.headers) == [
        ("CSeq", "2"), ("User-Agent", "Lavf59.27.100"), ("Accept", "application/sdp")
    ]
    assert request.headers.get("cseq") == "2" == request.cseq
    assert request.headers.get("ACCEPT") == "application/sdp"
    assert request.body == b""


@pytest.mark.parametrize("data", [DESCRIBE, SET_PARAMETER, RESPONSE, INTERLEAVED])
def test_any_split_gives_the_same_events(data):
    expected = feed_all([data])
    assert len(expected) == 1
    for chunks in splits(data):
        assert feed_all(chunks) == expected


def test_standard_request_is_not_complete_before_its_blank_line():
    reader = RtspReader()
    reader.receive_data(DESCRIBE[:-2])
    assert reader.next_event() is NEED_DATA
    assert not reader.pending_textbook_message()
    assert reader.flush_textbook_message() is None
    reader.receive_data(DESCRIBE[-2:])
    assert isinstance(reader.next_event(), Request)


def test_body_by_content_length():
    [request] = feed_all([SET_PARAMETER])
    assert request.body == b"hello: 1\r\n\r"


def test_pipelined_messages_and_interleaved_frames():
    events = feed_all([DESCRIBE + INTERLEAVED + b"\r\n" + RESPONSE + SET_PARAMETER])
    assert [type(e) for e in events] == [Request, InterleavedFrame, Response, Request]
    assert events[1] == InterleavedFrame(1, b"abcd")
    assert events[2].status == 200 and events[2].headers.get("Session") == "abc;timeout=60"


def test_textbook_request_completes_only_when_flushed():
    for chunks in splits(TEXTBOOK_SETUP):
        reader = RtspReader()
        for chunk in chunks:
            reader.receive_data(chunk)
            assert reader.next_event() is NEED_DATA
        assert reader.pending_textbook_message()
        request = reader.flush_textbook_message()
        assert request is not None
        assert request.dialect is Dialect.TEXTBOOK
        assert request.method == "SETUP" and request.target == "movie.Mjpeg"
        assert request.headers.get("Transport") == "RTP/UDP; client_port= 25000"
        assert request.cseq == "1"
        assert reader.buffered == 0


def test_textbook_request_missing_its_header_is_not_pending():
    reader = RtspReader()
    reader.receive_data(b"PLAY movie.Mjpeg RTSP/1.0\nCSeq: 2\nSess")
    assert not reader.pending_textbook_message()
    reader.receive_data(b"ion: 123456")
    assert reader.pending_textbook_message()
    assert reader.flush_textbook_message().headers.get("Session") == "123456"


def test_textbook_request_with_blank_line_needs_no_flush():
    [request] = feed_all([TEXTBOOK_PLAY + b"\n\n"])
    assert request.dialect is Dialect.TEXTBOOK and request.headers.get("Session") == "123456"


def test_textbook_request_completes_at_end_of_stream():
    reader = RtspReader()
    reader.receive_data(TEXTBOOK_PLAY)
    assert reader.next_event() is NEED_DATA
    reader.receive_data(b"")
    assert isinstance(reader.next_event(), Request)


def test_bare_target_with_crlf_is_textbook_and_url_with_lf_is_standard():
    [a] = feed_all([b"PLAY movie.Mjpeg RTSP/1.0\r\nCSeq: 2\r\nSession: 1\r\n\r\n"])
    assert a.dialect is Dialect.TEXTBOOK
    [b] = feed_all([b"OPTIONS rtsp://h/x RTSP/1.0\nCSeq: 1\n\n"])
    assert b.dialect is Dialect.STANDARD
    reader = RtspReader()
    reader.receive_data(b"OPTIONS rtsp://h/x RTSP/1.0\nCSeq: 1")
    assert not reader.pending_textbook_message()


@pytest.mark.parametrize(
    "data, status, message, fatal",
    [
        (b"GARBAGE\r\n\r\n", 400, "malformed request line 'GARBAGE'", False),
        (b"PLAY rtsp://h/a RTSP/2.0\r\nCSeq: 5\r\n\r\n", 505, "RTSP/2.0 is not supported", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "not an RTSP request (protocol 'HTTP/1.1')",
         False),
        (b"PLAY rtsp://h/a RTSP/1.0\r\nCSeq: 7\r\nno colon here\r\n\r\n", 400,
         "malformed header line 'no colon here'", False),
        (b"PLAY rtsp://h/a RTSP/1.0\r\nCSeq: 7\r\nContent-Length: x\r\n\r\n", 400,
         "invalid Content-Length 'x'", True),
        (b"PLAY rtsp://h/a RTSP/1.0\r\nContent-Length: 999999999\r\n\r\n", 413,
         "body of 999999999 bytes exceeds 65536", True),
        (b"PLAY rtsp://h/a RTSP/1.0\r\nX: \xff\r\n\r\n", 400, "message header is not valid UTF-8",
         False),
    ],
)
def test_errors_carry_status_and_message(data, status, message, fatal):
    reader = RtspReader()
    reader.receive_data(data)
    with pytest.raises(RtspError) as info:
        reader.next_event()
    assert info.value.status == status
    assert str(info.value) == message
    assert info.value.fatal is fatal


def test_error_keeps_cseq_and_the_connection_goes_on():
    reader = RtspReader()
    reader.receive_data(b"PLAY rtsp://h/a RTSP/2.0\r\nCSeq: 5\r\n\r\n" + DESCRIBE)
    with pytest.raises(RemoteProtocolError) as info:
        reader.next_event()
    assert info.value.cseq == "5"
    assert isinstance(reader.next_event(), Request)


def test_header_without_end_is_bounded():
    reader = RtspReader()
    reader.receive_data(b"OPTIONS * RTSP/1.0\r\nX-Junk: " + b"a" * 10000)
    with pytest.raises(RemoteProtocolError) as info:
        reader.next_event()
    assert info.value.fatal and "exceeds 8192 bytes" in str(info.value)


def test_too_many_headers():
    reader = RtspReader()
    reader.receive_data(b"OPTIONS * RTSP/1.0\r\n" + b"A: b\r\n" * 65 + b"\r\n")
    with pytest.raises(RemoteProtocolError, match="more than 64 header fields"):
        reader.next_event()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_raises_only_our_errors(data):
    reader = RtspReader()
    reader.receive_data(data)
    for _ in range(50):
        try:
            if reader.next_event() is NEED_DATA:
                break
        except RtspError as exc:
            if exc.fatal:
                break
    reader.flush_textbook_message()


def test_format_standard_response_exact_bytes():
    response = Response(200, Headers([("CSeq", "3"), ("Session", "42;timeout=60")]), b"v=0\r\n")
    assert format_response(response) == (
        b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nSession: 42;timeout=60\r\nContent-Length: 5\r\n\r\nv=0\r\n"
    )


def test_format_textbook_response_exact_bytes():
    response = Response(200, Headers([("CSeq", "1"), ("Server", "x")]))
    data = format_response(response, Dialect.TEXTBOOK, "98765")
    assert data == b"RTSP/1.0 200 OK\nCSeq: 1\nSession: 98765\nServer: x"
    # Exactly as the course's client parses it:
    lines = data.decode().split("\n")
    assert int(lines[0].split(" ")[1]) == 200
    assert int(lines[1].split(" ")[1]) == 1
    assert int(lines[2].split(" ")[1]) == 98765


def test_format_textbook_error_has_a_session_line():
    data = format_response(Response(404, Headers([("CSeq", "1")])), Dialect.TEXTBOOK)
    assert data == b"RTSP/1.0 404 Not Found\nCSeq: 1\nSession: 0"


def test_format_request_round_trip():
    request = Request("SETUP", "rtsp://h/a/stream=0", Headers([("CSeq", "3"), ("Transport", "x")]))
    data = format_request(request)
    assert data == b"SETUP rtsp://h/a/stream=0 RTSP/1.0\r\nCSeq: 3\r\nTransport: x\r\n\r\n"
    assert feed_all([data]) == [request]


def test_interleaved_format():
    assert format_interleaved(0, b"xyz") == b"$\x00\x00\x03xyz"
    with pytest.raises(ValueError):
        format_interleaved(256, b"")


def test_status_phrases():
    assert RtspStatus(455).phrase == "Method Not Valid in This State"
    assert RtspStatus.UNSUPPORTED_TRANSPORT == 461


def test_transport_parsing():
    [a, b] = parse_transport(
        "RTP/AVP;unicast;client_port=5000-5001;mode=\"PLAY\", RTP/AVP/TCP;interleaved=0-1"
    )
    assert a.protocol == "RTP/AVP" and a.lower_transport == "UDP"
    assert a.param("client_port") == "5000-5001" and a.param("unicast") == ""
    assert b.lower_transport == "TCP" and b.param("interleaved") == "0-1"
    [textbook] = parse_transport("RTP/UDP; client_port= 25000")
    assert textbook.lower_transport == "UDP" and textbook.param("client_port") == "25000"
    assert parse_port_range("25000") == (25000, None)
    assert parse_port_range("5000-5001") == (5000, 5001)
    with pytest.raises(ValueError):
        parse_port_range("70000")
    assert parse_session_header("12345;timeout=60") == "12345"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("npt=5-", (5.0, None)),
        ("npt=0.000-", (0.0, None)),
        ("npt=now-", (None, None)),
        ("npt=1.5-3", (1.5, 3.0)),
        ("npt=00:01:02.5-", (62.5, None)),
        ("NPT = 2 - 4", (2.0, 4.0)),
    ],
)
def test_npt_ranges(value, expected):
    assert parse_npt_range(value) == expected


@pytest.mark.parametrize("value", ["smpte=0:10:00-", "npt=5", "npt=abc-", "npt=-1-", "npt=nan-"])
def test_bad_ranges(value):
    with pytest.raises(RangeError):
        parse_npt_range(value)


def test_textbook_server_reply_completes_when_flushed():
    """The course's server replies like this, with no blank line (the player reads it)."""
    reply = b"RTSP/1.0 200 OK\nCSeq: 1\nSession: 123456"
    for chunks in splits(reply):
        reader = RtspReader()
        for chunk in chunks:
            reader.receive_data(chunk)
            assert reader.next_event() is NEED_DATA
        response = reader.flush_textbook_message()
        assert isinstance(response, Response)
        assert response.status == 200 and response.headers.get("Session") == "123456"
    reader = RtspReader()
    reader.receive_data(b"RTSP/1.0 200 OK\nCSeq: 1")
    assert not reader.pending_textbook_message()
