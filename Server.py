"""RTSP/RTP Motion-JPEG streaming server.

Usage: ``python Server.py [PORT] [--root DIR] ...`` (``--help`` explains every
option). Serves every ``.mjpeg``/``.mjpg``/``.Mjpeg`` file of the media folder to
the networking course's textbook client and to standard players (ffplay, VLC,
GStreamer) at the same time. Ctrl+C stops it cleanly.
"""

from __future__ import annotations

import argparse
import errno
import itertools
import logging
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import mjpeg_rtsp
from mjpeg_rtsp.auth import AuthBackoff, DigestAuthenticator, read_users
from mjpeg_rtsp.cli import port_number, positive_float
from mjpeg_rtsp.headers import valid_cseq
from mjpeg_rtsp.httpview import HttpContext, HttpViewServer
from mjpeg_rtsp.live import LivePathError, LivePaths
from mjpeg_rtsp.media import MediaError, MediaLibrary
from mjpeg_rtsp.metrics import server_figures
from mjpeg_rtsp.rfc2435 import DEFAULT_MAX_PAYLOAD
from mjpeg_rtsp.rtsp import (
    Dialect,
    Headers,
    Request,
    Response,
    RtspError,
    RtspReader,
    format_response,
)
from mjpeg_rtsp.service import RtspService, ServerConfig

if TYPE_CHECKING:
    from mjpeg_rtsp.sources import LiveSpec
from mjpeg_rtsp.session import SessionRegistry
from mjpeg_rtsp.streaming import Streamer
from ServerWorker import ServerWorker, WorkerSettings

log = logging.getLogger("Server")

DEFAULT_PORT = 8554
DEFAULT_MAX_CONNECTIONS = 1000
# Descriptors kept free beside the connections: listener, UDP ports, media files, logs.
SPARE_DESCRIPTORS = 64
# A connection refused because the server is full gets this long to send its request, so
# the 503 can carry its CSeq (standard clients match replies by it); at most this many wait.
REFUSAL_WAIT = 1.0
MAX_WAITING_REFUSALS = 64


class _Refusal:
    """A connection being turned away: what it has sent so far, and until when it may send."""

    def __init__(self, deadline: float) -> None:
        self.reader = RtspReader()
        self.deadline = deadline
        self.request: Request | None = None
SAMPLE_NAME = "movie.Mjpeg"  # the course's sample clip, bundled with the server


