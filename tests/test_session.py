"""The server's RTSP logic in memory: every (state, method) pair, replies, errors, paths."""

from __future__ import annotations

import itertools
import re

import pytest
from conftest import wait_for
from hypothesis import given, settings
from hypothesis import strategies as st
from test_state_tables import RFC_PLAY_ONLY, RFC_RECORD

from mjpeg_rtsp.media import MediaLibrary
from mjpeg_rtsp.rtsp import Dialect, Headers, Request, format_response
from mjpeg_rtsp.service import Connection, EndSession, RtspService, ServerConfig, StartStreaming
from mjpeg_rtsp.session import (
    STREAM_ENDED,
    TRANSITIONS,
    InvalidTransitionError,
    SessionRegistry,
    SessionState,
    new_session_id,
)

URL = "rtsp://127.0.0.1:8554/movie.Mjpeg"
METHODS = ["OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER",
           "ANNOUNCE", "RECORD", "SET_PARAMETER", "FROB"]
UDP = "RTP/AVP;unicast;client_port=5000-5001"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(media_root, clock) -> RtspService:
    config = ServerConfig(fps=20, server_rtp_port=6970, server_rtcp_port=6971, session_timeout=60)
    return RtspService(MediaLibrary(str(media_root)), SessionRegistry(5), config, clock)


CONN = Connection(1, "127.0.0.1")
_cseq = itertools.count(1)


def call(service, method, target=URL, conn=CONN, body=b"", **headers):
    fields = [("CSeq", str(next(_cseq)))] + [(k.replace("_", "-"), v) for k, v in headers.items()]
    dialect = Dialect.STANDARD if "://" in target or target == "*" else Dialect.TEXTBOOK
    request = Request(method, target, Headers(fields), body=body, dialect=dialect)
    return service.handle(request, conn)


def drive_to(service, state: SessionState) -> str | None:
    if state is SessionState.INIT:
        return None
    reply = call(service, "SETUP", URL + "/stream=0", Transport=UDP)
    assert reply.response.status == 200
    session_id = reply.session_id
    if state is SessionState.PLAYING:
        assert call(service, "PLAY", URL + "/", Session=session_id).response.status == 200
    return session_id


def session_state(service, session_id) -> SessionState:
    session = service.registry.get(session_id) if session_id else None
    return session.state if session else SessionState.INIT


# The server's table: RFC 2326 A.2's rows (written out in test_state_tables), plus the
# methods that never change a state; a pair not listed is answered 455.
STATELESS = {(state.value, method): state.value for state in SessionState
             for method in ("OPTIONS", "DESCRIBE", "GET_PARAMETER")}
EXPECTED = {**RFC_PLAY_ONLY, **STATELESS}
EXPECTED_RECORD = {**RFC_RECORD, **STATELESS}
PLAY_STATES = [s for s in SessionState if s is not SessionState.RECORDING]


def carry_out(service, reply) -> None:
    """What the streamer does with a reply's EndSession actions."""
    for action in reply.actions:
        if isinstance(action, EndSession):
            service.registry.end(action.session)


@pytest.mark.parametrize("state", PLAY_STATES)
@pytest.mark.parametrize("method", METHODS)
def test_every_state_method_pair(service, state, method):
    session_id = drive_to(service, state)
    headers = {"Session": session_id} if session_id else {}
    if method == "SETUP":
        headers["Transport"] = UDP
    target = URL + "/stream=0" if method == "SETUP" else URL
    reply = call(service, method, target, **headers)
    carry_out(service, reply)
    status = reply.response.status
    expected = EXPECTED.get((state.value, method))
    if method in ("ANNOUNCE", "RECORD"):  # publishing is off in this service
        assert status == 405
        assert "ANNOUNCE" not in reply.response.headers.get("Public")
        assert session_state(service, session_id) is state
    elif method in ("SET_PARAMETER", "FROB"):
        assert status == 501
        assert "DESCRIBE" in reply.response.headers.get("Public")
        assert session_state(service, session_id) is state
    elif expected is None:
        assert status == 455, reply.response
        assert session_state(service, session_id) is state  # unchanged
    else:
        assert status == 200, reply.response
        after = session_state(service, reply.session_id or session_id)
        assert after.value == expected


