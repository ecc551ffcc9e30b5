"""The server's RTSP logic: a request in, a reply and actions out (no sockets, no threads started).

Theory of operation: :meth:`RtspService.handle` validates a request, consults
the session table, and returns a :class:`Reply`: the response to send, the
dialect to format it in, and small action objects the driver carries out
after sending the reply (start streaming a session, end a session). Errors
become :class:`RtspError` with their status, so every failure path is one
place. Time is passed in (``now``), ids and SSRCs come from ``secrets``.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import urllib.parse
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

from .auth import AuthBackoff, AuthResult, AuthStatus, DigestAuthenticator
from .headers import (
    RangeError,
    TransportSpec,
    parse_npt_range,
    parse_port_range,
    parse_session_header,
    parse_transport,
    valid_cseq,
    valid_session_id,
)
from .live import LiveChannel, LivePathError, LivePaths
from .media import (
    MediaChangedError,
    MediaError,
    MediaIndexingError,
    MediaLibrary,
    MediaNotFoundError,
    MjpegFile,
    UnsupportedMediaError,
)
from .rtsp import Dialect, Headers, Request, Response, RtspError, RtspStatus
from .sdp import (
    MAX_RFC2435_DIMENSION,
    AnnouncedVideo,
    SdpError,
    VideoDescription,
    build_sdp,
    parse_announce,
)
from .session import (
    InvalidTransitionError,
    LowerTransport,
    PayloadFormat,
    Session,
    SessionLimitError,
    SessionRegistry,
    SessionState,
    TransportChoice,
    next_state,
)

log = logging.getLogger(__name__)

SERVER_NAME = "mjpeg-rtsp/0.1"
PUBLIC_METHODS = ("OPTIONS", "DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER")
PUBLISH_METHODS = ("ANNOUNCE", "RECORD")  # with --publish
# Paths a connection has announced and not yet set up (more is refused: a publisher needs one).
MAX_ANNOUNCED_PER_CONNECTION = 4
CONTROL_SUFFIX = "stream=0"
# RTP over UDP (RTP/AVP, RTP/AVP/UDP), interleaved in RTSP (RTP/AVP/TCP), the textbook client's.
TRANSPORT_PROTOCOLS = frozenset({"RTP/AVP", "RTP/AVP/UDP", "RTP/AVP/TCP", "RTP/UDP"})


@dataclass(frozen=True)
class StartStreaming:
    session: Session


@dataclass(frozen=True)
class StartRecording:
    session: Session


@dataclass(frozen=True)
class EndSession:
    session: Session
    reason: str


@dataclass
class Reply:
    response: Response
    dialect: Dialect
    session_id: str | None = None
    actions: list = field(default_factory=list)


@dataclass
class ServerConfig:
    fps: float = 20.0
    max_payload: int = 1400
    session_timeout: float = 60.0
    server_rtp_port: int = 0
    server_rtcp_port: int = 0
    # One connection may not hold every session slot of the server.
    max_sessions_per_connection: int = 8
    # The textbook client sends nothing between requests, so only a session of its that is not
    # playing (set up, paused, or played to the end) and has had no request for this long ends.
    textbook_idle: float = 300.0
    # ANNOUNCE/RECORD accepted (--publish): from loopback addresses, or from anyone with the
    # publishers' credentials when the service has a publish authenticator.
    publish: bool = False


@dataclass
class Connection:
    """What the logic needs to know about the RTSP connection a request came on."""

    id: int
    peer_ip: str
    local_ip: str = "127.0.0.1"


# The one place a kind of media error becomes an RTSP status (media.py knows nothing of RTSP).
MEDIA_STATUS: dict[type[MediaError], RtspStatus] = {
    MediaNotFoundError: RtspStatus.NOT_FOUND,
    MediaChangedError: RtspStatus.NOT_FOUND,  # TEARDOWN, then a new SETUP
    UnsupportedMediaError: RtspStatus.UNSUPPORTED_MEDIA_TYPE,
    MediaIndexingError: RtspStatus.INTERNAL_SERVER_ERROR,
}


def media_status(exc: MediaError) -> RtspStatus:
    """The status answering ``exc``: its kind's, else (a kind not listed) 500."""
    for kind in type(exc).__mro__:
        if kind in MEDIA_STATUS:
            return MEDIA_STATUS[kind]
    return RtspStatus.INTERNAL_SERVER_ERROR


