"""Both state machines pinned entry by entry, from RFC 2326 appendix A written out here
rather than read back from the tables under test."""

from __future__ import annotations

import itertools

import pytest

from mjpeg_rtsp.client import CLIENT_TRANSITIONS, PlayerState, RtspClient, parse_rtsp_url
from mjpeg_rtsp.rtsp import Headers, Response

P = PlayerState
CLIENT_METHODS = ["OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER"]
# RFC 2326 appendix A, written out here rather than read back from the tables under test.
# For a play-only client (A.1) and server (A.2) the method rows agree: the state after a
# successful request. The client stays put for any other pair; the server answers 455.
RFC_PLAY_ONLY = {
    ("Init", "SETUP"): "Ready",
    ("Ready", "SETUP"): "Ready",
    ("Ready", "PLAY"): "Playing",
    ("Ready", "PAUSE"): "Ready",
    ("Ready", "TEARDOWN"): "Init",
    ("Playing", "PLAY"): "Playing",
    ("Playing", "PAUSE"): "Ready",
    ("Playing", "TEARDOWN"): "Init",
}

# RFC 2326 A.2's recording rows, for a session set up with mode=record. A.2 also lists
# SETUP in Recording (a transport change): refused with 455 here, as a change while playing
# is (section 10.4 lets a server refuse it).
RFC_RECORD = {
    ("Init", "SETUP"): "Ready",
    ("Ready", "SETUP"): "Ready",
    ("Ready", "RECORD"): "Recording",
    ("Ready", "TEARDOWN"): "Init",
    ("Ready", "PAUSE"): "Ready",
    ("Recording", "RECORD"): "Recording",
    ("Recording", "PAUSE"): "Ready",
    ("Recording", "TEARDOWN"): "Init",
}


@pytest.mark.parametrize(("state", "method"),
                         list(itertools.product(list(PlayerState), CLIENT_METHODS)))
def test_client_table_entry(state: PlayerState, method: str) -> None:
    expected = RFC_PLAY_ONLY.get((state.value, method), state.value)
    assert CLIENT_TRANSITIONS.get((state, method), state).value == expected


def _ok(cseq: int, **headers: str) -> Response:
    return Response(200, Headers([("CSeq", str(cseq)), *headers.items()]))


def test_client_changes_state_only_on_a_successful_reply() -> None:
    client = RtspClient(parse_rtsp_url("rtsp://127.0.0.1/x"))
    client.request("SETUP", "rtsp://127.0.0.1/x", Transport="RTP/AVP/TCP;interleaved=0-1")
    client.receive(Response(454, Headers([("CSeq", "1")])))
    assert client.state is P.INIT
    client.request("SETUP", "rtsp://127.0.0.1/x", Transport="RTP/AVP/TCP;interleaved=0-1")
    client.receive(_ok(2, Session="abc", Transport="RTP/AVP/TCP;interleaved=0-1"))
    assert client.state is P.READY
    client.request("PLAY", "rtsp://127.0.0.1/x")
    client.receive(_ok(3, Session="abc"))
    assert client.state is P.PLAYING
    client.request("OPTIONS", "rtsp://127.0.0.1/x")
    client.receive(_ok(4))
    assert client.state is P.PLAYING
    client.request("TEARDOWN", "rtsp://127.0.0.1/x")
    client.receive(_ok(5, Session="abc"))
    assert client.state is P.INIT and client.session_id is None
