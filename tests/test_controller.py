"""The player's sans-I/O controller: driven in memory against the server's own RtspService,
with times given, no sockets and no threads."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageChops

from mjpeg_rtsp.client import PlayerState, parse_rtsp_url, textbook_target
from mjpeg_rtsp.controller import (
    TEXTBOOK_END_SILENCE,
    TEXTBOOK_QUIET,
    CloseMedia,
    ControllerOptions,
    OpenMedia,
    PlayerController,
    PlayerEvent,
    SendControl,
    SendRtcp,
)
from mjpeg_rtsp.media import MediaLibrary
from mjpeg_rtsp.rtcp import Bye, ReceiverReport, parse_compound
from mjpeg_rtsp.rtp import pack_header
from mjpeg_rtsp.rtsp import NEED_DATA, Dialect, Request, RtspReader, format_response
from mjpeg_rtsp.service import Connection, RtspService, ServerConfig, StartStreaming
from mjpeg_rtsp.session import SessionRegistry

SERVER_IP = "127.0.0.1"
URL = "rtsp://127.0.0.1:8554/movie.Mjpeg"
QUIET = TEXTBOOK_QUIET + 0.001  # just past the quiet time (float sums)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class InMemoryServer:
    """The server's protocol logic behind a byte pipe: requests in, replies out."""

    def __init__(self, media_root, clock: Clock) -> None:
        config = ServerConfig(fps=20, server_rtp_port=6970, server_rtcp_port=6971,
                              session_timeout=60)
        self.service = RtspService(MediaLibrary(str(media_root)), SessionRegistry(5), config,
                                   clock)
        self.reader = RtspReader()
        self.requests: list[Request] = []
        self.started = []

    def feed(self, data: bytes) -> bytes:
        self.reader.receive_data(data)
        out = b""
        while True:
            event = self.reader.next_event()
            if event is NEED_DATA:
                pending = self.reader.pending_textbook_message()
                event = self.reader.flush_textbook_message() if pending else None
                if event is None:
                    return out
            self.requests.append(event)
            reply = self.service.handle(event, Connection(1, SERVER_IP))
            self.started += [a.session for a in reply.actions if isinstance(a, StartStreaming)]
            out += format_response(reply.response, reply.dialect, reply.session_id)


class Pair:
    """A controller wired to an in-memory server; media ports are 'bound' at 5000."""

    def __init__(self, controller: PlayerController, server: InMemoryServer, clock: Clock):
        self.controller, self.server, self.clock = controller, server, clock
        self.events: list[PlayerEvent] = []
        self.rtcp: list[SendRtcp] = []
        self.closed_media = 0
        controller.connected(SERVER_IP)

    def command(self, name: str, *args) -> None:
        self.controller.command(name, args, self.clock.now)
        self.pump()

    def pump(self) -> None:
        c = self.controller
        while True:
            outputs = c.take_outputs()
            self.events += c.take_events()
            if not outputs:
                return
            for output in outputs:
                if isinstance(output, SendControl):
                    reply = self.server.feed(output.data)
                    if reply:
                        c.receive_control(reply, self.clock.now)
                        c.tick(self.clock.now + QUIET)  # textbook replies end on quiet
                elif isinstance(output, OpenMedia):
                    c.media_opened(5000, self.clock.now)
                elif isinstance(output, SendRtcp):
                    self.rtcp.append(output)
                elif isinstance(output, CloseMedia):
                    self.closed_media += 1

    def send_frame(self, number: int) -> None:
        """The server's RTP packets for frame ``number`` of the session, as it would pace them."""
        session = self.server.started[-1]
        raw = self.controller.target.dialect is Dialect.TEXTBOOK
        payloads = (session.media.raw_payload(number) if raw
                    else session.media.rtp_payloads(number, 1400))
        for i, payload in enumerate(payloads):
            header = pack_header(26, (session.next_seq + i) & 0xFFFF,
                                 session.rtp_timestamp(number), session.ssrc,
                                 i == len(payloads) - 1)
            self.controller.receive_rtp(header + payload, SERVER_IP, self.clock.now)
        session.next_seq = (session.next_seq + len(payloads)) & 0xFFFF


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(media_root, clock) -> InMemoryServer:
    return InMemoryServer(media_root, clock)


