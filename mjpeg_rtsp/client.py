"""The player's RTSP side, without sockets: requests out, replies in, state and media info.

Theory of operation: :class:`RtspClient` formats each request (remembering its
CSeq), and :meth:`RtspClient.receive` matches a reply to its request by CSeq,
reads it by header name (never by line position), updates the client state
(Init -> Ready -> Playing, RFC 2326 appendix A.1) and returns a
:class:`ClientReply` saying what happened. Both dialects are spoken: the
standard one (OPTIONS, DESCRIBE with SDP, control URLs, keep-alive) and the
course's textbook one (bare file name, ``\\n`` line ends, no blank line,
``Transport: RTP/UDP; client_port= N``). Authentication (RFC 2617 Basic and
Digest, as RTSP uses them) is answered once per challenge.
"""

from __future__ import annotations

import base64
import enum
import re
import secrets
import urllib.parse
from dataclasses import dataclass, field

from .auth import digest_ha1, digest_response, parse_auth_params
from .headers import (
    RangeError,
    parse_npt_range,
    parse_port_range,
    parse_session_header,
    parse_session_timeout,
    parse_transport,
)
from .rtsp import Dialect, Headers, Request, Response, format_request
from .sdp import SdpError, jpeg_format, parse_framerate, parse_sdp, parse_x_dimensions

USER_AGENT = "mjpeg-rtsp-player/0.1"
DEFAULT_RTSP_PORT = 554
MAX_AUTH_ATTEMPTS = 3


class PlayerState(enum.Enum):
    INIT = "Init"
    READY = "Ready"
    PLAYING = "Playing"


P = PlayerState
#: RFC 2326 appendix A.1, the client's states: ``(state, method) -> state`` after a
#: successful reply. A method missing for a state leaves the state as it is (OPTIONS,
#: DESCRIBE, keep-alives; a reply the server should not have given).
CLIENT_TRANSITIONS: dict[tuple[PlayerState, str], PlayerState] = {
    (P.INIT, "SETUP"): P.READY,
    (P.READY, "SETUP"): P.READY,
    (P.READY, "PLAY"): P.PLAYING,
    (P.READY, "PAUSE"): P.READY,
    (P.READY, "TEARDOWN"): P.INIT,
    (P.PLAYING, "PLAY"): P.PLAYING,
    (P.PLAYING, "PAUSE"): P.READY,
    (P.PLAYING, "TEARDOWN"): P.INIT,
}


class ClientError(Exception):
    """Something the user must be told: a refused request, a bad reply, a bad URL."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class StreamTarget:
    """What to play: a standard ``rtsp://`` URL or the course's (host, port, file)."""

    dialect: Dialect
    host: str
    port: int
    path: str  # URL path (standard) or bare file name (textbook)
    url: str  # without credentials
    user: str | None = None
    password: str | None = None
    rtp_port: int = 0  # textbook: the port given on the command line