def test_the_table_has_exactly_the_rfc_entries_and_the_end_of_a_stream():
    methods = {key: value for key, value in TRANSITIONS.items() if key[1] != STREAM_ENDED}
    assert {(s.value, m): n.value for (s, m), n in methods.items()} == {
        **EXPECTED, **EXPECTED_RECORD}


PUBLISH_URL = "rtsp://127.0.0.1:8554/live/cam"
ANNOUNCE_SDP = (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=cam\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                b"m=video 0 RTP/AVP 26\r\na=control:streamid=0\r\n")
RECORD_UDP = "RTP/AVP/UDP;unicast;client_port=5002-5003;mode=record"


@pytest.fixture
def publish_service(media_root, clock) -> RtspService:
    config = ServerConfig(fps=20, server_rtp_port=6970, server_rtcp_port=6971,
                          session_timeout=60, publish=True)
    return RtspService(MediaLibrary(str(media_root)), SessionRegistry(5), config, clock)


def drive_record_to(service, state: SessionState) -> str | None:
    if state is SessionState.INIT:
        return None
    reply = call(service, "ANNOUNCE", PUBLISH_URL, body=ANNOUNCE_SDP,
                 Content_Type="application/sdp")
    assert reply.response.status == 200, reply.response
    reply = call(service, "SETUP", PUBLISH_URL + "/streamid=0", Transport=RECORD_UDP)
    assert reply.response.status == 200, reply.response
    assert "mode=record" in reply.response.headers.get("Transport")
    if state is SessionState.RECORDING:
        assert call(service, "RECORD", PUBLISH_URL,
                    Session=reply.session_id).response.status == 200
    return reply.session_id


@pytest.mark.parametrize("state", [SessionState.READY, SessionState.RECORDING])
@pytest.mark.parametrize("method", METHODS)
def test_every_state_method_pair_of_a_recording_session(publish_service, state, method):
    session_id = drive_record_to(publish_service, state)
    headers = {"Session": session_id}
    body = b""
    if method == "SETUP":
        headers["Transport"] = RECORD_UDP
    if method == "ANNOUNCE":
        headers["Content_Type"] = "application/sdp"
        body = ANNOUNCE_SDP
    target = PUBLISH_URL + "/streamid=0" if method == "SETUP" else PUBLISH_URL
    reply = call(publish_service, method, target, body=body, **headers)
    carry_out(publish_service, reply)
    status = reply.response.status
    expected = EXPECTED_RECORD.get((state.value, method))
    if method in ("SET_PARAMETER", "FROB"):
        assert status == 501
        assert "RECORD" in reply.response.headers.get("Public")
    elif method == "ANNOUNCE":  # the path is this connection's already: described again
        assert status == 200
    elif method == "DESCRIBE":  # no frame has come yet
        assert status == 404
    elif expected is None:
        assert status == 455, reply.response
        assert session_state(publish_service, session_id) is state
    else:
        assert status == 200, reply.response
        assert session_state(publish_service, session_id).value == expected


