"""Browsers watch over HTTP: pages, snapshots, MJPEG streams, status and metrics.

Theory of operation: the standard library's ``ThreadingHTTPServer`` runs in the RTSP
server's process, one thread per connection, with HTTP/1.1 keep-alive. Pages and framing
come from :mod:`mjpeg_rtsp.webpages`, figures from :mod:`mjpeg_rtsp.metrics`; this module
moves bytes. An HTTP viewer of ``/stream/NAME`` is a session like any other: it is added to
the server's :class:`~mjpeg_rtsp.session.SessionRegistry` (counting towards
``--max-sessions``: 503 when full) with :attr:`PayloadFormat.JPEG` and
:attr:`LowerTransport.HTTP`, and started by ``Streamer.start``, so a file goes through the
pacing scheduler (looping at its end) and a live channel through the fan-out, sharing the
cached frames with RTSP viewers. Its sink (``streaming.HttpSink``) queues whole JPEGs on a
small bounded queue that this request's thread drains into multipart parts; a slow or
stalled browser loses frames (counted) and never holds anyone else up. When the browser
goes, ``Streamer.end(session, "HTTP viewer left")`` ends the session as every session ends.

Names are confined as on the RTSP side (the media library's ``resolve_path``); request line
and header sizes are bounded by the RTSP limits; with ``--auth``/``--users`` every request
needs the same users' credentials, Digest (as RTSP) or Basic (browsers over HTTP only),
with the same per-address back-off.
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import metrics, webpages
from .auth import AuthBackoff, AuthStatus, DigestAuthenticator
from .live import LiveChannel, LivePaths
from .media import MediaError, MediaLibrary
from .rtsp import MAX_HEADER_BYTES, MAX_HEADERS, Dialect
from .service import SERVER_NAME, media_status
from .session import (
    LowerTransport,
    PayloadFormat,
    Session,
    SessionLimitError,
    SessionRegistry,
    SessionState,
    TransportChoice,
)
from .streaming import HttpSink, Streamer

log = logging.getLogger(__name__)

MjpegFileOrChannel = object  # media.MjpegFile or live.LiveChannel
# How often a streaming handler with no frame to write looks whether it should stop.
STREAM_POLL = 0.25


@dataclass
class HttpContext:
    """What the HTTP side needs of the server (wired by ``Server.py``)."""

    library: MediaLibrary
    live_paths: LivePaths
    registry: SessionRegistry
    streamer: Streamer
    fps: float  # the files' rate (--fps)
    rtsp_port: int
    new_guard: Callable[[], AbstractContextManager]
    figures: Callable[[], dict]  # metrics.collect of the whole server
    authenticator: DigestAuthenticator | None = None
    backoff: AuthBackoff | None = None
    clock: Callable[[], float] = time.monotonic
    idle_timeout: float = 30.0  # a connection quiet (or a send stalled) this long is closed
    max_connections: int = 1000


class _HeaderBudget:
    """The request's file object while its headers are read: the header section may take
    ``budget`` bytes and ``fields`` lines (the RTSP side's limits), else the standard
    library's parser hears of a too long line or too many headers and answers 431."""

    def __init__(self, rfile, budget: int, fields: int) -> None:
        self._rfile, self._left, self._fields, self._lines = rfile, budget, fields, 0

    def readline(self, limit: int = -1) -> bytes:
        allowed = self._left + 1 if limit < 0 else min(limit, self._left + 1)
        line = self._rfile.readline(allowed)
        self._left -= len(line)
        self._lines += 1
        if self._left < 0:
            raise http.client.LineTooLong(f"header section over {MAX_HEADER_BYTES} bytes")
        if self._lines > self._fields + 1:  # the blank line ends the section
            raise http.client.HTTPException(f"more than {self._fields} header fields")
        return line

    def __getattr__(self, name: str):
        return getattr(self._rfile, name)


class ViewerHandler(BaseHTTPRequestHandler):
    """One HTTP connection: requests one after another (keep-alive), or one stream."""

    protocol_version = "HTTP/1.1"
    # Errors in a request line say so with a status line (the default, 0.9, sends none).
    default_request_version = "HTTP/1.1"
    server: HttpViewServer

    def version_string(self) -> str:
        return SERVER_NAME

    def setup(self) -> None:
        self.timeout = self.server.context.idle_timeout
        super().setup()

    # --- reading requests --------------------------------------------------------------

    def handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(MAX_HEADER_BYTES + 1)
            if len(self.raw_requestline) > MAX_HEADER_BYTES:
                self.requestline = self.request_version = self.command = ""
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG,
                                f"the request line is over {MAX_HEADER_BYTES} bytes")
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return  # answered (400, 431, 505...) and closing
            if self.command == "GET":
                self._serve(head=False)
            elif self.command == "HEAD":
                self._serve(head=True)
            else:
                self.close_connection = True  # its body, if any, is not read
                self._error(HTTPStatus.METHOD_NOT_ALLOWED,
                            f"{self.command[:40]} is not allowed here",
                            [("Allow", webpages.ALLOWED_METHODS)])
            self.wfile.flush()
        except (TimeoutError, ConnectionError) as exc:
            log.debug("HTTP %s: %s", self.client_address[0], exc)
            self.close_connection = True

    def parse_request(self) -> bool:
        rfile = self.rfile
        self.rfile = _HeaderBudget(rfile, MAX_HEADER_BYTES, MAX_HEADERS)  # type: ignore[assignment]
        try:
            ok = super().parse_request()
        finally:
            self.rfile = rfile
        if ok and len(self.requestline.split()) == 2:
            self.send_error(HTTPStatus.BAD_REQUEST, "HTTP/0.9 requests are not served")
            return False
        if ok and (self.headers.get("Transfer-Encoding")
                   or self.headers.get("Content-Length", "0").strip() not in ("", "0")):
            self.close_connection = True  # a body we do not read: no next request after it
        return ok

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        log.debug("HTTP %s: " + format, self.client_address[0], *args)

    def log_error(self, format: str, *args) -> None:  # noqa: A002
        log.info("HTTP %s: " + format, self.client_address[0], *args)

    # --- answering ---------------------------------------------------------------------

    def _serve(self, head: bool) -> None:
        context = self.server.context
        if context.authenticator is not None and not self._authorized(context, head):
            return
        found = webpages.route(self.path)
        if found is None:
            self._error(HTTPStatus.NOT_FOUND, "no such page")
            return
        if found.view == "index":
            self._index(head)
        elif found.view == "status":
            body = json.dumps(context.figures(), indent=1).encode()
            self._respond(HTTPStatus.OK, body, "application/json", head)
        elif found.view == "metrics":
            body = metrics.render_prometheus(context.figures()).encode()
            self._respond(HTTPStatus.OK, body, metrics.PROMETHEUS_CONTENT_TYPE, head)
        else:
            media = self._media(found.name)
            if media is None:
                return
            if found.view == "watch":
                stream = metrics.describe_media(media, context.fps)
                page = webpages.watch_page(stream, f"{self._rtsp_base()}/{found.name}")
                self._respond(HTTPStatus.OK, page.encode(), webpages.HTML_CONTENT_TYPE, head)
            elif found.view == "snapshot":
                self._snapshot(media, head)
            else:
                self._stream(media, head)

    def _respond(self, status: int, body: bytes, content_type: str, head: bool,
                 extra: Sequence[tuple[str, str]] = (), cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if not cache:
            self.send_header("Cache-Control", "no-store")
        for name, value in (*webpages.SECURITY_HEADERS, *extra):
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _error(self, status: HTTPStatus, message: str,
               extra: Sequence[tuple[str, str]] = ()) -> None:
        """An error page that keeps the connection (unlike ``send_error``)."""
        log.info("HTTP %s %s %s -> %d %s", self.client_address[0], self.command,
                 self.path[:120], status, message)
        page = webpages.error_page(int(status), status.phrase, message)
        self._respond(status, page.encode(), webpages.HTML_CONTENT_TYPE,
                      self.command == "HEAD", extra)

    def _rtsp_base(self) -> str:
        local = self.connection.getsockname()[0]
        host = webpages.rtsp_host(self.headers.get("Host"), local)
        return f"rtsp://{host}:{self.server.context.rtsp_port}"

    def _authorized(self, context: HttpContext, head: bool) -> bool:
        """True for the users' credentials (Digest or Basic); otherwise 401 was sent."""
        authenticator = context.authenticator
        assert authenticator is not None
        address = self.client_address[0]
        header = self.headers.get("Authorization")
        backoff = context.backoff
        wait = backoff.retry_after(address, context.clock()) if backoff is not None else 0.0
        extra = []
        if wait > 0:
            result = authenticator.refuse_unchecked(header)
            extra.append(("Retry-After", str(int(wait) + 1)))
        elif header is not None and header.strip().lower().startswith("basic"):
            result = authenticator.check_basic(header)
        else:
            result = authenticator.check(self.command, header, self.path)
        if result.ok:
            if backoff is not None:
                backoff.succeeded(address)
            return True
        if result.status is AuthStatus.BAD and wait <= 0:
            self.server.auth_failures += 1
            log.info("HTTP %s %s %s: authentication failed for user %s: %s", address,
                     self.command, self.path[:120],
                     repr(result.user[:64]) if result.user else "(none)", result.reason)
            if backoff is not None:
                backoff.failed(address, context.clock())
        challenges = [("WWW-Authenticate", authenticator.challenge_for(result)),
                      ("WWW-Authenticate", f'Basic realm="{authenticator.realm}", '
                                           'charset="UTF-8"')]
        page = webpages.error_page(401, "Unauthorized", "this server needs a user name "
                                   "and password")
        self._respond(HTTPStatus.UNAUTHORIZED, page.encode(), webpages.HTML_CONTENT_TYPE,
                      head, challenges + extra)
        return False

    def _media(self, name: str) -> MjpegFileOrChannel | None:
        """The live channel or file a URL names (404 and the like answered: None)."""
        context = self.server.context
        try:
            decoded = urllib.parse.unquote(name, errors="strict")
        except UnicodeDecodeError:
            self._error(HTTPStatus.NOT_FOUND, "not found")
            return None
        channel = context.live_paths.get(decoded)
        if channel is not None:
            return channel
        try:
            return context.library.open(name)
        except MediaError as exc:
            status = HTTPStatus(int(media_status(exc)))
            self._error(status, "not found" if status == HTTPStatus.NOT_FOUND else str(exc))
            return None

    def _off_air(self, channel: LiveChannel) -> bool:
        """True (and 503, or 404 for a publisher's path) when a live channel has no frame."""
        if channel.on_air and channel.latest is not None:
            return False
        if channel.kind == "publish":
            self._error(HTTPStatus.NOT_FOUND, f"{channel.name}: its publisher has not sent "
                        "a frame yet")
        else:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"{channel.name}: {channel.status}",
                        [("Retry-After", "5")])
        return True

    def _index(self, head: bool) -> None:
        context = self.server.context
        streams: list[dict] = []
        for name in context.library.list_media():
            try:
                media = context.library.open(name)
            except MediaError as exc:
                streams.append({"name": name, "error": str(exc)})
                continue
            streams.append(metrics.describe_media(media, context.fps))
        for channel in context.live_paths.channels():
            streams.append(metrics.describe_media(channel, context.fps))
        page = webpages.index_page(streams, self._rtsp_base())
        self._respond(HTTPStatus.OK, page.encode(), webpages.HTML_CONTENT_TYPE, head)

    def _snapshot(self, media: MjpegFileOrChannel, head: bool) -> None:
        if isinstance(media, LiveChannel):
            if self._off_air(media):
                return
            jpeg = media.latest.jpeg  # type: ignore[union-attr]
        else:
            try:
                jpeg = media.jpeg_payload(0)[0]
            except MediaError as exc:
                self._error(HTTPStatus(int(media_status(exc))), str(exc))
                return
        self._respond(HTTPStatus.OK, jpeg, "image/jpeg", head)

    def _stream(self, media: MjpegFileOrChannel, head: bool) -> None:
        context = self.server.context
        live = isinstance(media, LiveChannel)
        if live and self._off_air(media):  # type: ignore[arg-type]
            return
        self.close_connection = True  # the stream ends with the connection
        if head:
            self._stream_headers()
            return
        try:
            session = context.registry.add(lambda session_id: self._new_session(
                session_id, media, live))
        except SessionLimitError as exc:
            self.server.refused_viewers += 1
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"the server is full ({exc})",
                        [("Retry-After", "10")])
            return
        reason = "HTTP viewer left"
        try:
            with session.guard:
                session.apply("PLAY")
            log.info("session %s: HTTP viewer %s of %s", session.id, self.client_address[0],
                     getattr(media, "name", "?"))
            sink = context.streamer.start(session, None)
            assert isinstance(sink, HttpSink)
            self._stream_headers()
            reason = self._write_frames(session, sink)
        except OSError as exc:
            reason = f"HTTP viewer left ({exc.__class__.__name__})"
        finally:
            context.streamer.end(session, reason)

    def _new_session(self, session_id: str, media: object, live: bool) -> Session:
        context = self.server.context
        return Session(
            id=session_id, dialect=Dialect.STANDARD, media=media,
            control_url=self.path[:200],
            transport=TransportChoice(LowerTransport.HTTP, self.client_address[0]),
            payload_format=PayloadFormat.JPEG, fps=context.fps,
            connection_id=self.server.next_connection_id(),
            timeout=context.idle_timeout, last_activity=context.clock(),
            guard=context.new_guard(), loop=not live,
        )

    def _stream_headers(self) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", webpages.STREAM_CONTENT_TYPE)
        self.send_header("Cache-Control", "no-store")
        for name, value in webpages.SECURITY_HEADERS:
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()

    def _write_frames(self, session: Session, sink: HttpSink) -> str:
        """Write the frames the sink gets until the viewer leaves, the stream ends (a live
        source gone, a file changed) or the server stops; the reason."""
        stopping = self.server.stopping
        while True:
            jpeg = sink.next_frame(STREAM_POLL)
            if jpeg is None:
                if stopping.is_set():
                    return "server shutting down"
                if session.state is not SessionState.PLAYING:
                    return "stream ended"
                continue
            self.wfile.write(b"".join((webpages.part_head(len(jpeg)), jpeg,
                                       webpages.PART_TAIL)))


class HttpViewServer(ThreadingHTTPServer):
    """The listener and its connection threads; stopped with :meth:`stop`."""

    daemon_threads = False  # joined at stop (server_close), after their sockets are shut
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], context: HttpContext) -> None:
        self.context = context
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.stopping = threading.Event()
        self.refused_connections = 0  # over --max-connections
        self.refused_viewers = 0  # over --max-sessions (503)
        self.auth_failures = 0
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        super().__init__(address, ViewerHandler)
        self.port = self.server_address[1]

    def next_connection_id(self) -> int:
        """HTTP sessions' connection ids are negative: no RTSP connection's (counted from 1)."""
        return -next(self._ids)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, args=(0.25,),
                                        name="http-accept", daemon=True)
        self._thread.start()

    def process_request(self, request, client_address) -> None:
        with self._open_lock:
            full = len(self._open) >= self.context.max_connections
            if not full:
                self._open.add(request)
        if full:
            self.refused_connections += 1
            try:
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                b"Retry-After: 10\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def stop(self) -> None:
        """Stop accepting, end every connection (streams end their sessions), join them."""
        self.stopping.set()
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
        with self._open_lock:
            connections = list(self._open)
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server_close()  # joins the connection threads