def standard(server, clock, **options) -> Pair:
    return Pair(PlayerController(parse_rtsp_url(URL), ControllerOptions(**options)),
                server, clock)


def test_setup_sends_options_describe_then_setup_once_ports_are_bound(server, clock):
    pair = standard(server, clock)
    pair.command("setup")
    assert [(r.method, r.target) for r in server.requests] == [
        ("OPTIONS", URL), ("DESCRIBE", URL), ("SETUP", URL + "/stream=0")]
    assert "client_port=5000-5001" in server.requests[-1].headers.get("Transport")
    assert pair.controller.state is PlayerState.READY and not pair.controller.busy
    assert pair.events == [PlayerEvent("state", "Init"), PlayerEvent("state", "Init"),
                           PlayerEvent("state", "Ready")]
    assert pair.controller.duration == pytest.approx(server.service.library.open(
        "/movie.Mjpeg").frame_count / 20)


def test_over_tcp_no_media_ports_are_opened(server, clock):
    pair = standard(server, clock, transport="tcp")
    pair.command("setup")
    assert pair.controller.state is PlayerState.READY
    assert "interleaved=0-1" in server.requests[-1].headers.get("Transport")


def test_commands_queue_behind_the_outstanding_request(server, clock):
    pair = standard(server, clock)
    c = pair.controller
    c.command("setup", (), clock.now)
    c.command("play", (None,), clock.now)
    assert [type(o) for o in c.take_outputs()] == [SendControl]  # OPTIONS only, so far
    assert c.busy


def test_a_reply_that_never_comes_fails_at_the_deadline(server, clock):
    c = PlayerController(parse_rtsp_url(URL), ControllerOptions(reply_timeout=10))
    c.command("setup", (), clock.now)
    c.take_outputs()
    c.tick(clock.now + 9.9)
    assert c.failed is None and c.next_timer(clock.now) == pytest.approx(clock.now + 10)
    c.tick(clock.now + 10.1)
    assert c.failed == "the server did not answer OPTIONS within 10 s"
    assert c.take_events()[-1] == PlayerEvent("error", c.failed)


def test_keepalive_at_half_the_session_timeout(server, clock):
    pair = standard(server, clock)
    pair.command("setup")
    c = pair.controller
    assert c.next_timer(clock.now) == pytest.approx(clock.now + 30)
    c.tick(clock.now + 29.9)
    assert c.take_outputs() == []
    c.tick(clock.now + 30)
    (keepalive,) = c.take_outputs()
    # The aggregate is our Content-Base as given (with its trailing slash).
    assert keepalive.data.startswith(b"GET_PARAMETER " + URL.encode() + b"/ RTSP/1.0\r\n")
    assert b"Session: " in keepalive.data


def test_frames_come_out_whole_after_the_latency_and_match_the_file(server, clock):
    pair = standard(server, clock, latency=0.1)
    pair.command("setup")
    pair.command("play", None)
    c = pair.controller
    assert c.state is PlayerState.PLAYING
    media = server.started[-1].media
    start = clock.now
    for n in range(3):  # paced as the server sends them
        clock.now = start + n / 20
        pair.send_frame(n)
    assert c.pop_frames(start + 0.09) == []
    assert len(c.pop_frames(start + 0.1)) == 1
    frames = c.pop_frames(start + 0.2)
    assert [position for _, position in frames] == pytest.approx([0.05, 0.1])
    # The rebuilt JPEGs decode to the file's frames (RFC 2435 rebuilds the headers).
    for (jpeg, _), n in zip(frames, (1, 2), strict=True):
        ours = Image.open(io.BytesIO(jpeg)).convert("RGB")
        source = Image.open(io.BytesIO(media.frame(n))).convert("RGB")
        assert max(ImageChops.difference(ours, source).getextrema())[1] <= 8
    stats = c.stats(clock.now + 1)
    assert stats["packets_lost"] == 0 and stats["packets_foreign"] == 0


