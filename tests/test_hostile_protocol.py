"""Hostile protocol input, round 2: byte-exact vectors for the sans-I/O parts (reader, header
value parsers, reply formatting, the authentication back-off), then the same classes end to
end against a real server on port 0, each followed by proof that the connection still works
and a session on it still plays."""

from __future__ import annotations

import re
import socket

import pytest
from conftest import RtspTestClient, arrivals_after_drain, udp_pair, wait_for
from test_textbook import TextbookClient

from mjpeg_rtsp.auth import AuthBackoff, digest_ha1, digest_response
from mjpeg_rtsp.headers import (
    RangeError,
    parse_npt_range,
    parse_port_range,
    valid_cseq,
    valid_session_id,
)
from mjpeg_rtsp.rtsp import (
    NEED_DATA,
    Dialect,
    Headers,
    Request,
    Response,
    RtspError,
    RtspReader,
    format_request,
    format_response,
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


# --- the authentication back-off, with injected times ---------------------------------------

def test_backoff_after_free_failures_doubles_up_to_the_cap():
    backoff = AuthBackoff(free_failures=3, window=10, base_delay=1, max_delay=4)
    assert [backoff.failed("a", 0.0), backoff.failed("a", 0.1)] == [0.0, 0.0]
    assert backoff.retry_after("a", 0.1) == 0.0
    assert backoff.failed("a", 0.2) == 1.0  # the third failure shuts it out for 1 s
    assert backoff.retry_after("a", 0.7) == pytest.approx(0.5)
    assert backoff.retry_after("b", 0.7) == 0.0  # another address is not affected
    assert backoff.retry_after("a", 1.2) == 0.0
    assert [backoff.failed("a", t) for t in (1.3, 3.4, 7.5, 11.6)] == [2.0, 4.0, 4.0, 4.0]
    assert backoff.retry_after("a", 15.0) == pytest.approx(0.6)


def test_backoff_forgets_after_a_quiet_window_and_on_success():
    backoff = AuthBackoff(free_failures=2, window=10, base_delay=5, max_delay=5)
    backoff.failed("a", 0.0)
    assert backoff.failed("a", 1.0) == 5.0  # shut out until 6.0
    assert backoff.retry_after("a", 15.9) == 0.0 and len(backoff) == 1  # within 10 s of 6.0
    assert backoff.failed("a", 15.9) == 5.0  # still counted: the third failure
    assert backoff.retry_after("a", 31.0) == 0.0 and len(backoff) == 0  # 10 s after 20.9
    assert backoff.failed("a", 31.0) == 0.0  # a fresh start
    backoff.failed("b", 31.0)
    assert backoff.failed("b", 31.1) == 5.0
    backoff.succeeded("b")
    assert backoff.retry_after("b", 31.2) == 0.0 and backoff.failed("b", 31.2) == 0.0


def test_backoff_memory_is_bounded_least_recent_first():
    backoff = AuthBackoff(free_failures=1, window=100, base_delay=10, max_delay=10,
                          max_addresses=3)
    for i, address in enumerate(["a", "b", "c", "d"]):
        backoff.failed(address, float(i))
    assert len(backoff) == 3
    assert backoff.retry_after("a", 4.0) == 0.0  # forgotten first
    assert backoff.retry_after("d", 4.0) == pytest.approx(9.0)


def test_backoff_never_computes_huge_powers():
    backoff = AuthBackoff(free_failures=1, window=1e9, base_delay=1, max_delay=60)
    for i in range(2000):
        delay = backoff.failed("a", float(i))
    assert delay == 60.0


# --- end to end: every malformed request answered, the connection and its session live on ----

def raw_reply(client: RtspTestClient, data: bytes) -> Response:
    client.send(data)
    return client.response()


def play_interleaved(client: RtspTestClient) -> str:
    reply = client.request("SETUP", "movie.Mjpeg/stream=0",
                           Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
    assert reply.status == 200, reply
    session = reply.headers.get("Session").split(";")[0]
    assert client.request("PLAY", "movie.Mjpeg", Session=session).status == 200
    return session


def still_playing(client: RtspTestClient, session: str) -> None:
    """The same connection answers a normal request and more RTP keeps coming on it."""
    reply = client.request("GET_PARAMETER", "movie.Mjpeg", Session=session)
    assert reply.status == 200 and reply.headers.get("CSeq") == str(client.cseq)
    count = len(client.frames)
    assert len(client.interleaved(count + 5)) >= count + 5


HOSTILE = [
    # (the request, the status it must get)
    (b"DESCRIBE rtsp://h/%ff.Mjpeg RTSP/1.0\r\nCSeq: 50\r\n\r\n", 400),
    (b"DESCRIBE rtsp://h/%c0%ae%c0%ae/x.Mjpeg RTSP/1.0\r\nCSeq: 50\r\n\r\n", 400),
    (b"DESCRIBE rtsp://h/%e2%82.Mjpeg RTSP/1.0\r\nCSeq: 50\r\n\r\n", 400),
    (b"DESCRIBE rtsp://[::1/x RTSP/1.0\r\nCSeq: 50\r\n\r\n", 400),
    (b"DESCRIBE rtsp:///movie.Mjpeg RTSP/1.0\r\nCSeq: 50\r\n\r\n", 400),
    (b"OPTIONS * RTSP/1.0\r\nCSeq: " + b"9" * 5000 + b"\r\n\r\n", 400),
    (b"OPTIONS * RTSP/1.0\r\nCSeq: \xd9\xa1\r\n\r\n", 400),
    (b"OPTIONS * RTSP/1.0\r\nCSeq: 50\r\nSession: " + b"9" * 5000 + b"\r\n\r\n", 454),
    (b"OPTIONS * RTSP/1.0\r\nCSeq: 50\r\nSession: a b;c\r\n\r\n", 454),
    (b"OPTIONS * RTSP/1.0\r\nCSeq: 50\r\nRequire: x\rX-Injected: yes\r\n\r\n", 551),
    (b"OPTIONS * RTSP/1.0\r\nCSeq: 50\r\nX: \x00\r\n\r\n", 400),
    (b"OPTIONS * RTSP/1.0\r\nCSeq: 50\r\nScale: 1e999\r\nSpeed: -nan\r\n\r\n", 200),
] + [
    (b"SETUP rtsp://h/short.Mjpeg/stream=0 RTSP/1.0\r\nCSeq: 50\r\nTransport: " + t + b"\r\n\r\n",
     461)
    for t in [
        b"RTP/AVP;unicast;client_port=65535", b"RTP/AVP;unicast;client_port=65535-65536",
        b"RTP/AVP;unicast;client_port=0-1", b"RTP/AVP;unicast;client_port=5001-5000",
        b"RTP/AVP;unicast;client_port=" + b"9" * 5000, b"RTP/AVP;unicast;client_port=1_000",
        b"RTP/AVP;unicast;client_port=\xd9\xa1\xd9\xa2", b"RTP/AVP;unicast;client_port=-5",
        b"RTP/AVP/TCP;interleaved=255", b"RTP/AVP/TCP;interleaved=5-3",
        b"RTP/AVP/TCP;interleaved=7-7", b"RTP/AVP/TCP;interleaved=300-301",
        b"RTP/AVP/UDP/X;client_port=5000-5001", b"RTP/AVPF;client_port=5000-5001",
        b"RTP/AVP;multicast;ttl=99999999999999999999", b";;;,,,",
    ]
] + [
    (b"PLAY rtsp://h/movie.Mjpeg RTSP/1.0\r\nCSeq: 50\r\nSession: SESSION\r\nRange: " + r
     + b"\r\n\r\n", 457)
    for r in [
        b"npt=0-1e308", b"npt=1e308-", b"npt=-1e308", b"npt=0-" + b"9" * 5000, b"npt=inf-",
        b"npt=nan-", b"npt=99999999999999999999-", b"npt=1:1:1e308-", b"smpte=0:00:00-",
        b"npt=" + b"9" * 5000 + b":00:00-",
    ]
]


def test_hostile_requests_get_a_status_and_the_session_plays_on(server):
    client = RtspTestClient(server.port)
    try:
        session = play_interleaved(client)
        for data, status in HOSTILE:
            data = data.replace(b"SESSION", session.encode())
            reply = raw_reply(client, data)
            assert reply.status == status, (data[:120], reply)
            cseq = reply.headers.get("CSeq")
            assert cseq in ("50", "0"), (data[:120], reply)
            assert reply.headers.get("X-Injected") is None
            session_echo = reply.headers.get("Session")
            assert session_echo is None or session_echo.split(";")[0] == session
            reply = client.request("OPTIONS", "*")
            assert reply.status == 200 and reply.headers.get("CSeq") == str(client.cseq)
        still_playing(client, session)
        assert len(server.registry) == 1
    finally:
        client.close()


def test_injected_header_is_never_echoed_and_cr_only_requests_are_answered_at_once(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        for data in [b"OPTIONS * RTSP/1.0\r\nCSeq: 3\rX-Injected: yes\r\n\r\n",
                     b"OPTIONS * RTSP/1.0\rCSeq: 4\rSession: 1\rX-Injected: yes\r\r",
                     b"OPTIONS * RTSP/1.0\rCSeq: 5\r\r"]:
            sock.sendall(data)
            reply = b""
            while not reply.endswith(b"\r\n\r\n"):  # within the 5 s timeout, not the idle one
                chunk = sock.recv(65536)
                assert chunk, "connection closed"
                reply += chunk
            assert b"X-Injected" not in reply and reply.count(b"\r") == reply.count(b"\r\n")
            assert re.search(rb"^CSeq: \d\r$", reply, re.M), reply
        # The literal probe: a request line followed by a blank line, then "CSeq: 1\r\r".
        sock.sendall(b"OPTIONS * RTSP/1.0\r\rCSeq: 1\r\r")
        reader = RtspReader()
        replies: list = []
        while len(replies) < 2:
            reader.receive_data(sock.recv(65536))
            while (event := reader.next_event()) is not NEED_DATA:
                replies.append(event)
        assert [r.status for r in replies] == [400, 400]
        assert [r.headers.get("CSeq") for r in replies] == ["0", "1"]


# --- what cannot be delivered is refused at SETUP; a re-SETUP moves the stream ------------

def setup_udp(client: RtspTestClient, rtp: socket.socket, session: str | None = None):
    port = rtp.getsockname()[1]
    extra = {"Session": session} if session else {}
    return client.request("SETUP", "movie.Mjpeg/stream=0",
                          Transport=f"RTP/AVP;unicast;client_port={port}-{port + 1}", **extra)


def test_client_port_65535_is_refused_and_65534_accepted(server, rtsp_client):
    client = rtsp_client(server.port)
    reply = client.request("SETUP", "movie.Mjpeg/stream=0",
                           Transport="RTP/AVP;unicast;client_port=65535")
    assert reply.status == 461 and reply.headers.get("Session") is None
    assert len(server.registry) == 0
    reply = client.request("SETUP", "movie.Mjpeg/stream=0",
                           Transport="RTP/AVP;unicast;client_port=65534")
    assert reply.status == 200
    assert "client_port=65534-65535;" in reply.headers.get("Transport")
    reply = client.request("SETUP", "movie.Mjpeg", Transport="RTP/UDP;client_port=65535")
    assert reply.status == 200  # no RTCP port: the textbook profile may use the last one
    assert reply.headers.get("Transport").startswith("RTP/UDP;unicast;client_port=65535;")


def test_resetup_refused_while_playing_and_applied_when_paused(server, rtsp_client):
    client = rtsp_client(server.port)
    old_rtp, old_rtcp = udp_pair()
    new_rtp, new_rtcp = udp_pair()
    try:
        reply = setup_udp(client, old_rtp)
        session = reply.headers.get("Session").split(";")[0]
        assert client.request("PLAY", "movie.Mjpeg", Session=session).status == 200
        assert arrivals_after_drain(old_rtp, 0.3) > 0
        # Playing: SETUP is refused (RFC 2326 A.2 and 10.4), the stream stays where it was.
        assert setup_udp(client, new_rtp, session).status == 455
        assert arrivals_after_drain(old_rtp, 0.3) > 0
        assert arrivals_after_drain(new_rtp, 0.1) == 0
        # Paused: the new transport is applied; the next PLAY sends there and only there.
        assert client.request("PAUSE", "movie.Mjpeg", Session=session).status == 200
        reply = setup_udp(client, new_rtp, session)
        assert reply.status == 200
        port = new_rtp.getsockname()[1]
        assert f"client_port={port}-{port + 1};" in reply.headers.get("Transport")
        assert client.request("PLAY", "movie.Mjpeg", Session=session).status == 200
        assert arrivals_after_drain(new_rtp, 0.3) > 0
        assert arrivals_after_drain(old_rtp, 0.3) == 0
    finally:
        for sock in (old_rtp, old_rtcp, new_rtp, new_rtcp):
            sock.close()


# --- session slots: per connection, and idle textbook sessions ---------------------------

def test_one_connection_cannot_hold_every_session_slot(server_factory, rtsp_client):
    server = server_factory(max_sessions_per_connection=2, max_sessions=10)
    greedy, other = rtsp_client(server.port), rtsp_client(server.port)
    transport = "RTP/AVP/TCP;unicast;interleaved=0-1"
    assert [greedy.request("SETUP", "short.Mjpeg/stream=0", Transport=transport).status
            for _ in range(3)] == [200, 200, 503]
    assert greedy.request("OPTIONS", "*").status == 200  # still answered
    assert other.request("SETUP", "short.Mjpeg/stream=0", Transport=transport).status == 200
    assert len(server.registry) == 3


def textbook_reply(client: TextbookClient, code: str) -> list[str]:
    """Send like the course's client and split the reply the way it does."""
    client.rtsp_seq += 1
    client.rtsp.send(f"{code} {client.file_name} RTSP/1.0\nCSeq: {client.rtsp_seq}\n"
                     f"Session: {client.session_id}".encode())
    return client.rtsp.recv(1024).decode("utf-8").split("\n")


def test_idle_textbook_session_ends_but_a_playing_one_does_not(server_factory):
    server = server_factory(textbook_idle=1.0)
    idle, watching = TextbookClient(server.port, "movie.Mjpeg"), \
        TextbookClient(server.port, "movie.Mjpeg")
    try:
        assert idle.send(idle.SETUP) == 200 and watching.send(watching.SETUP) == 200
        assert watching.send(watching.PLAY) == 200
        assert wait_for(lambda: len(server.registry) == 1, 10)
        assert server.registry.get(str(watching.session_id)) is not None
        assert len(watching.receive(5)) == 5
        # The idle client survives: its connection is still open and the reply keeps the
        # layout it reads by line index (status, CSeq, Session).
        lines = textbook_reply(idle, "PLAY")
        assert lines[0].split(" ")[1] == "454"
        assert int(lines[1].split(" ")[1]) == idle.rtsp_seq
        assert int(lines[2].split(" ")[1]) == idle.session_id
        assert textbook_reply(idle, "TEARDOWN")[0].split(" ")[1] == "454"
    finally:
        idle.close()
        watching.close()


# --- authentication back-off end to end --------------------------------------------------

USERS = {"alice": "right"}


def digest_describe(client: RtspTestClient, password: str, nonce: str) -> Response:
    uri = f"{client.base}/movie.Mjpeg"
    response = digest_response(digest_ha1("alice", "mjpeg-rtsp", password), "DESCRIBE", uri,
                               nonce)
    value = (f'Digest username="alice", realm="mjpeg-rtsp", nonce="{nonce}", uri="{uri}", '
             f'response="{response}"')
    return client.request("DESCRIBE", "movie.Mjpeg", Authorization=value)


def nonce_of(reply: Response) -> str:
    assert reply.status == 401, reply
    return re.search(r'nonce="([^"]+)"', reply.headers.get("WWW-Authenticate")).group(1)


def client_from(server, source: str) -> RtspTestClient:
    client = RtspTestClient(server.port)
    client.sock.close()
    client.sock = socket.create_connection(("127.0.0.1", server.port), timeout=5,
                                           source_address=(source, 0))
    return client


def test_password_guessing_is_slowed_per_address(server_factory):
    backoff = AuthBackoff(free_failures=3, window=30, base_delay=1.5, max_delay=1.5)
    server = server_factory(users=dict(USERS), auth_backoff=backoff)
    guesser, other = RtspTestClient(server.port), client_from(server, "127.0.0.2")
    try:
        nonce = nonce_of(guesser.request("DESCRIBE", "movie.Mjpeg"))
        for _ in range(3):
            reply = digest_describe(guesser, "wrong", nonce)
            assert reply.status == 401 and reply.headers.get("Retry-After") is None
        # Shut out: even the right password is not checked, and the answer says when to retry.
        reply = digest_describe(guesser, "right", nonce)
        assert reply.status == 401 and reply.headers.get("Retry-After") in ("1", "2")
        assert nonce_of(reply) == nonce  # the same nonce: a client does not retry for ever
        # Another address is not affected.
        other_nonce = nonce_of(other.request("DESCRIBE", "movie.Mjpeg"))
        assert digest_describe(other, "right", other_nonce).status == 200
        # After the back-off the address may try again, and a success forgets its failures.
        assert wait_for(lambda: digest_describe(guesser, "right", nonce).status == 200, 5, 0.2)
        assert len(backoff) == 0
        assert guesser.request("OPTIONS", "*").status == 200
    finally:
        guesser.close()
        other.close()