def test_publishing_rules(publish_service, service) -> None:
    other = Connection(2, "127.0.0.1")
    remote = Connection(3, "192.0.2.7")
    announce = {"body": ANNOUNCE_SDP, "Content_Type": "application/sdp"}
    assert call(service, "ANNOUNCE", PUBLISH_URL, **announce).response.status == 405
    assert call(publish_service, "ANNOUNCE", PUBLISH_URL, conn=remote,
                **announce).response.status == 403  # loopback only without publish users
    assert call(publish_service, "ANNOUNCE", URL, **announce).response.status == 403  # a file
    assert call(publish_service, "ANNOUNCE", PUBLISH_URL, body=b"v=0\r\n",
                Content_Type="application/sdp").response.status == 415
    assert call(publish_service, "ANNOUNCE", PUBLISH_URL, body=ANNOUNCE_SDP,
                Content_Type="text/plain").response.status == 415
    assert call(publish_service, "SETUP", PUBLISH_URL + "/streamid=0",
                Transport=RECORD_UDP).response.status == 455  # no ANNOUNCE first
    session_id = drive_record_to(publish_service, SessionState.RECORDING)
    assert call(publish_service, "PLAY", PUBLISH_URL, Session=session_id).response.status == 455
    # A second publisher of the same path is refused at ANNOUNCE.
    assert call(publish_service, "ANNOUNCE", PUBLISH_URL, conn=other,
                **announce).response.status == 455
    # A viewer's session cannot RECORD.
    viewer = call(publish_service, "SETUP", URL + "/stream=0", Transport=UDP).session_id
    assert call(publish_service, "RECORD", URL, Session=viewer).response.status == 455
    # Once the publisher's session ends, the path is free again.
    carry_out(publish_service, call(publish_service, "TEARDOWN", PUBLISH_URL, Session=session_id))
    publish_service.live.unpublish(publish_service.live.get("live/cam"), "test")
    assert call(publish_service, "ANNOUNCE", PUBLISH_URL, conn=other,
                **announce).response.status == 200
    assert TRANSITIONS[(SessionState.PLAYING, STREAM_ENDED)] is SessionState.READY
    assert [key for key in TRANSITIONS if key[1] == STREAM_ENDED] == [
        (SessionState.PLAYING, STREAM_ENDED)]


def test_apply_is_the_one_writer_and_moves_the_generation_on_delivery_events(service):
    session = service.registry.get(drive_to(service, SessionState.READY))
    generation = session.generation
    session.apply("DESCRIBE")
    assert (session.state, session.generation) == (SessionState.READY, generation)
    session.apply("PLAY")
    assert (session.state, session.generation) == (SessionState.PLAYING, generation + 1)
    assert not session.stream_ended(generation)  # a stale delivery ends nothing
    assert session.stream_ended(generation + 1)
    assert (session.state, session.generation) == (SessionState.READY, generation + 2)
    with pytest.raises(InvalidTransitionError, match="stream ended not valid in state Ready"):
        session.apply(STREAM_ENDED)
    assert service.registry.end(session) and not service.registry.end(session)
    assert (session.state, session.generation) == (SessionState.INIT, generation + 3)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER"]),
                max_size=12))
def test_random_method_sequences_follow_the_table(media_root, methods):
    config = ServerConfig(fps=20, server_rtp_port=6970, server_rtcp_port=6971)
    service = RtspService(MediaLibrary(str(media_root)), SessionRegistry(5), config, Clock())
    model, session_id = SessionState.INIT, None
    for method in methods:
        headers = {"Session": session_id} if session_id else {}
        if method == "SETUP":
            headers["Transport"] = UDP
        reply = call(service, method, URL, **headers)
        expected = EXPECTED.get((model.value, method))
        if expected is None:
            assert reply.response.status == 455
        else:
            assert reply.response.status == 200
            model = SessionState(expected)
            if method == "SETUP":
                session_id = reply.session_id
            if method == "TEARDOWN":
                (end,) = reply.actions  # carried out as the streamer does
                service.registry.end(end.session)
                session_id = None
        assert session_state(service, session_id) is model


def test_options(service):
    reply = call(service, "OPTIONS", "*")
    assert reply.response.status == 200
    assert reply.response.headers.get("Public") == (
        "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER"
    )


def test_describe_gives_sdp_with_content_base(service):
    reply = call(service, "DESCRIBE", URL, Accept="application/sdp")
    response = reply.response
    assert response.status == 200
    assert response.headers.get("Content-Type") == "application/sdp"
    assert response.headers.get("Content-Base") == URL + "/"
    sdp = response.body.decode()
    for line in ["m=video 0 RTP/AVP 26", "a=rtpmap:26 JPEG/90000", "a=control:stream=0",
                 "a=range:npt=0-20.000", "a=framerate:20"]:
        assert line + "\r\n" in sdp
    data = format_response(response)
    assert f"Content-Length: {len(response.body)}\r\n".encode() in data