class StreamingServer:
    """The listening socket, one worker thread per connection, the pacing thread, the UDP ports."""

    def __init__(
        self,
        root: str = ".",
        host: str = "0.0.0.0",
        port: int = DEFAULT_PORT,
        fps: float = 20.0,
        max_sessions: int = 100,
        session_timeout: float = 60.0,
        idle_timeout: float = 30.0,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        gso: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        users: dict[str, str] | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_sessions_per_connection: int = 8,
        textbook_idle: float = 300.0,
        auth_backoff: AuthBackoff | None = None,
        live: list[tuple[str, LiveSpec]] | None = None,
        stdin: BinaryIO | None = None,
        publish: bool = False,
        publish_users: dict[str, str] | None = None,
        http_port: int | None = None,
    ) -> None:
        # users (name -> password) turns Digest authentication on; None leaves it off.
        authenticator = DigestAuthenticator(users, clock=clock) if users is not None else None
        # Publishers' own users (--publish-users), apart from viewers'; a realm of their own so
        # that a client does not offer one set's credentials to the other.
        publish_authenticator = DigestAuthenticator(
            publish_users, realm="mjpeg-rtsp publishers", clock=clock,
        ) if publish_users is not None else None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.create_server((host, port), family=family, backlog=64)
        self.registry = SessionRegistry(max_sessions, lock=threading.Lock())
        try:
            self.streamer = Streamer(self.registry, host, family, max_payload, gso, clock)
        except OSError:
            self.listener.close()
            raise
        self.host = host
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.refused_connections = 0
        self.port = self.listener.getsockname()[1]
        self.library = MediaLibrary(root)
        self.live_paths = LivePaths(self.streamer.fanout, lock=threading.Lock())
        self.streamer.live_paths = self.live_paths
        self._live_specs = list(live or [])
        self._stdin = stdin
        self.producers: list = []
        try:
            for name, spec in self._live_specs:
                self._declare_live(name, spec)
        except ValueError:
            self.streamer.stop()
            self.listener.close()
            raise
        self.config = ServerConfig(
            fps=fps,
            max_payload=max_payload,
            session_timeout=session_timeout,
            server_rtp_port=self.streamer.rtp_port,
            server_rtcp_port=self.streamer.rtcp_port,
            max_sessions_per_connection=max_sessions_per_connection,
            textbook_idle=textbook_idle,
            publish=publish or publish_users is not None,
        )
        self.service = RtspService(
            self.library, self.registry, self.config, clock, authenticator, auth_backoff,
            new_guard=threading.RLock, live=self.live_paths,
            publish_authenticator=publish_authenticator,
        )
        self.stopping = threading.Event()
        self.worker_settings = WorkerSettings(idle_timeout, self.stopping.is_set)
        self._workers: dict[int, tuple[threading.Thread, ServerWorker]] = {}
        self._workers_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._accept_thread: threading.Thread | None = None
        self.started_at = time.monotonic()
        # Browsers (--http PORT): pages, MJPEG over HTTP, status and metrics.
        self.http: HttpViewServer | None = None
        if http_port is not None:
            try:
                self.http = HttpViewServer((host, http_port), HttpContext(
                    self.library, self.live_paths, self.registry, self.streamer, fps,
                    self.port, threading.RLock, self.figures, authenticator,
                    self.service.auth_backoff, clock, idle_timeout, max_connections,
                ))
            except OSError:
                self.streamer.stop()
                self.listener.close()
                raise

    def figures(self) -> dict:
        """Who watches what, what was sent and dropped (``/status.json``, ``/metrics``)."""
        return server_figures(self, time.monotonic())

    def _declare_live(self, name: str, spec: LiveSpec) -> None:
        """A ``--live`` path; ValueError when a file of the media folder has that name."""
        try:
            self.library.resolve_path(name)
        except MediaError:
            pass
        else:
            raise ValueError(f"--live {name}: a media file has that name already")
        try:
            self.live_paths.declare(name, getattr(spec, "fps", None))
        except LivePathError as exc:
            raise ValueError(str(exc)) from None

    # --- life cycle -----------------------------------------------------------------------

    def urls(self) -> list[str]:
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1" if host != "::" else "[::1]"
        elif ":" in host:
            host = f"[{host}]"
        names = self.library.list_media() + self.live_paths.names()
        return [f"rtsp://{host}:{self.port}/{name}" for name in names]

    def start(self) -> None:
        """Start the pacing and RTCP threads and accept connections in a thread of its own."""
        self.streamer.run()
        self._start_producers()
        if self.http is not None:
            self.http.start()
        self._accept_thread = threading.Thread(target=self._accept_loop, name="accept", daemon=True)
        self._accept_thread.start()

    def serve_forever(self) -> None:
        self.streamer.run()
        self._start_producers()
        if self.http is not None:
            self.http.start()
        self._accept_loop()

    def _start_producers(self) -> None:
        """Start the ``--live`` sources feeding their channels."""
        if not self._live_specs:
            return
        from mjpeg_rtsp.sources import make_producer

        for name, spec in self._live_specs:
            channel = self.live_paths.get(name)
            producer = make_producer(spec, channel, stdin=self._stdin, fps=self.config.fps,
                                     name=name)
            self.producers.append(producer)
            producer.start()

    def _accept_loop(self) -> None:
        refusals: dict[socket.socket, _Refusal] = {}
        with selectors.DefaultSelector() as selector:
            selector.register(self.listener, selectors.EVENT_READ)
            try:
                while not self.stopping.is_set():
                    for key, _ in selector.select(timeout=0.25):
                        if key.fileobj is self.listener:
                            self._accept(selector, refusals)
                        else:
                            self._read_refused(selector, refusals, key.fileobj)  # type: ignore[arg-type]
                    now = time.monotonic()
                    for sock in [s for s, r in refusals.items() if now >= r.deadline]:
                        self._refuse(selector, refusals, sock)
            finally:
                for sock in list(refusals):
                    selector.unregister(sock)
                    sock.close()

    def _accept(self, selector: selectors.BaseSelector, refusals: dict) -> None:
        try:
            sock, address = self.listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                log.warning("cannot accept a connection: %s (raise ulimit -n or lower "
                            "--max-connections)", exc.strerror)
                time.sleep(0.1)  # the backlog stays readable: do not spin
            return
        with self._workers_lock:
            full = len(self._workers) >= self.max_connections
        if not full:
            self._spawn(sock, address)
            return
        self.refused_connections += 1
        if self.refused_connections == 1 or self.refused_connections % 1000 == 0:
            log.warning("connection limit reached (%d): refusing %s:%d with 503 (%d refused "
                        "so far)", self.max_connections, *address[:2], self.refused_connections)
        sock.setblocking(False)
        refusals[sock] = _Refusal(time.monotonic() + REFUSAL_WAIT)
        selector.register(sock, selectors.EVENT_READ)
        if len(refusals) > MAX_WAITING_REFUSALS:
            self._refuse(selector, refusals, sock)

    def _read_refused(self, selector: selectors.BaseSelector, refusals: dict,
                      sock: socket.socket) -> None:
        refusal = refusals[sock]
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        refusal.reader.receive_data(data)
        refusal.request = refusal.request or self._refusal_request(refusal)
        if not data or refusal.request or refusal.reader.pending_textbook_message():
            self._refuse(selector, refusals, sock)

    @staticmethod
    def _refusal_request(refusal: _Refusal) -> Request | None:
        try:
            event = refusal.reader.next_event()
        except RtspError:
            return Request("", "")
        return event if isinstance(event, Request) else None

    def _refuse(self, selector: selectors.BaseSelector, refusals: dict,
                sock: socket.socket) -> None:
        """Answer a connection over the limit with 503 (with its CSeq when it sent one)."""
        refusal = refusals.pop(sock)
        selector.unregister(sock)
        request = refusal.request
        if request is None and refusal.reader.pending_textbook_message():
            flushed = refusal.reader.flush_textbook_message()
            request = flushed if isinstance(flushed, Request) else None
        cseq = request.cseq if request is not None else None
        dialect = request.dialect if request is not None else Dialect.STANDARD
        cseq = valid_cseq(cseq)
        headers = Headers([("CSeq", cseq)] if cseq else [])
        headers.add("Retry-After", "10")
        headers.add("Content-Type", "text/plain")
        body = f"too many connections (the limit is {self.max_connections})\r\n".encode()
        try:
            sock.send(format_response(Response(503, headers, body), dialect))
        except OSError:
            pass
        sock.close()

    def _spawn(self, sock: socket.socket, address: tuple) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.config.session_timeout)  # bounds a send to a stalled client
        connection_id = next(self._ids)
        worker = ServerWorker(self.service, self.streamer, self.worker_settings, sock, address,
                              connection_id)
        thread = threading.Thread(
            target=self._run_worker, args=(worker,), name=f"rtsp-{connection_id}", daemon=True
        )
        with self._workers_lock:
            self._workers[connection_id] = (thread, worker)
        thread.start()

    def _run_worker(self, worker: ServerWorker) -> None:
        try:
            worker.run()
        except Exception:  # the one place a worker's unexpected error is reported
            log.exception("connection %d failed", worker.connection.id)
        finally:
            with self._workers_lock:
                self._workers.pop(worker.connection.id, None)

    def shutdown(self) -> None:
        """Tear every session down, close every connection and socket, stop the threads."""
        self.stopping.set()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=2)
        with self._workers_lock:
            workers = list(self._workers.values())
        for _, worker in workers:
            try:
                worker.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread, _ in workers:
            thread.join(timeout=5)
        if self.http is not None:
            self.http.stop()
        for producer in self.producers:
            producer.stop()
        self.streamer.stop()
        self.listener.close()