def test_packets_from_elsewhere_other_sources_and_garbage_are_counted_and_ignored(server,
                                                                                   clock):
    pair = standard(server, clock)
    pair.command("setup")
    pair.command("play", None)
    c = pair.controller
    pair.send_frame(0)
    received = c.receiver_stats.packets_received
    ssrc = server.started[-1].ssrc
    c.receive_rtp(pack_header(26, 1, 0, ssrc, True) + b"x" * 20, "10.0.0.9", clock.now)
    c.receive_rtp(pack_header(26, 1, 0, ssrc ^ 1, True) + b"x" * 20, SERVER_IP, clock.now)
    c.receive_rtp(pack_header(96, 1, 0, ssrc, True) + b"x" * 20, SERVER_IP, clock.now)
    c.receive_rtp(b"\x00garbage", SERVER_IP, clock.now)
    c.receive_rtcp(b"\x81\xc9garbage", SERVER_IP, clock.now)
    assert c.receiver_stats.packets_received == received
    assert c.counters.packets_foreign == 3 and c.counters.packets_garbage == 2


def test_receiver_reports_go_to_the_servers_rtcp_port(server, clock):
    pair = standard(server, clock)
    pair.command("setup")
    pair.command("play", None)
    c = pair.controller
    pair.send_frame(0)
    c.tick(clock.now + 1.0)
    pair.pump()
    (report,) = pair.rtcp
    assert report.port == 6971
    rr = parse_compound(report.data)[0]
    assert isinstance(rr, ReceiverReport)
    assert rr.reports[0].ssrc == server.started[-1].ssrc
    assert rr.reports[0].highest_seq & 0xFFFF == (server.started[-1].next_seq - 1) & 0xFFFF


def test_bye_ends_the_stream_once_the_buffer_has_played_out(server, clock):
    pair = standard(server, clock, latency=0.1)
    pair.command("setup")
    pair.command("play", None)
    c = pair.controller
    pair.send_frame(0)
    session = server.started[-1]
    c.receive_rtcp(bytes(Bye((session.ssrc,), b"end of stream")), SERVER_IP, clock.now)
    c.tick(clock.now)
    assert not c.ended  # a frame is still waiting for its playout time
    assert len(c.pop_frames(clock.now + 1)) == 1
    c.tick(clock.now + 1)
    assert c.ended and PlayerEvent("ended", "end of stream") in c.take_events()


def test_teardown_closes_the_media_ports_and_forgets_the_session(server, clock):
    pair = standard(server, clock)
    pair.command("setup")
    pair.command("teardown")
    assert pair.controller.state is PlayerState.INIT and pair.closed_media == 1
    assert pair.controller.next_timer(clock.now) == float("inf")


def test_server_closing_the_connection_mid_session_is_an_error(server, clock):
    pair = standard(server, clock)
    pair.command("setup")
    pair.controller.receive_control(b"", clock.now)
    assert pair.controller.failed == "the server closed the connection"
    assert pair.controller.ended


def test_unauthorised_asks_for_credentials_then_sends_the_request_again(media_root, clock):
    from mjpeg_rtsp.auth import DigestAuthenticator

    server = InMemoryServer(media_root, clock)
    server.service.authenticator = DigestAuthenticator({"alice": "secret"}, clock=clock)
    pair = standard(server, clock, ask_credentials=True)
    pair.command("setup")
    assert pair.events[-1].kind == "credentials" and pair.controller.busy
    assert [r.method for r in server.requests] == ["OPTIONS", "DESCRIBE"]
    pair.command("login", "alice", "secret")
    assert pair.controller.state is PlayerState.READY and pair.controller.failed is None
    assert server.requests[-1].headers.get("Authorization").startswith("Digest ")


def test_cancelled_login_fails_with_the_given_message(media_root, clock):
    from mjpeg_rtsp.auth import DigestAuthenticator

    server = InMemoryServer(media_root, clock)
    server.service.authenticator = DigestAuthenticator({"alice": "secret"}, clock=clock)
    pair = standard(server, clock, ask_credentials=True)
    pair.command("setup")
    pair.command("cancel_login", "no password given")
    assert pair.controller.failed == "no password given" and not pair.controller.busy