def test_setup_play_pause_replies(service, clock):
    reply = call(service, "SETUP", URL + "/stream=0", Transport=UDP)
    transport = reply.response.headers.get("Transport")
    assert re.fullmatch(
        r"RTP/AVP;unicast;client_port=5000-5001;server_port=6970-6971;ssrc=[0-9A-F]{8}", transport
    )
    session_header = reply.response.headers.get("Session")
    session_id = reply.session_id
    assert session_header == f"{session_id};timeout=60"
    session = service.registry.get(session_id)
    assert session.transport.client_ip == "127.0.0.1"

    reply = call(service, "PLAY", URL + "/", Session=session_id, Range="npt=5-")
    headers = reply.response.headers
    assert headers.get("Range") == "npt=5.000-20.000"
    assert headers.get("RTP-Info") == (
        f"url={URL}/stream=0;seq={session.next_seq};rtptime={session.rtp_timestamp(100)}"
    )
    assert session.position == 100
    assert [type(a) for a in reply.actions] == [StartStreaming]

    session.position = 150  # as if the scheduler had sent 50 frames
    assert call(service, "PAUSE", URL + "/", Session=session_id).response.status == 200
    reply = call(service, "PLAY", URL + "/", Session=session_id)
    assert reply.response.headers.get("Range") == "npt=7.500-20.000"  # resumes where it paused

    reply = call(service, "TEARDOWN", URL + "/", Session=session_id)
    assert reply.response.status == 200
    assert [type(a) for a in reply.actions] == [EndSession]