def default_media_root() -> str:
    """The current directory when it holds media files (as in a checkout), else the folder of
    the bundled sample: next to this module in a checkout, ``mjpeg_rtsp/sample`` once installed
    (the wheel carries it there, see setup.py), so the installed command serves something."""
    if MediaLibrary(".").list_media(limit=1):
        return "."
    for folder in (Path(__file__).resolve().parent,
                   Path(mjpeg_rtsp.__file__).resolve().parent / "sample"):
        if (folder / SAMPLE_NAME).is_file():
            return str(folder)
    return "."


def raise_open_file_limit(wanted: int) -> int | None:
    """Raise the soft RLIMIT_NOFILE to ``wanted`` if it is lower (up to the hard limit);
    the resulting soft limit, or None where there is no such limit (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return None if soft == resource.RLIM_INFINITY else soft
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):  # e.g. macOS caps it below an unlimited hard limit
        return soft
    return target


def _live_argument(text: str):
    from mjpeg_rtsp.sources import parse_live_argument

    return parse_live_argument(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Stream Motion-JPEG files over RTSP/RTP to the course's textbook client "
        "and to standard players (ffplay, VLC, GStreamer).",
    )
    parser.add_argument("port", nargs="?", type=partial(port_number, lowest=0),
                        default=DEFAULT_PORT,
                        help=f"RTSP port to listen on (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--root",
                        help="media folder: files in it (and below) are served, nothing outside "
                        "(default: the current directory, or the bundled sample's folder when "
                        "the current directory has no media files)")
    parser.add_argument("--host", default="0.0.0.0",
                        help="address to listen on (default 0.0.0.0, all IPv4 interfaces; "
                        "'::' for IPv6)")
    parser.add_argument("--fps", type=positive_float, default=20.0,
                        help="frame rate of the files, which MJPEG does not record (default 20)")
    parser.add_argument("--max-sessions", type=int, default=100,
                        help="sessions at once; further SETUPs get 503 (default 100)")
    parser.add_argument("--max-sessions-per-connection", type=int, default=8, metavar="N",
                        help="sessions one RTSP connection may hold; further SETUPs on it get "
                        "503 (default 8)")
    parser.add_argument("--textbook-idle", type=positive_float, default=300.0, metavar="SECONDS",
                        help="a textbook client's session that is not playing (set up, paused "
                        "or played to the end) ends after this long without a request; a "
                        "playing one never does, since that client sends nothing while it "
                        "watches (default 300)")
    parser.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                        help="RTSP connections at once; further ones are answered 503 and "
                        f"closed (default {DEFAULT_MAX_CONNECTIONS}; the open-file limit is "
                        "raised to fit where the system allows)")
    parser.add_argument("--session-timeout", type=positive_float, default=60.0,
                        help="seconds without keep-alive (any request or RTCP report) before a "
                        "standard client's session ends (default 60)")
    parser.add_argument("--idle-timeout", type=positive_float, default=30.0,
                        help="seconds a connection without a session may go without a complete "
                        "request before it is closed (default 30)")
    parser.add_argument("--mtu", type=int, default=DEFAULT_MAX_PAYLOAD,
                        help="largest RTP payload in bytes for standard clients "
                        f"(default {DEFAULT_MAX_PAYLOAD})")
    parser.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD",
                        help="require Digest authentication and accept this user (repeatable; "
                        "the password shows in the process list: prefer --users)")
    parser.add_argument("--users", metavar="FILE",
                        help="require Digest authentication and accept the users of FILE "
                        "(user:password lines, # comments)")
    parser.add_argument("--live", action="append", default=[], metavar="NAME=SOURCE",
                        type=_live_argument,
                        help="serve a live source at rtsp://HOST:PORT/NAME (repeatable). SOURCE: "
                        "'-' (raw MJPEG on stdin, as 'ffmpeg ... -f mjpeg -' writes), "
                        "'exec:COMMAND' (run COMMAND, no shell, and read raw MJPEG from its "
                        "stdout; restarted with back-off when it exits), 'file:PATH' (a media "
                        "file looped at --fps), 'testpattern[:WxH[@FPS]]' (a generated clock "
                        "and frame counter, default 640x480@25), "
                        "'screen[:DISPLAY][@FPS][,scale=WxH]' (the X11 screen)")
    parser.add_argument("--publish", action="store_true",
                        help="accept publishers (ANNOUNCE/RECORD, e.g. 'ffmpeg -re -i in.mjpeg "
                        "-c:v mjpeg -huffman default -f rtsp rtsp://HOST:PORT/live/cam') from "
                        "this machine only; see --publish-users for others")
    parser.add_argument("--publish-users", metavar="FILE",
                        help="accept publishers from anywhere that authenticate (Digest) as a "
                        "user of FILE (user:password lines); implies --publish. Viewers' "
                        "--auth/--users are separate")
    parser.add_argument("--http", type=partial(port_number, lowest=0), metavar="PORT",
                        help="also serve browsers on this HTTP port (0 picks a free one): "
                        "/ lists the streams, /watch/NAME plays one (MJPEG over HTTP, "
                        "/stream/NAME), /snapshot/NAME.jpg, /status.json, /metrics "
                        "(Prometheus); the same files, live paths, users and limits")
    parser.add_argument("--no-gso", action="store_true",
                        help="send every RTP datagram with its own system call, even where the "
                        "kernel offers UDP segmentation offload (used when available)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log every request and RTCP report (default: sessions and errors)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_sessions < 1:
        print("error: --max-sessions must be at least 1", file=sys.stderr)
        return 2
    if args.max_sessions_per_connection < 1:
        print("error: --max-sessions-per-connection must be at least 1", file=sys.stderr)
        return 2
    if args.max_connections < 1:
        print("error: --max-connections must be at least 1", file=sys.stderr)
        return 2
    if not 200 <= args.mtu <= 65000:
        print("error: --mtu must be between 200 and 65000", file=sys.stderr)
        return 2
    try:
        users = read_users(args.users, args.auth)
        publish_users = read_users(args.publish_users, []) if args.publish_users else None
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if sum(1 for _, spec in args.live if spec.kind.value == "stdin") > 1:
        print("error: only one --live source can read the standard input", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    limit = raise_open_file_limit(args.max_connections + SPARE_DESCRIPTORS)
    if limit is not None and limit < args.max_connections + SPARE_DESCRIPTORS:
        fitting = max(1, limit - SPARE_DESCRIPTORS)
        log.warning("the open-file limit is %d (ulimit -n) and cannot be raised: serving at "
                    "most %d connections instead of %d", limit, fitting, args.max_connections)
        args.max_connections = fitting
    try:
        server = StreamingServer(
            root=args.root or default_media_root(), host=args.host, port=args.port, fps=args.fps,
            max_sessions=args.max_sessions, session_timeout=args.session_timeout,
            idle_timeout=args.idle_timeout, gso=False if args.no_gso else None,
            max_payload=args.mtu, users=users,
            max_sessions_per_connection=args.max_sessions_per_connection,
            textbook_idle=args.textbook_idle, max_connections=args.max_connections,
            live=args.live, stdin=sys.stdin.buffer, publish=args.publish,
            publish_users=publish_users, http_port=args.http,
        )
    except ValueError as exc:  # a --live name that a media file has already, say
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(f"error: port {args.port} is already in use", file=sys.stderr)
        else:
            print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}",
                  file=sys.stderr)
        return 1

    def stop(signum, frame):
        raise KeyboardInterrupt

    # From here on a Ctrl+C (or SIGTERM), however early, stops the server cleanly.
    try:
        signal.signal(signal.SIGTERM, stop)
        urls = server.urls()
        print(f"RTSP server listening on port {server.port}, media folder {server.library.root}")
        if users is not None:
            print(f"authentication on: Digest, realm {server.service.authenticator.realm!r}, "
                  f"{len(users)} user(s); OPTIONS is open; textbook clients cannot log in")
        for url in urls or [f"rtsp://127.0.0.1:{server.port}/<file>.mjpeg (no media files found)"]:
            print(f"  {url}")
        if server.http is not None:
            print(f"browsers: http://127.0.0.1:{server.http.port}/ (watch: "
                  f"http://127.0.0.1:{server.http.port}/watch/<name>)")
        if server.config.publish:
            who = (f"Digest users of {args.publish_users}" if publish_users is not None
                   else "this machine only")
            print(f"publishing on ({who}): rtsp://127.0.0.1:{server.port}/<path>")
        sys.stdout.flush()
        log.info("UDP segmentation offload %s", "on" if server.streamer.udp.gso else "off")
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        print("server stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