def parse_rtsp_url(url: str) -> StreamTarget:
    """``rtsp://[user:pass@]host[:port]/path`` (RFC 2326 section 3.2)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "rtsp" or not parts.hostname:
        raise ValueError(f"not an rtsp:// URL: {url!r}")
    try:
        port = parts.port or DEFAULT_RTSP_PORT
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    host = parts.hostname
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    path = parts.path or "/"
    clean = urllib.parse.urlunsplit(("rtsp", netloc, path, parts.query, ""))
    user = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password else None
    return StreamTarget(Dialect.STANDARD, host, port, path, clean, user, password)


def textbook_target(host: str, port: int, rtp_port: int, file_name: str) -> StreamTarget:
    return StreamTarget(Dialect.TEXTBOOK, host, port, file_name, file_name, rtp_port=rtp_port)


@dataclass
class MediaInfo:
    """What DESCRIBE told us (defaults describe a textbook server, which has no DESCRIBE)."""

    control_url: str
    aggregate_url: str
    payload_type: int = 26
    clock_rate: int = 90000
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None


@dataclass
class ClientReply:
    method: str
    response: Response
    ok: bool
    retry: bytes | None = None  # the request again, with credentials
    keepalive: bool = False  # the answer to a keep-alive (not to a user's request)
    play_range: tuple[float | None, float | None] | None = None
    rtp_info: dict[str, str] = field(default_factory=dict)
    # RTP-Info of PLAY (RFC 2326 12.33) as numbers, None when absent or out of range
    rtp_seq: int | None = None
    rtp_time: int | None = None


_ABSOLUTE_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


#: The longest duration taken from an SDP ``a=range``, or position from a PLAY ``Range``
#: (about 31 years): beyond that the value is not a file's, and is taken as not given.
MAX_DURATION = 1e9


def _bounded_int(text: str | None, maximum: int) -> int | None:
    """ASCII digits (``str.isdigit`` also takes "²") of a value in 0..maximum, else None."""
    if text is None or not re.fullmatch(r"[0-9]{1,20}", text):
        return None
    value = int(text)
    return value if value <= maximum else None


def resolve_control(base: str, control: str) -> str:
    """An ``a=control`` value against the base URL (RFC 2326 C.1.1).

    ``base`` is the Content-Base, else the Content-Location, else the URL that was
    DESCRIBEd. An empty control or ``*`` is the base itself, exactly as given (servers
    such as VLC and rtsp-server-perl only know the URL they announced, not one with a
    ``/`` appended); an absolute URL is taken as it is. A relative control names a part
    below the base: a ``/`` is put between the two when the base has none, as live555,
    ffmpeg and GStreamer do, since servers commonly send ``Content-Base: rtsp://h/cam``
    with ``a=control:track1`` meaning ``rtsp://h/cam/track1``.
    """
    if control.strip() in ("", "*"):
        return base
    if _ABSOLUTE_URL.match(control):
        return control
    if not base.endswith("/"):
        base += "/"
    return base + control.lstrip("/")


class RtspClient:
    def __init__(self, target: StreamTarget, user_agent: str = USER_AGENT) -> None:
        self.target = target
        self.user_agent = user_agent
        self.state = PlayerState.INIT
        self.session_id: str | None = None
        self.session_timeout = 60.0
        self.public: set[str] = set()
        self.media: MediaInfo | None = (
            MediaInfo(target.path, target.path) if target.dialect is Dialect.TEXTBOOK else None
        )
        self.server_ports: tuple[int, int | None] | None = None
        self.interleaved: tuple[int, int] | None = None
        self.ssrc: int | None = None
        self._cseq = 0
        self._keepalives: set[int] = set()  # CSeqs of keep-alives awaiting an answer
        self._pending: dict[int, tuple[str, Request]] = {}
        self._auth_header: str | None = None
        self._auth_tried: set[str] = set()

    # --- requests -------------------------------------------------------------------------

    def options(self) -> bytes:
        return self.request("OPTIONS", self.target.url)

    def describe(self) -> bytes:
        return self.request("DESCRIBE", self.target.url, Accept="application/sdp")

    def setup(self, transport: str, rtp_port: int = 0) -> bytes:
        """SETUP over ``transport`` ("udp" or "tcp"); ``rtp_port`` is our even RTP port for UDP."""
        if self.target.dialect is Dialect.TEXTBOOK:
            return self.request("SETUP", self.target.path,
                                Transport=f"RTP/UDP; client_port= {self.target.rtp_port}")
        if self.media is None:
            raise ClientError("SETUP before DESCRIBE")
        if transport == "tcp":
            spec = "RTP/AVP/TCP;unicast;interleaved=0-1"
        else:
            spec = f"RTP/AVP;unicast;client_port={rtp_port}-{rtp_port + 1}"
        return self.request("SETUP", self.media.control_url, Transport=spec)

    def play(self, start: float | None = None) -> bytes:
        if self.target.dialect is Dialect.TEXTBOOK:
            return self.request("PLAY", self.target.path)
        extra = {"Range": f"npt={start:.3f}-"} if start is not None else {}
        return self.request("PLAY", self._aggregate(), **extra)

    def pause(self) -> bytes:
        return self.request("PAUSE", self._aggregate())

    def teardown(self) -> bytes:
        return self.request("TEARDOWN", self._aggregate())

    def keepalive(self) -> bytes:
        method = "GET_PARAMETER" if "GET_PARAMETER" in self.public else "OPTIONS"
        data = self.request(method, self._aggregate())
        self._keepalives.add(self._cseq)
        return data

    def request(self, method: str, target: str, **fields: str) -> bytes:
        self._cseq += 1
        headers = Headers([("CSeq", str(self._cseq))])
        textbook = self.target.dialect is Dialect.TEXTBOOK
        for name, value in fields.items():
            headers.add(name.replace("_", "-"), value)
        if self.session_id and method != "DESCRIBE":
            headers.add("Session", self.session_id)
        elif textbook and method != "SETUP":
            headers.add("Session", "0")  # what the course's client sends before it has one
        if not textbook:
            headers.add("User-Agent", self.user_agent)
            if self._auth_header:
                headers.add("Authorization", self._auth_for(method, target))
        request = Request(method, target, headers,
                          dialect=Dialect.TEXTBOOK if textbook else Dialect.STANDARD)
        self._pending[self._cseq] = (method, request)
        return format_request(request)

    def _aggregate(self) -> str:
        if self.target.dialect is Dialect.TEXTBOOK:
            return self.target.path
        return self.media.aggregate_url if self.media else self.target.url

    # --- replies --------------------------------------------------------------------------

    def receive(self, response: Response) -> ClientReply | None:
        """Apply a reply; None when it answers no request of ours (stale or unsolicited)."""
        cseq_text = response.headers.get("CSeq", "")
        try:
            cseq = int((cseq_text or "").strip())
        except ValueError:
            return None
        pending = self._pending.pop(cseq, None)
        if pending is None:
            return None
        method, request = pending
        reply = ClientReply(method, response, 200 <= response.status < 300,
                            keepalive=cseq in self._keepalives)
        self._keepalives.discard(cseq)
        if response.status == 401 and self.target.user is not None:
            reply.retry = self._authenticate(response, request)
            return reply
        if not reply.ok:
            return reply
        handler = getattr(self, "_on_" + method.lower(), None)
        if handler is not None:
            handler(response, reply)
        # The one place the state changes, once the reply has been read without error.
        self.state = CLIENT_TRANSITIONS.get((self.state, method), self.state)
        return reply

    def _on_options(self, response: Response, reply: ClientReply) -> None:
        public = response.headers.get("Public") or ""
        self.public = {m.strip().upper() for m in public.split(",") if m.strip()}

    def _on_describe(self, response: Response, reply: ClientReply) -> None:
        content_type = (response.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type.lower() != "application/sdp":
            raise ClientError(f"DESCRIBE returned {content_type or 'no content type'}, not SDP")
        try:
            sdp = parse_sdp(response.body.decode("utf-8", "replace"))
        except SdpError as exc:
            raise ClientError(f"bad SDP: {exc}") from None
        base = (response.headers.get("Content-Base") or response.headers.get("Content-Location")
                or self.target.url)
        video = None
        for media in sdp.media:
            found = jpeg_format(media) if media.kind == "video" else None
            if found:
                video = (media, *found)
                break
        if video is None:
            raise ClientError("the stream has no Motion-JPEG (RTP/JPEG) video")
        media, pt, rate = video
        session_control = sdp.attribute("control")
        info = MediaInfo(
            control_url=resolve_control(base, media.attribute("control") or ""),
            # No session-level control: the aggregate is the base itself (C.1.1).
            aggregate_url=resolve_control(base, session_control or ""),
            payload_type=pt,
            clock_rate=rate,
        )
        # Every value below is the server's word: out of range means "not given".
        range_value = media.attribute("range") or sdp.attribute("range")
        if range_value:
            try:
                start, end = parse_npt_range(range_value)
                if end is not None and 0 < end - (start or 0.0) <= MAX_DURATION:
                    info.duration = end - (start or 0.0)
            except RangeError:
                pass
        dims = parse_x_dimensions(media.attribute("x-dimensions"))
        if dims:
            # Sizes a SOF cannot hold, or over the pixel limit, are refused per frame by the
            # depacketizer, which counts them.
            info.width, info.height = dims
        info.fps = parse_framerate(media.attribute("framerate") or sdp.attribute("framerate"))
        self.media = info

    def _on_setup(self, response: Response, reply: ClientReply) -> None:
        session = response.headers.get("Session")
        if not session:
            raise ClientError("SETUP reply without a Session header")
        self.session_id = parse_session_header(session)
        timeout = parse_session_timeout(session)
        if timeout is not None:
            self.session_timeout = timeout
        transport = response.headers.get("Transport") or ""
        for spec in parse_transport(transport)[:1]:
            try:
                if spec.param("server_port"):
                    low, high = parse_port_range(spec.param("server_port"))
                    # Receiver reports go to high, or low + 1: without a usable port, none.
                    if 0 < low < 0xFFFF and high != 0:
                        self.server_ports = (low, high)
                if spec.param("interleaved"):
                    low, high = parse_port_range(spec.param("interleaved"))
                    high = high if high is not None else low + 1
                    if not (low <= 255 and high <= 255):  # one byte on the wire (10.12)
                        raise ValueError("interleaved")
                    self.interleaved = (low, high)
            except ValueError:
                raise ClientError(f"bad Transport in SETUP reply: {transport[:200]!r}") from None
            ssrc = spec.param("ssrc")
            if ssrc and re.fullmatch(r"[0-9A-Fa-f]{1,8}", ssrc):
                self.ssrc = int(ssrc, 16)

    def _on_play(self, response: Response, reply: ClientReply) -> None:
        range_header = response.headers.get("Range")
        if range_header:
            try:
                reply.play_range = parse_npt_range(range_header)
            except RangeError:
                reply.play_range = None
            if reply.play_range and any(t is not None and t > MAX_DURATION
                                        for t in reply.play_range):
                reply.play_range = None  # a position no file has
        info = response.headers.get("RTP-Info")
        if info:
            first = info.split(",")[0]
            for part in first.split(";"):
                key, sep, value = part.strip().partition("=")
                if sep:
                    reply.rtp_info[key.strip().lower()] = value.strip()
            reply.rtp_seq = _bounded_int(reply.rtp_info.get("seq"), 0xFFFF)
            reply.rtp_time = _bounded_int(reply.rtp_info.get("rtptime"), 0xFFFFFFFF)

    def _on_teardown(self, response: Response, reply: ClientReply) -> None:
        self.session_id = None
        # A new SETUP may bring a new source, ports and channels.
        self.ssrc = self.server_ports = self.interleaved = None

    # --- authentication (RFC 2617 as RTSP uses it) -----------------------------------------

    def _authenticate(self, response: Response, request: Request) -> bytes | None:
        if len(self._auth_tried) >= MAX_AUTH_ATTEMPTS:
            return None  # a server that changes its nonce on every 401 must not loop us
        challenges = response.headers.get_all("WWW-Authenticate")
        digest = next((c for c in challenges if c.lower().startswith("digest")), None)
        basic = next((c for c in challenges if c.lower().startswith("basic")), None)
        if digest:
            params = parse_auth_params(digest[6:])
            if params is None:
                return None  # a challenge we cannot read: the 401 stands
            key = "digest:" + params.get("nonce", "")
            stale = params.get("stale", "").lower() == "true"
            if key in self._auth_tried and not stale:
                return None
            self._auth_tried.add(key)
            self._auth_header = "Digest"
            self._digest = params
        elif basic:
            if "basic" in self._auth_tried:
                return None
            self._auth_tried.add("basic")
            self._auth_header = "Basic"
        else:
            return None
        fields = {k: v for k, v in request.headers if k.lower() not in
                  ("cseq", "authorization", "session", "user-agent")}
        return self.request(request.method, request.target, **fields)

    def _auth_for(self, method: str, uri: str) -> str:
        user, password = self.target.user or "", self.target.password or ""
        if self._auth_header == "Basic":
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            return f"Basic {token}"
        realm = self._digest.get("realm", "")
        nonce = self._digest.get("nonce", "")
        ha1 = digest_ha1(user, realm, password)
        fields = [f'username="{user}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
        qop = self._digest.get("qop", "")
        if "auth" in [q.strip() for q in qop.split(",")]:
            cnonce = secrets.token_hex(8)
            self._nc = getattr(self, "_nc", 0) + 1
            nc = f"{self._nc:08x}"
            digest = digest_response(ha1, method, uri, nonce, "auth", nc, cnonce)
            fields += [f'qop=auth, nc={nc}, cnonce="{cnonce}"']
        else:
            digest = digest_response(ha1, method, uri, nonce)
        fields.append(f'response="{digest}"')
        if "opaque" in self._digest:
            fields.append(f'opaque="{self._digest["opaque"]}"')
        return "Digest " + ", ".join(fields)
