"""Hostile protocol input, round 2: byte-exact vectors for the sans-I/O parts (reader, header
value parsers, reply formatting, the authentication back-off), then the same classes end to
end against a real server on port 0, each followed by proof that the connection still works
and a session on it still plays."""

from __future__ import annotations

import pytest

from mjpeg_rtsp.rtsp import (
    NEED_DATA,
    Dialect,
    Headers,
    RangeError,
    Request,
    Response,
    RtspError,
    RtspReader,
    format_request,
    format_response,
    parse_npt_range,
    parse_port_range,
    valid_cseq,
    valid_session_id,
)


def events(chunks: list[bytes]) -> list:
    """Every event and error (as ``(status, message)``) the reader gives for ``chunks``."""
    reader = RtspReader()
    out: list = []
    for chunk in chunks:
        reader.receive_data(chunk)
        while True:
            try:
                event = reader.next_event()
            except RtspError as exc:
                out.append((int(exc.status), str(exc), exc.cseq))
                if exc.fatal:
                    return out
                continue
            if event is NEED_DATA:
                break
            out.append(event)
    return out


def every_split(data: bytes):
    yield [data]
    yield [bytes([b]) for b in data]
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]


# --- the reader: CR, LF and CRLF all end lines ---------------------------------------------

def options(cseq: str, *more: tuple[str, str]) -> Request:
    return Request("OPTIONS", "*", Headers([("CSeq", cseq), *more]))


@pytest.mark.parametrize("data, expected", [
    # A bare CR inside a value ends the line: the second "header" is just a header.
    (b"OPTIONS * RTSP/1.0\r\nCSeq: 3\rX-Injected: yes\r\n\r\n",
     [options("3", ("X-Injected", "yes"))]),
    # CR-only client: complete at its blank line, without waiting for more bytes.
    (b"OPTIONS * RTSP/1.0\rCSeq: 1\r\r", [options("1")]),
    (b"OPTIONS * RTSP/1.0\nCSeq: 1\n\n", [options("1")]),
    (b"OPTIONS * RTSP/1.0\r\nCSeq: 1\n\r\n", [options("1")]),
    (b"OPTIONS * RTSP/1.0\rCSeq: 1\r\r\n", [options("1")]),
    # The probe as sent: the request line is followed by a blank line, so it is a request
    # without headers, and "CSeq: 1" a second (malformed) one. Both are answered at once.
    (b"OPTIONS * RTSP/1.0\r\rCSeq: 1\r\r",
     [Request("OPTIONS", "*", Headers()), (400, "malformed request line 'CSeq: 1'", "1")]),
])
def test_every_line_end_and_any_split(data, expected):
    for chunks in every_split(data):
        assert events(chunks) == expected, chunks


