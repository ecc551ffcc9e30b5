"""RTSP sessions: the state machine as data, per-session stream state, the registry.

Theory of operation: RFC 2326 appendix A.2 gives the server's states; here
they are the table :data:`TRANSITIONS`, ``(state, event) -> new state``, where an
event is a method or :data:`STREAM_ENDED` (a PLAY range played out, or its
delivery failed). A pair missing from the table is answered 455 and leaves the
state as it was. :meth:`Session.apply` and :meth:`Session.end` are the only
writers of ``state`` and ``generation``: every event that starts or stops
delivery moves the generation on, and the pacing scheduler drops work queued
for an older generation, so a PAUSE or a new PLAY takes effect at once without
the scheduler being told. A session also carries what its stream needs (SSRC,
next sequence number, RTP timestamp base, next frame), changed by the service
and the scheduler inside ``session.guard``: a context manager the driver
supplies (a lock in the threaded server, nothing in single-threaded tests), so
this module needs no threads.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

from .rtsp import Dialect


class SessionState(enum.Enum):
    INIT = "Init"
    READY = "Ready"
    PLAYING = "Playing"
    RECORDING = "Recording"


S = SessionState
#: Not a method: the stream of a PLAY has ended (played to its end, or its delivery failed).
STREAM_ENDED = "stream ended"
# RFC 2326 A.2; methods that never change state are listed too. A session exists from SETUP
# to TEARDOWN, so Init accepts only SETUP. A session plays or records (``Session.record``,
# fixed at SETUP): the service refuses PLAY on a recording one and RECORD on a playing one.
TRANSITIONS: dict[tuple[SessionState, str], SessionState] = {
    (S.INIT, "SETUP"): S.READY,
    (S.READY, "SETUP"): S.READY,
    (S.READY, "PLAY"): S.PLAYING,
    (S.READY, "PAUSE"): S.READY,
    (S.READY, "TEARDOWN"): S.INIT,
    (S.PLAYING, "PLAY"): S.PLAYING,
    (S.PLAYING, "PAUSE"): S.READY,
    (S.PLAYING, "TEARDOWN"): S.INIT,
    (S.PLAYING, STREAM_ENDED): S.READY,
    (S.READY, "RECORD"): S.RECORDING,
    (S.RECORDING, "RECORD"): S.RECORDING,
    (S.RECORDING, "PAUSE"): S.READY,
    (S.RECORDING, "TEARDOWN"): S.INIT,
}
# Events that start or stop delivery: each one makes queued deliveries stale.
DELIVERY_EVENTS = frozenset({"PLAY", "RECORD", "PAUSE", "TEARDOWN", STREAM_ENDED})
STATELESS_METHODS = frozenset({"OPTIONS", "DESCRIBE", "GET_PARAMETER"})
for _state in SessionState:
    for _method in STATELESS_METHODS:
        TRANSITIONS[(_state, _method)] = _state


def next_state(state: SessionState, method: str) -> SessionState | None:
    """The state after ``method`` in ``state``, or None when the method is not valid there."""
    return TRANSITIONS.get((state, method))


class InvalidTransitionError(Exception):
    """An event that the session's state does not allow (the service answers 455)."""


class PayloadFormat(enum.Enum):
    RFC2435 = "rfc2435"  # standard players
    RAW_JPEG = "raw"  # the textbook client: one whole JPEG per datagram
    JPEG = "jpeg"  # HTTP viewers: the whole JPEG of any size, no RTP header used

    # Members are singletons: hashing by identity (in C) keeps the scheduler's per-frame
    # look-ups (keyed by format) off Enum's hash-by-name in Python.
    __hash__ = object.__hash__


class LowerTransport(enum.Enum):
    UDP = "udp"
    INTERLEAVED = "interleaved"
    HTTP = "http"  # a browser's multipart/x-mixed-replace response (httpview.py)


@dataclass(frozen=True)
class TransportChoice:
    """Where a session's packets go, as negotiated by SETUP."""

    lower: LowerTransport
    client_ip: str = ""
    rtp_port: int = 0
    rtcp_port: int | None = None
    rtp_channel: int = 0
    rtcp_channel: int = 1


def new_session_id() -> str:
    """20 decimal digits from ``secrets`` (66 bits): the textbook client parses ids with int()."""
    return str(10**19 + secrets.randbelow(9 * 10**19))


