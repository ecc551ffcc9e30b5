"""One RTSP connection: read -> parse -> session logic -> reply; starts and stops streaming.

The classic course design keeps one worker thread per client connection; so
do we. The worker owns its socket. Protocol decisions are made by
:class:`mjpeg_rtsp.service.RtspService`, delivery by
:class:`mjpeg_rtsp.streaming.Streamer`; this file only moves bytes and carries
out the actions the service returns. It knows nothing of the server around it.
"""

from __future__ import annotations

import logging
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from mjpeg_rtsp.ports import Selector
from mjpeg_rtsp.rtsp import (
    NEED_DATA,
    Dialect,
    InterleavedFrame,
    Request,
    RtspError,
    RtspReader,
    format_response,
)
from mjpeg_rtsp.service import (
    Connection,
    EndSession,
    Reply,
    RtspService,
    StartRecording,
    StartStreaming,
)
from mjpeg_rtsp.streaming import ConnectionWriter, Streamer

log = logging.getLogger("ServerWorker")

POLL_INTERVAL = 1.0
# The textbook client sends each request in one write and no blank line after it:
# once its socket has been quiet this long, the request is complete.
TEXTBOOK_QUIET = 0.02
RECV_SIZE = 65536


@dataclass(frozen=True)
class WorkerSettings:
    idle_timeout: float  # a connection without a session closes after this long idle
    stopping: Callable[[], bool]  # true once the server is shutting down


class ServerWorker:
    def __init__(
        self,
        service: RtspService,
        streamer: Streamer,
        settings: WorkerSettings,
        sock: socket.socket,
        address: tuple,
        connection_id: int,
    ) -> None:
        self.service, self.streamer, self.settings = service, streamer, settings
        self.sock = sock
        self.address = address
        local_ip = sock.getsockname()[0]
        self.connection = Connection(connection_id, address[0], local_ip)
        self.reader = RtspReader()
        self.writer = ConnectionWriter(sock)
        self.closing = False
        self.keep_open = False  # set once a textbook session of this connection idled out
        self.last_request = time.monotonic()

    def run(self) -> None:
        log.info("connection %d from %s:%d", self.connection.id, *self.address[:2])
        try:
            self._serve()
        except OSError as exc:
            log.info("connection %d: %s", self.connection.id, exc)
        finally:
            for session in self.streamer.sessions_of(self.connection.id):
                self.streamer.end(session, "connection closed")
            self.service.connection_closed(self.connection.id)
            self.writer.close()
            try:
                self.sock.close()
            except OSError:
                pass
            log.info("connection %d closed", self.connection.id)

    def _serve(self) -> None:
        with Selector() as selector:
            selector.register(self.sock, selectors.EVENT_READ)
            self._serve_loop(selector)

    def _serve_loop(self, selector: selectors.BaseSelector) -> None:
        next_check = time.monotonic() + POLL_INTERVAL
        while not self.closing and not self.settings.stopping():
            pending = self.reader.pending_textbook_message()
            readable = selector.select(TEXTBOOK_QUIET if pending else POLL_INTERVAL)
            if readable:
                data = self.sock.recv(RECV_SIZE)
                self.reader.receive_data(data)
                self._drain()
                if not data:
                    return
            elif pending:
                request = self.reader.flush_textbook_message()
                if isinstance(request, Request):
                    self._answer(request)
            now = time.monotonic()
            if now >= next_check:
                next_check = now + POLL_INTERVAL
                if not self._check_timeouts(now):
                    return

    def _check_timeouts(self, now: float) -> bool:
        """End sessions without keep-alive; False when the connection itself has idled out."""
        sessions = self.streamer.sessions_of(self.connection.id)
        for action in self.service.expire_sessions(sessions):
            session = action.session
            log.info("session %s: %s for %.0f s", session.id, action.reason,
                     session.timeout if session.uses_keepalive else session.idle_timeout)
            if not session.uses_keepalive:
                # The textbook client reads replies by line index and spins on a closed
                # socket: keep its connection, so its next request gets a 454 it can parse.
                self.keep_open = True
            self.streamer.end(action.session, action.reason)
            sessions.remove(action.session)
        # A connection without a session must keep completing requests (slow senders too).
        idle = now - self.last_request
        if not sessions and idle > self.settings.idle_timeout and not self.keep_open:
            log.info("connection %d: no complete request for %.0f s, closing",
                     self.connection.id, idle)
            return False
        return True

    def _drain(self) -> None:
        while not self.closing:
            try:
                event = self.reader.next_event()
            except RtspError as exc:
                log.info("connection %d: %s", self.connection.id, exc)
                self._send(self.service.error_reply(exc, exc.cseq, exc.dialect))
                if exc.fatal:
                    self.closing = True
                continue
            if event is NEED_DATA:
                return
            if isinstance(event, Request):
                self._answer(event)
            elif isinstance(event, InterleavedFrame):
                self.streamer.interleaved(self.connection.id, event.channel, event.data)
            # Responses from the client (to requests we never send) are ignored.

    def _answer(self, request: Request) -> None:
        self.last_request = time.monotonic()
        reply = self.service.handle(request, self.connection)
        log.debug("%s %s -> %d", request.method, request.target, reply.response.status)
        self._send(reply)
        for action in reply.actions:
            if isinstance(action, StartStreaming):
                self.streamer.start(action.session, self.writer)
            elif isinstance(action, StartRecording):
                self.streamer.record(action.session)
            elif isinstance(action, EndSession):
                self.streamer.end(action.session, action.reason)

    def _send(self, reply: Reply) -> None:
        data = format_response(reply.response, reply.dialect, reply.session_id)
        if reply.dialect is Dialect.TEXTBOOK:
            log.debug("reply (textbook dialect): %r", data)
        self.writer.send_reply(data)