def test_crlf_is_one_line_end_never_a_blank_line():
    reader = RtspReader()
    reader.receive_data(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n")
    assert reader.next_event() is NEED_DATA


def test_body_after_a_cr_blank_line_at_the_end_of_the_buffer():
    data = b"SET_PARAMETER rtsp://h/a RTSP/1.0\rCSeq: 4\rContent-Length: 2\r\r\nab"
    expected = [Request("SET_PARAMETER", "rtsp://h/a",
                        Headers([("CSeq", "4"), ("Content-Length", "2")]), b"ab")]
    for chunks in every_split(data):
        assert events(chunks) == expected


@pytest.mark.parametrize("line", [b"CSeq: 1\x00", b"X: a\x1bb", b"Session: 1\x7f", b"X: \x0c"])
def test_control_characters_in_the_header_are_refused_and_the_stream_goes_on(line):
    data = b"OPTIONS * RTSP/1.0\r\n" + line + b"\r\n\r\nOPTIONS * RTSP/1.0\r\nCSeq: 2\r\n\r\n"
    [error, request] = events([data])
    assert error[0] == 400 and error[1].startswith("control character in header block")
    assert error[2] is None  # "1\x00" is not sniffed as a CSeq to echo
    assert request == options("2")


def test_conflicting_content_lengths_are_fatal():
    [error] = events([b"PLAY rtsp://h/a RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 0\r\n"
                      b"Content-Length: 5\r\n\r\nhello"])
    assert error == (400, "conflicting Content-Length headers", "1")


def test_textbook_dialect_still_completes_on_a_quiet_socket():
    reader = RtspReader()
    reader.receive_data(b"PLAY movie.Mjpeg RTSP/1.0\nCSeq: 2\nSession: 123456")
    assert reader.next_event() is NEED_DATA
    assert reader.pending_textbook_message()
    request = reader.flush_textbook_message()
    assert request.headers.get("Session") == "123456" and request.dialect is Dialect.TEXTBOOK


# --- formatting never lets a control character through ----------------------------------

def test_format_response_replaces_control_characters():
    response = Response(454, Headers([("CSeq", "3\rX-Injected: yes"), ("Session", "a\x00\nb"),
                                      ("Unsupported", "x\r\n\r\ny")]))
    assert format_response(response) == (
        b"RTSP/1.0 454 Session Not Found\r\nCSeq: 3 X-Injected: yes\r\nSession: a b\r\n"
        b"Unsupported: x y\r\n\r\n"
    )
    assert format_response(response, Dialect.TEXTBOOK, "1\r2") == (
        b"RTSP/1.0 454 Session Not Found\nCSeq: 3 X-Injected: yes\nSession: 1 2\n"
        b"Unsupported: x y"
    )


def test_format_request_cannot_be_split_by_a_peer_supplied_url():
    request = Request("PLAY", "rtsp://h/a b\r\nX: y", Headers([("CSeq", "1\n"), ("Session", "s")]))
    assert format_request(request) == (
        b"PLAY rtsp://h/a%20b%0D%0AX:%20y RTSP/1.0\r\nCSeq: 1\r\nSession: s\r\n\r\n"
    )


def test_header_names_must_be_tokens():
    with pytest.raises(ValueError):
        format_response(Response(200, Headers([("CSeq: 1\r\nX", "y")])))


@pytest.mark.parametrize("value, expected", [
    ("1", "1"), (" 42 ", "42"), ("4294967295", "4294967295"), ("12345678901", None),
    ("3\rX", None), ("\u0661", None), ("", None), ("-1", None), ("1 2", None), (None, None),
])
def test_valid_cseq(value, expected):
    assert valid_cseq(value) == expected


@pytest.mark.parametrize("value, expected", [
    ("12345678901234567890", True), ("abc$-_.+", True), ("a" * 128, True), ("a" * 129, False),
    ("", False), ("a b", False), ("a;b", False), ("a\x00", False), ("\u00e9", False),
])
def test_valid_session_id(value, expected):
    assert valid_session_id(value) is expected


# --- header value parsers ------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("25000", (25000, None)), (" 5000 - 5001 ", (5000, 5001)), ("0", (0, None)),
    ("65535", (65535, None)),
])
def test_port_ranges(value, expected):
    assert parse_port_range(value) == expected


@pytest.mark.parametrize("value", [
    "65536", "1_000", "\u0661\u0662", "+5", "-5", "5-", "9" * 5000, "1-2-3", "", "0x10", "5 000",
])
def test_bad_port_ranges(value):
    with pytest.raises(ValueError):
        parse_port_range(value)


@pytest.mark.parametrize("value, expected", [
    ("npt=0-", (0.0, None)), ("npt=5.-", (5.0, None)), ("npt=1:02:03.5-", (3723.5, None)),
    ("npt=-7", (None, 7.0)), ("npt=" + "9" * 32 + "-", (1e32, None)),
])
def test_npt_grammar(value, expected):
    assert parse_npt_range(value) == pytest.approx(expected) if None not in expected else \
        parse_npt_range(value) == expected


@pytest.mark.parametrize("value", [
    "npt=0-1e308", "npt=1e308-", "npt=-1e308", "npt=inf-", "npt=0-inf", "npt=nan-",
    "npt=0-" + "9" * 5000, "npt=" + "9" * 33 + "-", "npt=1:1:1e308-", "npt=1:60:00-",
    "npt=1:00:60-", "npt=+5-", "npt=\u0665-", "npt=1_0-", "npt=.5-", "npt=0x10-",
    "npt=" + "9" * 5000 + ":00:00-",
])
def test_npt_values_that_overflow_or_are_not_npt(value):
    with pytest.raises(RangeError):
        parse_npt_range(value)