@dataclass(eq=False)
class Session:
    id: str
    dialect: Dialect
    media: object  # media.MjpegFile
    control_url: str
    transport: TransportChoice
    payload_format: PayloadFormat
    fps: float
    connection_id: int
    timeout: float
    last_activity: float
    idle_timeout: float = 300.0  # textbook sessions: see expired()
    ssrc: int = field(default_factory=lambda: secrets.randbits(32))
    next_seq: int = 0
    timestamp_base: int = field(default_factory=lambda: secrets.randbits(32))
    position: int = 0  # next frame to send
    stop_frame: int | None = None  # exclusive end of the PLAY range
    loop: bool = False  # a file starts again at its end (HTTP viewers) instead of ending
    state: SessionState = SessionState.READY
    generation: int = 0
    packets_sent: int = 0
    octets_sent: int = 0
    frames_sent: int = 0
    frames_dropped: int = 0  # of frames_sent, those none of whose packets went
    packets_dropped: int = 0
    receiver_reports: int = 0
    # A publisher's session (SETUP with mode=record): the stream it announced (sdp.AnnouncedVideo).
    announced: object | None = None
    # Held while the stream state above changes (see the module docstring).
    guard: AbstractContextManager = field(default_factory=nullcontext, repr=False)

    def __post_init__(self) -> None:
        if self.payload_format is PayloadFormat.RAW_JPEG:
            self.next_seq = 1  # the textbook client takes sequence numbers for frame numbers
        else:
            self.next_seq = secrets.randbits(16)

    @property
    def uses_keepalive(self) -> bool:
        # The textbook client never sends keep-alives: see expired().
        return self.dialect is Dialect.STANDARD

    @property
    def record(self) -> bool:
        return self.announced is not None

    @property
    def uses_rtcp(self) -> bool:
        return self.payload_format is PayloadFormat.RFC2435

    def rtp_timestamp(self, frame: int) -> int:
        """One 90 kHz timestamp per frame, from its position in the file."""
        return (self.timestamp_base + round(frame * 90000 / self.fps)) & 0xFFFFFFFF

    def rtp_timestamp_at(self, seconds: float) -> int:
        """The 90 kHz timestamp of a time on the stream's timeline (a live channel's
        frames carry their capture time on it)."""
        return (self.timestamp_base + round(seconds * 90000)) & 0xFFFFFFFF

    def apply(self, event: str) -> SessionState:
        """Take ``event`` (a method or :data:`STREAM_ENDED`) through :data:`TRANSITIONS`:
        the one place, with :meth:`end`, where state and generation change."""
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise InvalidTransitionError(f"{event} not valid in state {self.state.value}")
        if event in DELIVERY_EVENTS:
            self.generation += 1
        self.state = new
        return new

    def stream_ended(self, generation: int) -> bool:
        """The delivery started at ``generation`` has ended; False when a later event
        (PAUSE, another PLAY, the end of the session) has superseded it already."""
        if generation != self.generation or self.state is not SessionState.PLAYING:
            return False
        self.apply(STREAM_ENDED)
        return True

    def end(self) -> None:
        """The session is over, whatever its state (TEARDOWN, a timeout, its connection
        closed, the server stopping): nothing is delivered for it any more."""
        self.state = SessionState.INIT
        self.generation += 1

    def touch(self, now: float) -> None:
        self.last_activity = now

    def expired(self, now: float) -> bool:
        """A standard session without keep-alive for ``timeout``; a textbook session that is
        not playing (set up, paused or played to the end) without a request for
        ``idle_timeout``. A playing textbook session never expires: its client sends nothing
        while it watches."""
        if self.uses_keepalive:
            return now - self.last_activity > self.timeout
        idle = now - self.last_activity
        return self.state is not SessionState.PLAYING and idle > self.idle_timeout


class SessionLimitError(Exception):
    pass


class SessionRegistry:
    """All sessions of a server, by id; enforces the session limit."""

    def __init__(
        self,
        max_sessions: int,
        make_id: Callable[[], str] = new_session_id,
        lock: AbstractContextManager | None = None,
    ) -> None:
        self.max_sessions = max_sessions
        self._make_id = make_id
        self._sessions: dict[str, Session] = {}
        # The threaded server passes a lock; single-threaded users need none.
        self._lock = lock if lock is not None else nullcontext()

    def add(self, build: Callable[[str], Session]) -> Session:
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                raise SessionLimitError(f"{self.max_sessions} sessions already")
            session_id = self._make_id()
            while session_id in self._sessions:
                session_id = self._make_id()
            session = build(session_id)
            self._sessions[session_id] = session
            return session

    def get(self, session_id: str) -> Session | None:
        with self._lock:
            return self._sessions.get(session_id)

    def end(self, session: Session) -> bool:
        """Remove ``session`` and end it; False when it had ended already."""
        with self._lock:
            if self._sessions.pop(session.id, None) is None:
                return False
        with session.guard:
            session.end()
        return True

    def for_connection(self, connection_id: int) -> list[Session]:
        with self._lock:
            return [s for s in self._sessions.values() if s.connection_id == connection_id]

    def find_by_rtcp_source(self, ip: str, port: int) -> Session | None:
        with self._lock:
            for session in self._sessions.values():
                t = session.transport
                if t.lower is LowerTransport.UDP and t.client_ip == ip and t.rtcp_port == port:
                    return session
        return None

    def all(self) -> list[Session]:
        with self._lock:
            return list(self._sessions.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