def test_interleaved_setup_picks_free_channels(service):
    a = call(service, "SETUP", URL, Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
    assert a.response.headers.get("Transport").startswith("RTP/AVP/TCP;unicast;interleaved=0-1;")
    b = call(service, "SETUP", URL, Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
    assert "interleaved=2-3" in b.response.headers.get("Transport")


def test_textbook_setup_reply(service):
    reply = call(service, "SETUP", "movie.Mjpeg", Transport="RTP/UDP; client_port= 25000")
    assert reply.response.status == 200 and reply.dialect is Dialect.TEXTBOOK
    lines = format_response(reply.response, reply.dialect, reply.session_id).decode().split("\n")
    assert lines[0] == "RTSP/1.0 200 OK"
    assert int(lines[2].split(" ")[1]) == int(reply.session_id)
    session = service.registry.get(reply.session_id)
    assert session.transport.rtp_port == 25000 and session.transport.rtcp_port is None
    assert session.next_seq == 1


@pytest.mark.parametrize(
    "method, target, headers, status",
    [
        ("DESCRIBE", "rtsp://h/missing.Mjpeg", {}, 404),
        ("DESCRIBE", "rtsp://h/../etc/passwd.mjpeg", {}, 404),
        ("DESCRIBE", "rtsp://h/%2e%2e/x.mjpeg", {}, 404),
        ("DESCRIBE", "rtsp://h//etc/passwd", {}, 404),
        ("DESCRIBE", "rtsp://h/conftest.py", {}, 404),
        ("SETUP", URL, {"Transport": "RTP/AVP;multicast"}, 461),
        ("SETUP", URL, {"Transport": "RTP/SAVP;unicast;client_port=1-2"}, 461),
        ("SETUP", URL, {"Transport": "RTP/AVP;unicast"}, 461),
        ("SETUP", URL, {}, 461),
        ("PLAY", URL, {"Session": "1234"}, 454),
        ("OPTIONS", URL, {"Require": "play.basic"}, 551),
        ("PLAY", URL, {}, 455),
        ("SETUP", "http://h/x", {"Transport": UDP}, 400),
    ],
)
def test_error_statuses(service, method, target, headers, status):
    reply = call(service, method, target, **headers)
    assert reply.response.status == status
    assert reply.response.headers.get("CSeq")  # every reply carries the CSeq


def test_missing_cseq_is_400(service):
    reply = service.handle(Request("OPTIONS", "*", Headers()), CONN)
    assert reply.response.status == 400


def test_invalid_range_is_457(service):
    session_id = drive_to(service, SessionState.READY)
    assert call(service, "PLAY", URL, Session=session_id, Range="npt=25-").response.status == 457
    assert call(service, "PLAY", URL, Session=session_id, Range="smpte=1-").response.status == 457
    assert session_state(service, session_id) is SessionState.READY


def test_session_limit_is_503(service):
    for _ in range(5):
        assert call(service, "SETUP", URL, Transport=UDP).response.status == 200
    assert call(service, "SETUP", URL, Transport=UDP).response.status == 503


def test_destination_is_ignored(service):
    reply = call(service, "SETUP", URL, Transport=UDP + ";destination=10.1.2.3")
    session = service.registry.get(reply.session_id)
    assert session.transport.client_ip == "127.0.0.1"
    assert "destination" not in reply.response.headers.get("Transport")


def test_keepalive_and_timeout(service, clock):
    session_id = drive_to(service, SessionState.PLAYING)
    session = service.registry.get(session_id)
    clock.now += 50
    assert call(service, "GET_PARAMETER", URL, Session=session_id).response.status == 200
    clock.now += 50
    assert service.expire_sessions([session]) == []
    clock.now += 11
    [ended] = service.expire_sessions([session])
    assert ended.session is session and ended.reason == "timed out"


def test_textbook_session_never_times_out_while_playing(service, clock):
    """Its client sends nothing while it watches; only a session that is not playing idles out
    (after ServerConfig.textbook_idle, 300 s by default, without a request)."""
    reply = call(service, "SETUP", "movie.Mjpeg", Transport="RTP/UDP; client_port= 25000")
    session = service.registry.get(reply.session_id)
    assert call(service, "PLAY", "movie.Mjpeg", Session=session.id).response.status == 200
    clock.now += 10_000
    assert service.expire_sessions([session]) == []
    assert call(service, "PAUSE", "movie.Mjpeg", Session=session.id).response.status == 200
    clock.now += 300
    assert service.expire_sessions([session]) == []
    clock.now += 1
    [ended] = service.expire_sessions([session])
    assert ended.session is session and ended.reason == "idle (not playing)"


def test_session_ids_are_decimal_and_unpredictable():
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 20 and i.isdigit() and i[0] != "0" for i in ids)


class EndedMeanwhile:
    """A session guard that lets another thread end the session just before it is held."""

    def __init__(self, registry) -> None:
        self.registry, self.session = registry, None

    def __enter__(self):
        if self.session is not None and self.session.state is SessionState.PLAYING:
            self.registry.end(self.session)
        return self

    def __exit__(self, *exc):
        return False


def test_a_state_that_moved_on_under_a_request_is_455_not_500(media_root, clock):
    config = ServerConfig(fps=20, server_rtp_port=6970, server_rtcp_port=6971)
    registry = SessionRegistry(5)
    guards = []
    service = RtspService(MediaLibrary(str(media_root)), registry, config, clock,
                          new_guard=lambda: guards.append(EndedMeanwhile(registry)) or guards[-1])
    session_id = drive_to(service, SessionState.PLAYING)
    guards[-1].session = registry.get(session_id)
    reply = call(service, "PAUSE", URL, Session=session_id)
    assert reply.response.status == 455


def test_a_textbook_session_is_idle_from_the_end_of_its_stream(media_root):
    import threading
    import time

    from mjpeg_rtsp.streaming import PacingScheduler

    class Sink:
        def send_rtp(self, headers, share):
            return 0

        def send_rtcp(self, data):
            pass

    class ShiftedClock:  # real time that can be moved on
        offset = 0.0

        def __call__(self) -> float:
            return time.monotonic() + self.offset

    clock = ShiftedClock()
    config = ServerConfig(fps=1000, server_rtp_port=6970, server_rtcp_port=6971,
                          textbook_idle=300)
    service = RtspService(MediaLibrary(str(media_root)), SessionRegistry(5), config, clock,
                          new_guard=threading.RLock)
    setup = call(service, "SETUP", "short.Mjpeg", Transport="RTP/UDP; client_port= 25000")
    session = service.registry.get(setup.session_id)
    call(service, "PLAY", "short.Mjpeg", Session=setup.session_id)
    clock.offset += 400  # the clip took longer than the idle time
    scheduler = PacingScheduler(1400, clock=clock)
    scheduler.start()
    try:
        scheduler.play(session, Sink())
        assert wait_for(lambda: session.state is SessionState.READY, 10)
    finally:
        scheduler.stop()
    assert not session.expired(clock() + 299)  # 300 s from the end of the stream