class RtspService:
    def __init__(
        self,
        library: MediaLibrary,
        registry: SessionRegistry,
        config: ServerConfig,
        clock: Callable[[], float],
        authenticator: DigestAuthenticator | None = None,
        auth_backoff: AuthBackoff | None = None,
        new_guard: Callable[[], AbstractContextManager] = nullcontext,
        live: LivePaths | None = None,
        publish_authenticator: DigestAuthenticator | None = None,
    ) -> None:
        self.library = library
        self.live = live if live is not None else LivePaths()
        self.registry = registry
        self.config = config
        self.clock = clock
        # Each new session's guard (Session.guard): a lock from the threaded server.
        self.new_guard = new_guard
        self.authenticator = authenticator
        self.publish_authenticator = publish_authenticator
        self.public_methods = PUBLIC_METHODS + (PUBLISH_METHODS if config.publish else ())
        # (connection id, path) -> (announced stream, presentation URL), until SETUP.
        self._announced: dict[tuple[int, str], tuple[AnnouncedVideo, str]] = {}
        # Password guessing is slowed per address whenever authentication is on.
        if auth_backoff is None and (authenticator or publish_authenticator) is not None:
            auth_backoff = AuthBackoff()
        self.auth_backoff = auth_backoff
        self.auth_failures = 0  # requests refused for wrong credentials (for the figures)

    # --- entry points ---------------------------------------------------------------------

    def handle(self, request: Request, conn: Connection) -> Reply:
        """Answer one request; never raises for anything the peer sent.

        An unexpected exception is a bug, but the peer still gets an answer (500) and the
        connection and its other sessions live on."""
        try:
            return self._handle(request, conn)
        except Exception:
            log.exception("%s %s from %s: internal error", request.method,
                          request.target[:120], conn.peer_ip)
            return self.error_reply(
                RtspError("internal error", status=RtspStatus.INTERNAL_SERVER_ERROR),
                request.cseq, request.dialect,
            )

    def _handle(self, request: Request, conn: Connection) -> Reply:
        headers = Headers([("CSeq", valid_cseq(request.cseq) or "0")])
        try:
            if valid_cseq(request.cseq) is None:
                raise RtspError("missing or invalid CSeq header (1 to 10 digits)")
            if request.method != "OPTIONS":
                if self._is_publishing(request, conn):
                    denied = self._authorize_publisher(request, conn)
                elif self.authenticator is not None:
                    denied = self._authenticate(request, conn, self.authenticator)
                else:
                    denied = None
                if denied is not None:
                    return denied
            if request.headers.get("Require"):
                raise RtspError(
                    f"unsupported option {request.headers.get('Require')!r}",
                    status=RtspStatus.OPTION_NOT_SUPPORTED,
                )
            method = getattr(self, "_" + request.method.lower(), None)
            if request.method in PUBLISH_METHODS and not self.config.publish:
                raise RtspError(
                    f"{request.method}: publishing is off (the server runs without --publish)",
                    status=RtspStatus.METHOD_NOT_ALLOWED,
                )
            if request.method not in self.public_methods or method is None:
                raise RtspError(
                    f"method {request.method} is not implemented",
                    status=RtspStatus.NOT_IMPLEMENTED,
                )
            reply: Reply = method(request, conn, headers)
        except InvalidTransitionError as exc:  # the state moved on since it was checked
            error = RtspError(str(exc), status=RtspStatus.METHOD_NOT_VALID_IN_THIS_STATE)
            log.info("%s %s -> 455 %s", request.method, request.target[:120], exc)
            return self.error_reply(error, request.cseq, request.dialect, request.headers)
        except RtspError as exc:
            log.info("%s %s -> %d %s", request.method, request.target[:120], exc.status, exc)
            return self.error_reply(exc, request.cseq, request.dialect, request.headers)
        except MediaError as exc:
            status = media_status(exc)
            log.warning("%s %s -> %d %s", request.method, request.target[:120], status, exc)
            return self.error_reply(
                RtspError(str(exc), status=status), request.cseq, request.dialect,
                request.headers,
            )
        return reply

    def _is_publishing(self, request: Request, conn: Connection) -> bool:
        """Whether ``request`` is a publisher's: ANNOUNCE, RECORD, SETUP with mode=record, or
        any request on a recording session. Publishers are authorised apart from viewers."""
        if request.method in PUBLISH_METHODS:
            return True
        if request.method == "SETUP" and _wants_record(request.headers.get("Transport")):
            return True
        value = request.headers.get("Session")
        if value is None:
            return False
        session_id = parse_session_header(value)
        session = self.registry.get(session_id) if valid_session_id(session_id) else None
        return session is not None and session.record

    def _authorize_publisher(self, request: Request, conn: Connection) -> Reply | None:
        """None when the peer may publish: with the publishers' credentials when there are
        any, else only from this machine (a loopback address)."""
        if not self.config.publish:
            return None  # answered 405 (or 461 for a record SETUP) after this
        if self.publish_authenticator is not None:
            return self._authenticate(request, conn, self.publish_authenticator)
        if _is_loopback(conn.peer_ip):
            return None
        raise RtspError(
            f"{request.method} from {conn.peer_ip}: publishing is allowed from this machine "
            "only (the server needs --publish-users to accept publishers from elsewhere)",
            status=RtspStatus.FORBIDDEN,
        )

    def _authenticate(
        self, request: Request, conn: Connection, authenticator: DigestAuthenticator
    ) -> Reply | None:
        """None when the request carries valid credentials, else the 401 reply (RFC 7826
        section 19; OPTIONS is never asked for them). Textbook clients cannot authenticate.

        An address in its back-off gets 401 with Retry-After, its credentials not even
        checked, so guessing goes no faster than the back-off allows (and a client reports
        what it would for a wrong password)."""
        backoff = self.auth_backoff
        wait = backoff.retry_after(conn.peer_ip, self.clock()) if backoff is not None else 0.0
        if wait > 0:
            log.debug("%s %s from %s: 401 unchecked, authentication back-off for %.1f s",
                      request.method, request.target[:120], conn.peer_ip, wait)
            result = authenticator.refuse_unchecked(request.headers.get("Authorization"))
            return self._unauthorized(request, authenticator, result,
                                      ("Retry-After", str(math.ceil(wait))))
        result = authenticator.check(
            request.method, request.headers.get("Authorization"), request.target
        )
        if result.ok:
            if backoff is not None:
                backoff.succeeded(conn.peer_ip)
            return None
        if result.status is AuthStatus.BAD:
            self.auth_failures += 1
        if result.status is AuthStatus.BAD and backoff is not None:
            delay = backoff.failed(conn.peer_ip, self.clock())
            if delay > 0:
                log.warning("%s: repeated authentication failures, refused for %.1f s",
                            conn.peer_ip, delay)
        user = repr(result.user[:64]) if result.user is not None else "(none)"
        if result.status is AuthStatus.BAD:
            log.info("%s %s from %s: authentication failed for user %s: %s", request.method,
                     request.target[:120], conn.peer_ip, user, result.reason)
        else:
            log.debug("%s %s from %s: 401 (%s, user %s)", request.method, request.target[:120],
                      conn.peer_ip, result.reason, user)
        return self._unauthorized(request, authenticator, result)

    def _unauthorized(self, request: Request, authenticator: DigestAuthenticator,
                      result: AuthResult, *extra: tuple[str, str]) -> Reply:
        headers = Headers([
            ("CSeq", valid_cseq(request.cseq) or "0"),
            ("WWW-Authenticate", authenticator.challenge_for(result)),
            *extra,
            ("Server", SERVER_NAME),
        ])
        return Reply(Response(int(RtspStatus.UNAUTHORIZED), headers), request.dialect)

    def error_reply(
        self,
        error: RtspError,
        cseq: str | None,
        dialect: Dialect,
        request_headers: Headers | None = None,
    ) -> Reply:
        headers = Headers([("CSeq", valid_cseq(cseq) or "0")])
        session_id = None
        if request_headers is not None and request_headers.get("Session"):
            session_id = parse_session_header(request_headers.get("Session") or "")
            if not valid_session_id(session_id):
                session_id = None  # not an id we could have given: never echoed
            elif dialect is Dialect.STANDARD:
                headers.add("Session", session_id)
        if error.status == RtspStatus.OPTION_NOT_SUPPORTED and request_headers is not None:
            headers.add("Unsupported", request_headers.get("Require") or "")
        if error.status in (RtspStatus.NOT_IMPLEMENTED, RtspStatus.METHOD_NOT_ALLOWED):
            headers.add("Public", ", ".join(self.public_methods))
        headers.add("Server", SERVER_NAME)
        return Reply(Response(int(error.status), headers), dialect, session_id)

    def connection_closed(self, connection_id: int) -> None:
        """Forget what the connection announced and never set up."""
        for key in [k for k in self._announced if k[0] == connection_id]:
            self._announced.pop(key, None)

    def expire_sessions(self, sessions: list[Session]) -> list[EndSession]:
        """Sessions (of one connection) whose keep-alive timed out, and textbook sessions
        left idle while not playing (see :meth:`Session.expired`)."""
        now = self.clock()
        return [
            EndSession(s, "timed out" if s.uses_keepalive else "idle (not playing)")
            for s in sessions if s.expired(now)
        ]

    # --- methods --------------------------------------------------------------------------

    def _options(self, request: Request, conn: Connection, headers: Headers) -> Reply:
        session = self._optional_session(request)
        headers.add("Public", ", ".join(self.public_methods))
        return self._ok(request, headers, session)

    def _get_parameter(self, request: Request, conn: Connection, headers: Headers) -> Reply:
        session = self._optional_session(request)
        return self._ok(request, headers, session)

    def _describe(self, request: Request, conn: Connection, headers: Headers) -> Reply:
        self._optional_session(request)
        path, base_url = self._presentation(request)
        media = self._open(path)
        width, height = media.width, media.height
        live = isinstance(media, LiveChannel)
        if live:
            fps, duration = media.fps, None  # live: "a=range:npt=now-"
        else:
            # A large file still being indexed has no known end yet: "a=range:npt=0-".
            fps = self.config.fps
            duration = media.frame_count / fps if media.complete else None
        description = VideoDescription(
            name=path.rsplit("/", 1)[-1],
            width=width,
            height=height,
            fps=fps,
            duration=duration,
            control=CONTROL_SUFFIX,
            live=live,
        )
        sdp = build_sdp(description, conn.local_ip, session_id=abs(hash(path)) % 10**10)
        if (width % 8 or height % 8) and max(width, height) <= MAX_RFC2435_DIMENSION:
            # RFC 2435 headers count 8-pixel blocks; give exact dimensions to those who read them.
            sdp += f"a=x-dimensions:{width},{height}\r\n"
        headers.add("Content-Type", "application/sdp")
        headers.add("Content-Base", base_url + "/")
        response = Response(200, headers, sdp.encode())
        return Reply(response, request.dialect)

    def _setup(self, request: Request, conn: Connection, headers: Headers) -> Reply:
        if _wants_record(request.headers.get("Transport")):
            return self._setup_record(request, conn, headers)
        path, base_url = self._presentation(request)
        existing = self._optional_session(request)
        state = existing.state if existing else SessionState.INIT
        if next_state(state, "SETUP") is None:
            raise RtspError(
                f"SETUP not valid in state {state.value}",
                status=RtspStatus.METHOD_NOT_VALID_IN_THIS_STATE,
            )
        transport_header = request.headers.get("Transport")
        if not transport_header:
            raise RtspError(
                "SETUP without Transport header", status=RtspStatus.UNSUPPORTED_TRANSPORT
            )
        taken = {
            ch
            for s in self.registry.for_connection(conn.id)
            if s is not existing and s.transport.lower is LowerTransport.INTERLEAVED
            for ch in (s.transport.rtp_channel, s.transport.rtcp_channel)
        }
        choice, spec = self._choose_transport(transport_header, conn, taken, "PLAY")
        media = self._open(path)
        textbook = request.dialect is Dialect.TEXTBOOK
        if not isinstance(media, LiveChannel):
            media.check_deliverable(raw=textbook)  # 415 when no frame could reach this client
        control_url = path if textbook else base_url + "/" + CONTROL_SUFFIX
        if existing is not None:
            if existing.media is not media or existing.record:
                raise RtspError(
                    "a session plays one file", status=RtspStatus.METHOD_NOT_VALID_IN_THIS_STATE
                )
            with existing.guard:
                if choice != existing.transport:
                    # RFC 2326 section 10.4: a server may refuse to change the transport of a
                    # playing stream (455). Otherwise the change is applied: the next PLAY
                    # sends to the new destination, nothing more goes to the old one.
                    if existing.state is SessionState.PLAYING:
                        raise RtspError(
                            "SETUP cannot change the transport while playing: PAUSE first",
                            status=RtspStatus.METHOD_NOT_VALID_IN_THIS_STATE,
                        )
                    existing.transport = choice  # the streamer makes a new sink for it
                existing.touch(self.clock())
            session = existing
        else:
            held = len(self.registry.for_connection(conn.id))
            if held >= self.config.max_sessions_per_connection:
                raise RtspError(
                    f"this connection holds {held} sessions already (at most "
                    f"{self.config.max_sessions_per_connection})",
                    status=RtspStatus.SERVICE_UNAVAILABLE,
                )
            try:
                session = self.registry.add(
                    lambda session_id: Session(
                        id=session_id,
                        dialect=request.dialect,
                        media=media,
                        control_url=control_url,
                        transport=choice,
                        payload_format=PayloadFormat.RAW_JPEG if textbook
                        else PayloadFormat.RFC2435,
                        fps=self.config.fps,
                        connection_id=conn.id,
                        timeout=self.config.session_timeout,
                        last_activity=self.clock(),
                        idle_timeout=self.config.textbook_idle,
                        guard=self.new_guard(),
                    )
                )
            except SessionLimitError as exc:
                raise RtspError(str(exc), status=RtspStatus.SERVICE_UNAVAILABLE) from None
            log.info(
                "session %s: SETUP %s for %s (%s, %s)",
                session.id, path, conn.peer_ip, choice.lower.value, session.payload_format.value,
            )
        headers.add("Session", self._session_header(session))
        headers.add("Transport", self._transport_reply(spec, session))
        return self._ok(request, headers, session)

    def _play(self, request: Request, conn: Connection, headers: Headers) -> Reply:
        session = self._required_session(request, "PLAY")
        if session.record:
            raise RtspError("PLAY on a session set up to record",
                            status=RtspStatus.METHOD_NOT_VALID_IN_THIS_STATE)
        if isinstance(session.media, LiveChannel):
            return self._play_live(request, session, headers)
        session.media.check_unchanged()  # type: ignore[attr-defined]
        with session.guard:
            start: float | None = None
            end: float | None = None
            range_header = request.headers.get("Range")
            if range_header:
                try:
                    start, end = parse_npt_range(range_header)
                except RangeError as exc:
                    raise RtspError(str(exc), status=RtspStatus.INVALID_RANGE) from None
            media = session.media
            # A large file is indexed as it plays (media.py): has_frame indexes up to a frame.
            if start is not None:
                first = _frame_at(start, session.fps, math.floor)
                if not media.has_frame(first):  # type: ignore[attr-defined]
                    raise RtspError(
                        f"start {start:.3f} s is past the end "
                        f"({media.frame_count / session.fps:.3f} s)",  # type: ignore[attr-defined]
                        status=RtspStatus.INVALID_RANGE,
                    )
                session.position = first
            elif not media.has_frame(session.position):  # type: ignore[attr-defined]
                session.position = 0  # played to the end: PLAY starts over
            stop = None if end is None else _frame_at(end, session.fps, math.ceil)
            if stop is not None and stop <= session.position:
                raise RtspError("empty range", status=RtspStatus.INVALID_RANGE)
            if media.complete:  # type: ignore[attr-defined]
                stop = media.frame_count if stop is None else min(stop, media.frame_count)  # type: ignore[attr-defined]
            end_text = "" if stop is None else f"{stop / session.fps:.3f}"
            session.stop_frame = stop
            return self._playing(request, session, headers,
                                 f"npt={session.position / session.fps:.3f}-{end_text}",
                                 session.rtp_timestamp(session.position))

    def _play_live(self, request: Request, session: Session, headers: Headers) -> Reply:
        """PLAY of a live path: from the next frame that arrives (the live edge), whatever the
        Range asked (RFC 2326 section 12.29: a live stream's range is "now-")."""
        channel = session.media
        assert isinstance(channel, LiveChannel)
        current = self.live.get(channel.name)
        if current is None and channel.kind == "publish":
            raise RtspError(f"live {channel.name}: its publisher has left",
                            status=RtspStatus.NOT_FOUND)
        if current is not None and current is not channel:
            channel = current  # the path was published again: its new stream
        self._check_on_air(channel)
        with session.guard:
            session.media = channel
            latest = channel.latest
            return self._playing(request, session, headers, "npt=now-",
                                 session.rtp_timestamp_at(latest.time if latest else 0.0))

    def _playing(self, request: Request, session: Session, headers: Headers, range_text: str,
                 rtptime: int) -> Reply:
        """PLAY's state change and 200 reply, file or live (inside the session's guard)."""
        session.apply("PLAY")
        session.touch(self.clock())
        headers.add("Session", self._session_header(session))
        headers.add("Range", range_text)
        if session.payload_format is PayloadFormat.RFC2435:
            headers.add("RTP-Info", f"url={session.control_url};seq={session.next_seq};"
                                    f"rtptime={rtptime}")
        reply = self._ok(request, headers, session)
        reply.actions.append(StartStreaming(session))
        return reply

    def _announce(self, request: Request, conn: Connection, headers: Headers) -> Reply:
        """A publisher describes what it will send to a path (RFC 2326 section 10.3)."""
        path, base_url = self._presentation(request)
        name = self._publish_name(path)
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/sdp":
            raise RtspError(f"ANNOUNCE needs an application/sdp body, not {content_type[:60]!r}",
                            status=RtspStatus.UNSUPPORTED_MEDIA_TYPE)
        try:
            announced = parse_announce(request.body.decode("utf-8"))
        except UnicodeDecodeError:
            raise RtspError("ANNOUNCE body is not UTF-8 text") from None
        except SdpError as exc:
            raise RtspError(f"ANNOUNCE {name}: {exc}",
                            status=RtspStatus.UNSUPPORTED_MEDIA_TYPE) from None
        self._check_publishable(name, conn)
        held = [k for k in self._announced if k[0] == conn.id and k[1] != name]
        if len(held) >= MAX_ANNOUNCED_PER_CONNECTION:
            raise RtspError(f"this connection has announced {len(held)} paths already",
                            status=RtspStatus.SERVICE_UNAVAILABLE)
        self._announced[(conn.id, name)] = (announced, base_url)
        log.info("ANNOUNCE %s from %s: JPEG video (payload type %d)", name, conn.peer_ip,
                 announced.payload_type)
        return self._ok(request, headers, None)

    def _setup_record(self, request: Request, conn: Connection, headers: Headers) -> Reply:
        """SETUP with mode=record: the stream announced on this connection, to be received."""
        path, base_url = self._presentation(request)
        name = self._publish_name(path)
        announced_key = next(
            (k for k in self._announced
             if k[0] == conn.id and (name == k[1] or name.startswith(k[1] + "/"))), None)
        existing = self._optional_session(request)
        if existing is not None:
            if not existing.record or existing.state is SessionState.RECORDING:
                raise RtspError("SETUP for recording on this session is not valid now",
                                status=RtspStatus.METHOD_NOT_VALID_IN_THIS_STATE)
        elif announced_key is None:
            raise RtspError(f"SETUP {name} for recording without an ANNOUNCE of it first",
                            status=RtspStatus.METHOD_NOT_VALID_IN_THIS_STATE)
        transport_header = request.headers.get("Transport") or ""
        taken = {
            ch
            for s in self.registry.for_connection(conn.id)
            if s is not existing and s.transport.lower is LowerTransport.INTERLEAVED
            for ch in (s.transport.rtp_channel, s.transport.rtcp_channel)
        }
        choice, spec = self._choose_transport(transport_header, conn, taken, "RECORD")
        if existing is not None:
            with existing.guard:
                existing.transport = choice
                existing.touch(self.clock())
            session = existing
        else:
            assert announced_key is not None
            announced, base = self._announced[announced_key]
            channel_name = announced_key[1]
            held = len(self.registry.for_connection(conn.id))
            if held >= self.config.max_sessions_per_connection:
                raise RtspError(f"this connection holds {held} sessions already",
                                status=RtspStatus.SERVICE_UNAVAILABLE)
            try:
                channel = self.live.publish(channel_name, ("connection", conn.id))
            except LivePathError as exc:
                raise RtspError(str(exc), status=RtspStatus.METHOD_NOT_VALID_IN_THIS_STATE) \
                    from None
            try:
                session = self.registry.add(
                    lambda session_id: Session(
                        id=session_id, dialect=Dialect.STANDARD, media=channel,
                        control_url=base, transport=choice,
                        payload_format=PayloadFormat.RFC2435, fps=self.config.fps,
                        connection_id=conn.id, timeout=self.config.session_timeout,
                        last_activity=self.clock(), guard=self.new_guard(),
                        announced=announced,
                    )
                )
            except SessionLimitError as exc:
                self.live.unpublish(channel, "publisher's SETUP refused")
                raise RtspError(str(exc), status=RtspStatus.SERVICE_UNAVAILABLE) from None
            del self._announced[announced_key]
            log.info("session %s: SETUP %s for recording from %s (%s)", session.id,
                     channel_name, conn.peer_ip, choice.lower.value)
        headers.add("Session", self._session_header(session))
        headers.add("Transport", self._transport_reply(spec, session) + ";mode=record")
        return self._ok(request, headers, session)

    def _record(self, request: Request, conn: Connection, headers: Headers) -> Reply:
        session = self._required_session(request, "RECORD")
        if not session.record:
            raise RtspError("RECORD on a session set up to play",
                            status=RtspStatus.METHOD_NOT_VALID_IN_THIS_STATE)
        with session.guard:
            session.apply("RECORD")
            session.touch(self.clock())
            headers.add("Session", self._session_header(session))
            reply = self._ok(request, headers, session)
            reply.actions.append(StartRecording(session))
            return reply

    def _publish_name(self, path: str) -> str:
        name = urllib.parse.unquote(path, errors="strict").strip("/")
        if not name or any(seg in ("", ".", "..") for seg in name.split("/")) \
                or any(c in name for c in "\x00\\"):
            raise RtspError(f"{path[:120]!r} cannot be published", status=RtspStatus.FORBIDDEN)
        return name

    def _check_publishable(self, name: str, conn: Connection) -> None:
        """403 for a media file's or a --live path's name, 455 for one being published."""
        try:
            self.library.resolve_path(name)
        except MediaError:
            pass
        else:
            raise RtspError(f"{name}: a media file has that name", status=RtspStatus.FORBIDDEN)
        channel = self.live.get(name)
        if channel is None:
            return
        if channel.kind == "live":
            raise RtspError(f"{name}: a live source of the server's own",
                            status=RtspStatus.FORBIDDEN)
        if not self.live.held_by(name, ("connection", conn.id)):
            raise RtspError(f"{name} is being published by someone else",
                            status=RtspStatus.METHOD_NOT_VALID_IN_THIS_STATE)

    def _pause(self, request: Request, conn: Connection, headers: Headers) -> Reply:
        session = self._required_session(request, "PAUSE")
        with session.guard:
            session.apply("PAUSE")
            session.touch(self.clock())
            headers.add("Session", self._session_header(session))
            return self._ok(request, headers, session)

    def _teardown(self, request: Request, conn: Connection, headers: Headers) -> Reply:
        session = self._required_session(request, "TEARDOWN")
        # The session ends when the driver carries out EndSession (Streamer.end), after
        # this reply has gone: one place ends sessions, whatever the reason.
        headers.add("Session", session.id)
        reply = self._ok(request, headers, session)
        reply.actions.append(EndSession(session, "TEARDOWN"))
        return reply

    # --- helpers --------------------------------------------------------------------------

    def _ok(self, request: Request, headers: Headers, session: Session | None) -> Reply:
        headers.add("Server", SERVER_NAME)
        return Reply(Response(200, headers), request.dialect, session.id if session else None)

    def _session_header(self, session: Session) -> str:
        if session.dialect is Dialect.TEXTBOOK:
            return session.id
        return f"{session.id};timeout={int(session.timeout)}"

    def _optional_session(self, request: Request) -> Session | None:
        value = request.headers.get("Session")
        if value is None or (request.dialect is Dialect.TEXTBOOK and value.strip() == "0"):
            return None  # the textbook client sends "Session: 0" before it has one
        session_id = parse_session_header(value)
        session = self.registry.get(session_id) if valid_session_id(session_id) else None
        if session is None:
            raise RtspError("unknown session", status=RtspStatus.SESSION_NOT_FOUND)
        session.touch(self.clock())
        return session

    def _required_session(self, request: Request, method: str) -> Session:
        session = self._optional_session(request)
        if session is None:
            raise RtspError(
                f"{method} without a session (state Init)",
                status=RtspStatus.METHOD_NOT_VALID_IN_THIS_STATE,
            )
        if next_state(session.state, method) is None:
            raise RtspError(
                f"{method} not valid in state {session.state.value}",
                status=RtspStatus.METHOD_NOT_VALID_IN_THIS_STATE,
            )
        return session

    def _open(self, path: str) -> LiveChannel | MjpegFile:
        """The live channel at ``path`` (only while it is on air), else the library's file."""
        try:
            # The name as the library decodes it; _presentation has checked the encoding.
            name = urllib.parse.unquote(path, errors="strict")
        except UnicodeDecodeError:
            name = path
        channel = self.live.get(name)
        if channel is None:
            return self.library.open(path)
        self._check_on_air(channel)
        return channel

    @staticmethod
    def _check_on_air(channel: LiveChannel) -> None:
        if channel.on_air and channel.latest is not None:
            return
        if channel.kind == "publish":
            raise RtspError(f"live {channel.name}: its publisher has not sent a frame yet",
                            status=RtspStatus.NOT_FOUND)
        raise RtspError(f"live {channel.name}: {channel.status}",
                        status=RtspStatus.SERVICE_UNAVAILABLE)

    def _presentation(self, request: Request) -> tuple[str, str]:
        """(media path, presentation URL) of a request target, without the control suffix."""
        target = request.target
        if request.dialect is Dialect.TEXTBOOK:
            path = target
            base_url = target
        else:
            try:
                parsed = urllib.parse.urlsplit(target)
            except ValueError as exc:  # e.g. "rtsp://[::1/x": an unclosed IPv6 literal
                raise RtspError(f"bad request URL {target[:120]!r}: {exc}") from None
            if parsed.scheme.lower() not in ("rtsp", "rtspu", "rtsps") or not parsed.netloc:
                raise RtspError(f"bad request URL {target[:120]!r}")
            path = parsed.path
            netloc = parsed.netloc.rsplit("@", 1)[-1]  # never echo credentials
            base_url = f"{parsed.scheme}://{netloc}{path.rstrip('/')}"
        try:
            # The media library decodes the path again; refuse what it could not decode here,
            # where the answer is a status (overlong UTF-8 such as %c0%ae is invalid too).
            urllib.parse.unquote(path, errors="strict")
        except UnicodeDecodeError:
            raise RtspError(f"bad percent-encoding in {target[:120]!r} (not UTF-8)") from None
        stripped = path.rstrip("/")
        if stripped.endswith("/" + CONTROL_SUFFIX):
            stripped = stripped[: -len(CONTROL_SUFFIX) - 1]
            base_url = base_url[: -len(CONTROL_SUFFIX) - 1]
        return stripped, base_url

    def _choose_transport(
        self, header: str, conn: Connection, taken_channels: set[int], wanted_mode: str
    ) -> tuple[TransportChoice, TransportSpec]:
        reasons = []
        for spec in parse_transport(header):
            protocol = spec.protocol.upper()
            lower = spec.lower_transport
            if protocol not in TRANSPORT_PROTOCOLS:
                reasons.append(f"{spec.protocol[:40]}: unsupported profile")
                continue
            if spec.is_multicast:
                reasons.append(f"{spec.protocol}: multicast not offered")
                continue
            mode = (spec.param("mode") or "PLAY").strip('"').upper()
            if mode != wanted_mode:
                reasons.append(f"mode {mode[:20]} not offered here")
                continue
            try:
                if lower == "UDP":
                    ports = spec.param("client_port")
                    if not ports:
                        reasons.append("UDP without client_port")
                        continue
                    rtp, rtcp = parse_port_range(ports)
                    if protocol == "RTP/UDP":
                        rtcp = None  # the textbook client has no RTCP port
                    elif rtcp is None:
                        rtcp = rtp + 1  # RFC 3550 section 11: RTCP on the next port
                    if rtp == 0 or rtcp == 0 or (rtcp is not None and not rtp < rtcp <= 65535):
                        reasons.append(f"client_port {ports[:40]}: RTP needs a port of 1..65534 "
                                       "and RTCP a higher one up to 65535")
                        continue
                    # RTP goes only to the peer that set the session up; destination= is ignored.
                    return TransportChoice(LowerTransport.UDP, conn.peer_ip, rtp, rtcp), spec
                if lower == "TCP":
                    channels = spec.param("interleaved")
                    if channels:
                        low, high = parse_port_range(channels)
                        high = low + 1 if high is None else high
                        if not low < high <= 255:
                            raise ValueError(f"interleaved={channels[:40]}: channels must be "
                                             "a pair of 0..255, RTP below RTCP")
                    else:
                        low, high = 0, 1
                    while low in taken_channels or high in taken_channels:
                        low, high = low + 2, high + 2
                    if high > 255:
                        reasons.append("no free interleaved channels")
                        continue
                    return TransportChoice(
                        LowerTransport.INTERLEAVED, conn.peer_ip,
                        rtp_channel=low, rtcp_channel=high,
                    ), spec
            except ValueError as exc:
                reasons.append(f"{spec.protocol}: {exc}")
                continue
            reasons.append(f"{spec.protocol}: unsupported lower transport")
        raise RtspError(
            "no acceptable transport: " + "; ".join(reasons or ["empty Transport"]),
            status=RtspStatus.UNSUPPORTED_TRANSPORT,
        )

    def _transport_reply(self, spec: TransportSpec, session: Session) -> str:
        t = session.transport
        ssrc = f"ssrc={session.ssrc:08X}"
        protocol = spec.protocol.upper()  # one of TRANSPORT_PROTOCOLS, never the peer's bytes
        if t.lower is LowerTransport.INTERLEAVED:
            return f"RTP/AVP/TCP;unicast;interleaved={t.rtp_channel}-{t.rtcp_channel};{ssrc}"
        if t.rtcp_port is None:
            return (
                f"{protocol};unicast;client_port={t.rtp_port};"
                f"server_port={self.config.server_rtp_port}"
            )
        return (
            f"{protocol};unicast;client_port={t.rtp_port}-{t.rtcp_port};"
            f"server_port={self.config.server_rtp_port}-{self.config.server_rtcp_port};{ssrc}"
        )


def _wants_record(transport: str | None) -> bool:
    """Whether a SETUP's Transport asks to record (mode=record in any of its choices)."""
    if not transport or "record" not in transport.lower():
        return False
    try:
        specs = parse_transport(transport)
    except ValueError:
        return False
    return any((spec.param("mode") or "").strip('"').upper() == "RECORD" for spec in specs)


def _is_loopback(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _frame_at(seconds: float, fps: float, rounding: Callable[[float], int]) -> int:
    """The frame at ``seconds`` (rounded by ``rounding``), capped so that a huge or infinite
    time is simply past any end."""
    frames = seconds * fps
    if not frames < 2**62:
        return 2**62
    return rounding(frames + (1e-6 if rounding is math.floor else -1e-6))