def test_textbook_replies_end_when_the_socket_goes_quiet(server, clock):
    c = PlayerController(textbook_target("127.0.0.1", 8554, 25000, "movie.Mjpeg"))
    c.connected(SERVER_IP)
    c.command("setup", (), clock.now)
    assert c.take_outputs() == [OpenMedia()]
    c.media_opened(25000, clock.now)
    (request,) = c.take_outputs()
    assert request.data == (b"SETUP movie.Mjpeg RTSP/1.0\nCSeq: 1\n"
                            b"Transport: RTP/UDP; client_port= 25000")
    c.receive_control(server.feed(request.data), clock.now)
    c.tick(clock.now + TEXTBOOK_QUIET / 2)
    assert c.state is PlayerState.INIT  # could still be more of the reply
    c.tick(clock.now + QUIET)
    assert c.state is PlayerState.READY


def test_textbook_stream_ends_after_silence(server, clock):
    pair = Pair(PlayerController(textbook_target("127.0.0.1", 8554, 25000, "movie.Mjpeg")),
                server, clock)
    pair.command("setup")
    pair.command("play")
    c = pair.controller
    assert c.state is PlayerState.PLAYING
    pair.send_frame(0)
    assert len(c.pop_frames(clock.now + 1)) == 1
    c.tick(clock.now + TEXTBOOK_END_SILENCE - 0.01)
    assert not c.ended
    c.tick(clock.now + TEXTBOOK_END_SILENCE + 0.01)
    assert c.ended


def test_unknown_command_is_a_programming_error(server, clock):
    with pytest.raises(ValueError, match="unknown player command 'frob'"):
        PlayerController(parse_rtsp_url(URL)).command("frob")


def test_leaving_sends_teardown_at_once_behind_an_unanswered_request(server, clock):
    pair = standard(server, clock)
    pair.command("setup")
    c = pair.controller
    c.command("play", (None,), clock.now)
    (play,) = c.take_outputs()  # the server never answers this one
    c.command("pause", (), clock.now)
    assert c.take_outputs() == []  # queued behind PLAY
    c.leave(clock.now)
    (teardown,) = c.take_outputs()
    assert teardown.data.startswith(b"TEARDOWN ")
    # The PLAY's late answer does not stand in for the TEARDOWN's.
    c.receive_control(server.feed(play.data), clock.now)
    assert c.busy
    c.receive_control(server.feed(teardown.data), clock.now)
    assert c.state is PlayerState.INIT and not c.busy
    assert [r.method for r in server.requests][-2:] == ["PLAY", "TEARDOWN"]


def test_keepalive_answers_are_not_taken_for_requests(server, clock):
    pair = standard(server, clock)
    pair.command("setup")
    c = pair.controller
    c.client.public.discard("GET_PARAMETER")  # a server that only offers OPTIONS
    c.tick(clock.now + 30)
    (keepalive,) = c.take_outputs()
    assert keepalive.data.startswith(b"OPTIONS ")
    cseq = keepalive.data.split(b"CSeq: ")[1].split(b"\r\n")[0].decode()
    pair.events.clear()
    c.receive_control(f"RTSP/1.0 454 Session Not Found\r\nCSeq: {cseq}\r\n\r\n".encode(),
                      clock.now + 30)
    assert c.failed is None and c.take_events() == [] and c.state is PlayerState.READY


def test_nothing_more_is_sent_for_a_session_after_a_failure(server, clock):
    c = PlayerController(parse_rtsp_url(URL), ControllerOptions(reply_timeout=5))
    pair = Pair(c, server, clock)
    pair.command("setup")
    c.command("play", (None,), clock.now)
    c.take_outputs()  # the PLAY the server never answers
    c.tick(clock.now + 6)
    assert c.failed == "the server did not answer PLAY within 5 s"
    (teardown,) = c.take_outputs()
    assert teardown.data.startswith(b"TEARDOWN ")
    c.tick(clock.now + 100)  # past the keep-alive and report times
    assert c.take_outputs() == [] and c.next_timer(clock.now + 100) == float("inf")
