"""The player without Tk: RTSP control, RTP reception, jitter buffer, decoding, statistics.

Theory of operation: four threads, each with one job, and nothing here touches
a widget.

* control: owns the RTSP connection. Commands from the UI (setup, play, pause,
  teardown) become request sequences; replies are read by :class:`RtspClient`;
  interleaved ``$`` frames are handed to the receive path; keep-alives and
  RTCP receiver reports go out on time.
* receiver (UDP only): reads the RTP and RTCP ports. Packets from another
  address or SSRC, and garbage, are counted and ignored.
* playout: takes frames out of the jitter buffer when the RTP clock says they
  are due (complete frames only: a frame missing any fragment is dropped and
  counted), rebuilds the JPEG (RFC 2435 or the textbook's raw payload) and
  hands it to the decoder through a bounded queue.
* decoder: Pillow, in memory, scaled to the display size (JPEG draft mode when
  the display is smaller); the newest picture is kept for the UI to fetch.

The UI polls :meth:`Player.latest_frame`, :meth:`Player.stats` and the
:attr:`Player.events` queue from its own thread.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from .client import ClientError, PlayerState, RtspClient, StreamTarget
from .jitter import JitterBuffer, MediaFrame, starts_jpeg_frame
from .jpeg import frame_size
from .limits import MAX_DECODE_PIXELS, MAX_FRAME_PIXELS, FrameTooLargeError
from .ports import bind_rtp_pair
from .rawjpeg import RawJpegAssembler
from .rfc2435 import JpegDepacketizer, Rfc2435Error, Rfc2435FrameTooLargeError
from .rtcp import (
    Bye,
    ReceiverReport,
    RtcpError,
    SenderReport,
    SourceDescription,
    build_compound,
    ntp_middle32,
    parse_compound,
)
from .rtp import RtpError, RtpPacket
from .rtsp import (
    NEED_DATA,
    Dialect,
    InterleavedFrame,
    Response,
    RtspError,
    RtspReader,
    format_interleaved,
)
from .stats import ReceiverStats

log = logging.getLogger(__name__)

RECEIVER_REPORT_INTERVAL = 5.0
TEXTBOOK_QUIET = 0.05
# The course's server just stops sending at the end of the movie: silence this long ends it.
TEXTBOOK_END_SILENCE = 2.0


def wait_readable(sockets: list[socket.socket], timeout: float) -> list[socket.socket]:
    """Those of ``sockets`` that are readable within ``timeout`` seconds. poll() where there
    is one: select() fails for descriptors above 1023 (a player embedded in a busy process).
    """
    if not hasattr(select, "poll"):
        return select.select(sockets, [], [], timeout)[0]
    poller = select.poll()
    for sock in sockets:
        poller.register(sock, select.POLLIN)
    ready = {fd for fd, _ in poller.poll(timeout * 1000)}
    return [sock for sock in sockets if sock.fileno() in ready]


@dataclass
class PlayerOptions:
    transport: str = "udp"  # or "tcp" (interleaved); the textbook dialect is always UDP
    latency: float = 0.1
    save_frames: str | None = None
    reply_timeout: float = 10.0
    display_size: tuple[int, int] | None = None
    connect_timeout: float = 5.0
    # On 401, post a "credentials" event and wait for login() or cancel_login() (the window
    # asks its user) instead of failing.
    ask_credentials: bool = False


@dataclass(frozen=True)
class PlayerEvent:
    kind: str  # "state", "error", "ended", "credentials" (see PlayerOptions.ask_credentials)
    message: str = ""


@dataclass
class DisplayFrame:
    image: object  # PIL.Image.Image, already scaled for display
    width: int  # the frame's own size
    height: int
    number: int  # frames displayed so far
    position: float | None  # seconds into the stream, when the server gave a range


@dataclass
class _Counters:
    frames_decoded: int = 0
    frames_corrupt: int = 0  # could not be rebuilt from their packets
    frames_undecodable: int = 0  # rebuilt, but the JPEG decoder refused them
    frames_rejected: int = 0  # over a size limit (mjpeg_rtsp.limits): never decoded
    frames_skipped: int = 0  # decoded too late for display: a newer one was waiting
    packets_foreign: int = 0
    packets_garbage: int = 0
    width: int = 0
    height: int = 0


class Player:
    def __init__(
        self,
        target: StreamTarget,
        options: PlayerOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.options = options or PlayerOptions()
        self.clock = clock
        self.client = RtspClient(target)
        self.events: queue.Queue[PlayerEvent] = queue.Queue()
        self.ended = threading.Event()
        self.failed: str | None = None
        self.duration: float | None = None
        self.counters = _Counters()
        textbook = target.dialect is Dialect.TEXTBOOK
        self.receiver_stats = ReceiverStats()
        self.jitter = JitterBuffer(
            self.options.latency,
            frame_per_packet=textbook,
            frame_start=None if textbook else starts_jpeg_frame,
        )
        self._depacketizer = JpegDepacketizer()
        self._raw_assembler = RawJpegAssembler()
        self._lock = threading.Condition()
        self._commands: queue.Queue[tuple[str, tuple]] = queue.Queue()
        self._steps: list[tuple[str, tuple]] = []
        self._awaiting: tuple[str, float] | None = None
        self._current_step: tuple[str, tuple] | None = None
        self._login_step: tuple[str, tuple] | None = None  # refused with 401, to send again
        self._sock: socket.socket | None = None
        self._reader = RtspReader()
        self._rtp: socket.socket | None = None
        self._rtcp: socket.socket | None = None
        self._server_ip: str | None = None
        self._running = False
        self._threads: list[threading.Thread] = []
        self._decode_queue: queue.Queue[tuple[bytes, float | None] | None] = queue.Queue(4)
        self._latest: DisplayFrame | None = None
        self._frames_shown = 0
        self._play_origin: tuple[float, int] | None = None  # (npt start, rtptime)
        self._next_keepalive = float("inf")
        self._next_report = float("inf")
        self._last_sr: tuple[int, float] | None = None
        self._bye = False
        self._last_packet = 0.0
        self._our_ssrc = int.from_bytes(os.urandom(4), "big")

    # --- commands (any thread) --------------------------------------------------------------

    def start(self) -> None:
        """Connect to the server; ClientError if it cannot be reached."""
        try:
            self._sock = socket.create_connection(
                (self.target.host, self.target.port), timeout=self.options.connect_timeout
            )
        except ConnectionRefusedError:
            raise ClientError(
                f"connection refused by {self.target.host}:{self.target.port} "
                "(is the server running?)"
            ) from None
        except TimeoutError:
            raise ClientError(f"no answer from {self.target.host}:{self.target.port}") from None
        except OSError as exc:
            raise ClientError(
                f"cannot connect to {self.target.host}:{self.target.port}: {exc.strerror or exc}"
            ) from None
        self._sock.settimeout(None)
        self._server_ip = self._sock.getpeername()[0]
        self._running = True
        self._spawn(self._control_loop, "rtsp-control")
        self._spawn(self._playout_loop, "playout")
        self._spawn(self._decode_loop, "decoder")

    def setup(self) -> None:
        self._commands.put(("setup", ()))

    def play(self, start: float | None = None) -> None:
        self._commands.put(("play", (start,)))

    def pause(self) -> None:
        self._commands.put(("pause", ()))

    def teardown(self) -> None:
        self._commands.put(("teardown", ()))

    def login(self, user: str, password: str) -> None:
        """Send the request the server refused with 401 again, with these credentials."""
        self._commands.put(("login", (user, password)))

    def cancel_login(self, message: str) -> None:
        """Give up after a 401: the player fails with ``message``."""
        self._commands.put(("cancel_login", (message,)))

    def close(self, timeout: float = 3.0) -> None:
        """Tear down (if set up) and stop every thread."""
        if not self._running:
            return
        if self.client.state is not PlayerState.INIT and self.failed is None:
            self.teardown()
            deadline = self.clock() + timeout
            while self.client.state is not PlayerState.INIT and self.clock() < deadline \
                    and self.failed is None:
                time.sleep(0.02)
        self._running = False
        with self._lock:
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._close_media_sockets()
        if self._sock is not None:
            self._sock.close()

    @property
    def state(self) -> PlayerState:
        return self.client.state

    @property
    def busy(self) -> bool:
        """A request is on its way or queued."""
        return (self._awaiting is not None or bool(self._steps) or not self._commands.empty()
                or self._login_step is not None)

    def latest_frame(self) -> DisplayFrame | None:
        return self._latest

    def stats(self, whole_run: bool = False) -> dict:
        """Statistics now; rates over the last seconds, or over the whole run."""
        now = self.clock()
        with self._lock:
            snapshot = self.receiver_stats.snapshot(now, whole_run)
            snapshot.update(
                frames=self.counters.frames_decoded,
                frames_lost=self.jitter.frames_lost + self.counters.frames_corrupt
                + self.counters.frames_undecodable + self.counters.frames_rejected,
                frames_undecodable=self.counters.frames_undecodable,
                frames_rejected=self.counters.frames_rejected,
                packets_foreign=self.counters.packets_foreign + self.counters.packets_garbage,
                packets_late=self.jitter.packets_late,
                packets_duplicate=self.jitter.packets_duplicate,
                width=self.counters.width,
                height=self.counters.height,
            )
        return snapshot

    # --- control thread ---------------------------------------------------------------------

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _fail(self, message: str) -> None:
        if self.failed is None:
            self.failed = message
            log.info("player error: %s", message)
            self.events.put(PlayerEvent("error", message))
            self._abort_session()
        self._steps.clear()
        self._awaiting = None

    def _abort_session(self) -> None:
        """After a failure, end the session the server holds for us: TEARDOWN, no waiting
        for its answer (the connection may be gone; then there is nothing to end)."""
        if self.client.session_id is None or self._sock is None:
            return
        if self._current_step is not None and self._current_step[0] == "teardown":
            return  # that is what failed
        try:
            self._sock.sendall(self.client.teardown())
        except OSError:
            pass

    def _control_loop(self) -> None:
        try:
            while self._running:
                self._take_commands()
                now = self.clock()
                timeout = min(0.05, max(0.0, self._next_keepalive - now))
                if self._reader.pending_textbook_message():
                    timeout = TEXTBOOK_QUIET
                readable = wait_readable([self._sock], timeout)
                if readable:
                    data = self._sock.recv(65536)
                    self._reader.receive_data(data)
                    self._drain_rtsp()
                    if not data:
                        if self._running and self.client.state is not PlayerState.INIT:
                            self._fail("the server closed the connection")
                        elif self._running and self._awaiting:
                            self._fail("the server closed the connection")
                        self.ended.set()
                        return
                elif self._reader.pending_textbook_message():
                    message = self._reader.flush_textbook_message()
                    if isinstance(message, Response):
                        self._on_response(message)
                self._timers(self.clock())
        except OSError as exc:
            if self._running:
                self._fail(f"connection to the server failed: {exc.strerror or exc}")
                self.ended.set()
        except ClientError as exc:
            self._fail(str(exc))
            self.ended.set()
        except Exception as exc:  # noqa: BLE001
            # The parsers answer every value with ClientError; should one still slip through,
            # the user gets an error and the server its TEARDOWN, not a silent hang.
            log.debug("control thread failed", exc_info=True)
            self._fail(f"cannot handle the server's messages ({type(exc).__name__}: {exc})")
            self.ended.set()

    def _take_commands(self) -> None:
        while True:
            try:
                command, args = self._commands.get_nowait()
            except queue.Empty:
                break
            if command == "login":
                step, self._login_step = self._login_step, None
                if step is not None:
                    user, password = args
                    self.target = replace(self.target, user=user, password=password)
                    self.client.target = self.target
                    self._steps.insert(0, step)
            elif command == "cancel_login":
                if self._login_step is not None:
                    self._login_step = None
                    self._fail(args[0])
            elif command == "setup":
                if self.target.dialect is Dialect.STANDARD:
                    self._steps += [("options", ()), ("describe", ()), ("setup", ())]
                else:
                    self._steps.append(("setup", ()))
            else:
                self._steps.append((command, args))
        if self._awaiting is None and self._login_step is None and self._steps:
            self._send_step(*self._steps.pop(0))

    def _send_step(self, step: str, args: tuple) -> None:
        client = self.client
        if step == "setup":
            data = client.setup(self.options.transport, self._open_media_sockets())
        elif step == "play":
            if client.state is PlayerState.INIT:
                return
            data = client.play(*args)
            self._new_play()  # before sending: the first packets may beat the reply
        elif step in ("pause", "teardown") and client.state is PlayerState.INIT:
            return
        else:
            data = getattr(client, step)()
        self._awaiting = (step, self.clock() + self.options.reply_timeout)
        self._current_step = (step, args)
        self._sock.sendall(data)

    def _new_play(self) -> None:
        """Forget the previous PLAY's packets and timing (a seek or a resume starts afresh)."""
        with self._lock:
            self.jitter.reset()
            media = self.client.media
            self._depacketizer = JpegDepacketizer(
                *(media.width, media.height) if media else (None, None)
            )
            self._raw_assembler = RawJpegAssembler()
            self._bye = False
            self._last_packet = self.clock()
        self.ended.clear()

    def _drain_rtsp(self) -> None:
        while True:
            try:
                event = self._reader.next_event()
            except RtspError as exc:
                raise ClientError(f"unreadable reply from the server: {exc}") from None
            if event is NEED_DATA:
                return
            if isinstance(event, Response):
                self._on_response(event)
            elif isinstance(event, InterleavedFrame):
                interleaved = self.client.interleaved or (0, 1)
                if event.channel == interleaved[0]:
                    self._on_rtp(event.data, self.clock())
                elif event.channel == interleaved[1]:
                    self._on_rtcp(event.data, self.clock())

    def _on_response(self, response: Response) -> None:
        reply = self.client.receive(response)
        if reply is None:
            return
        if reply.retry is not None:
            self._sock.sendall(reply.retry)
            return
        step = self._awaiting[0] if self._awaiting else reply.method.lower()
        if reply.method in ("GET_PARAMETER",) or (reply.method == "OPTIONS" and step != "options"):
            return  # a keep-alive's answer
        self._awaiting = None
        if not reply.ok:
            reason = response.reason or ""
            status = response.status
            if status == 401:
                message = "the server requires a user name and password (401 Unauthorized)"
                if self.target.user is not None:
                    message = "the server rejected the user name or password (401 Unauthorized)"
                if self.options.ask_credentials and self._current_step is not None:
                    self._login_step = self._current_step
                    self.events.put(PlayerEvent("credentials", message))
                    return
            else:
                message = f"{reply.method} failed: {status} {reason}".strip()
            self._fail(message)
            return
        now = self.clock()
        if reply.method == "DESCRIBE" and self.client.media:
            self.duration = self.client.media.duration
        elif reply.method == "SETUP":
            if self.target.dialect is Dialect.STANDARD:
                self._next_keepalive = now + self.client.session_timeout / 2
        elif reply.method == "PLAY":
            start = reply.play_range[0] if reply.play_range else None
            with self._lock:
                self._last_packet = now
                if reply.rtp_time is not None:
                    self._play_origin = (start or 0.0, reply.rtp_time)
                else:
                    self._play_origin = None
            if self.target.dialect is Dialect.STANDARD:
                self._next_report = now + 1.0
        elif reply.method == "TEARDOWN":
            self.client.ssrc = None  # a new SETUP may bring a new source
            self._close_media_sockets()
            self._next_keepalive = self._next_report = float("inf")
        self.events.put(PlayerEvent("state", self.client.state.value))
        if self._steps:
            self._send_step(*self._steps.pop(0))

    def _timers(self, now: float) -> None:
        if self._awaiting is not None and now > self._awaiting[1]:
            step = self._awaiting[0].upper()
            self._fail(f"the server did not answer {step} within "
                       f"{self.options.reply_timeout:.0f} s")
            return
        if now >= self._next_keepalive and self._awaiting is None:
            self._sock.sendall(self.client.keepalive())
            self._next_keepalive = now + self.client.session_timeout / 2
        if now >= self._next_report and self.client.state is PlayerState.PLAYING:
            self._send_receiver_report(now)
            self._next_report = now + RECEIVER_REPORT_INTERVAL
        if (self.target.dialect is Dialect.TEXTBOOK and self.client.state is PlayerState.PLAYING
                and self.receiver_stats.packets_received and not self.ended.is_set()
                and now - self._last_packet > TEXTBOOK_END_SILENCE):
            self._end_of_stream()

    def _send_receiver_report(self, now: float) -> None:
        with self._lock:
            if not self.receiver_stats.packets_received or self.client.ssrc is None:
                reports: tuple = ()
            else:
                lsr = self._last_sr
                block = self.receiver_stats.report_block(
                    self.client.ssrc, now, lsr[0] if lsr else None, lsr[1] if lsr else None
                )
                reports = (block,)
        packet = build_compound(
            ReceiverReport(self._our_ssrc, reports),
            SourceDescription.cname(self._our_ssrc, f"player@{socket.gethostname()}"),
        )
        if self.client.interleaved is not None:
            self._sock.sendall(format_interleaved(self.client.interleaved[1], packet))
        elif self._rtcp is not None and self.client.server_ports is not None:
            port = self.client.server_ports[1] or self.client.server_ports[0] + 1
            try:
                self._rtcp.sendto(packet, (self._server_ip, port))
            except OSError:
                pass

    # --- media sockets and the receive path -----------------------------------------------

    def _open_media_sockets(self) -> int:
        """Bind the RTP (and RTCP) ports before SETUP, so no early packet is missed."""
        if self.options.transport == "tcp" and self.target.dialect is Dialect.STANDARD:
            return 0
        if self._rtp is not None:
            return self._rtp.getsockname()[1]
        family = self._sock.family
        bind_host = "::" if family == socket.AF_INET6 else "0.0.0.0"
        if self.target.dialect is Dialect.TEXTBOOK:
            self._rtp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                self._rtp.bind((bind_host, self.target.rtp_port))
            except OSError as exc:
                self._rtp.close()
                self._rtp = None
                raise ClientError(f"cannot use RTP port {self.target.rtp_port}: "
                                  f"{exc.strerror}") from None
        else:
            try:
                self._rtp, self._rtcp = bind_rtp_pair(bind_host, family)
            except OSError as exc:
                raise ClientError(f"no UDP ports for RTP/RTCP: {exc}") from None
        self._rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self._spawn(self._receive_loop, "rtp-receiver")
        return self._rtp.getsockname()[1]

    def _close_media_sockets(self) -> None:
        rtp, rtcp = self._rtp, self._rtcp
        self._rtp = self._rtcp = None
        for sock in (rtp, rtcp):
            if sock is not None:
                sock.close()

    def _receive_loop(self) -> None:
        rtp, rtcp = self._rtp, self._rtcp
        sockets = [s for s in (rtp, rtcp) if s is not None]
        while self._running and self._rtp is rtp:
            try:
                readable = wait_readable(sockets, 0.2)
            except (OSError, ValueError):
                return  # closed by teardown
            for sock in readable:
                try:
                    data, address = sock.recvfrom(65536)
                except OSError:
                    continue
                if address[0] != self._server_ip:
                    with self._lock:
                        self.counters.packets_foreign += 1
                    continue
                if sock is rtp:
                    self._on_rtp(data, self.clock())
                else:
                    self._on_rtcp(data, self.clock())

    def _on_rtp(self, data: bytes, arrival: float) -> None:
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            with self._lock:
                self.counters.packets_garbage += 1
            return
        with self._lock:
            media = self.client.media
            expected_ssrc = self.client.ssrc
            if expected_ssrc is None:
                # The server did not announce it (textbook servers never do): the first
                # packet's source is the stream's.
                self.client.ssrc = expected_ssrc = packet.ssrc
            if (expected_ssrc is not None and packet.ssrc != expected_ssrc) or (
                media is not None and self.target.dialect is Dialect.STANDARD
                and packet.payload_type != media.payload_type
            ):
                self.counters.packets_foreign += 1
                return
            self._last_packet = arrival
            self.receiver_stats.on_packet(packet.sequence_number, packet.timestamp, arrival,
                                  len(packet.payload))
            self.jitter.push(packet, arrival)
            self._lock.notify_all()

    def _on_rtcp(self, data: bytes, arrival: float) -> None:
        try:
            packets = parse_compound(data)
        except RtcpError:
            with self._lock:
                self.counters.packets_garbage += 1
            return
        for packet in packets:
            if isinstance(packet, SenderReport):
                self._last_sr = (ntp_middle32(packet.ntp_timestamp), arrival)
            elif isinstance(packet, Bye) and (
                self.client.ssrc is None or self.client.ssrc in packet.sources
            ):
                with self._lock:
                    self._bye = True
                    self._lock.notify_all()

    # --- playout and decoding ---------------------------------------------------------------

    def _playout_loop(self) -> None:
        while self._running:
            with self._lock:
                now = self.clock()
                due = self.jitter.next_due()
                if due is None or due > now:
                    if self._bye and due is None and not self.ended.is_set():
                        self._end_of_stream()
                    wait = 0.1 if due is None else min(0.1, due - now)
                    self._lock.wait(max(wait, 0.001))
                    continue
                frames = self.jitter.pop(now)
                depacketizer = self._depacketizer
                origin = self._play_origin
            for frame in frames:
                try:
                    jpeg = self._rebuild(frame, depacketizer)
                except Exception:  # noqa: BLE001 -- one frame must never stop playout
                    log.debug("frame cannot be rebuilt", exc_info=True)
                    with self._lock:
                        self.counters.frames_corrupt += 1
                    continue
                if jpeg is None:
                    continue
                position = None
                if origin is not None:
                    position = origin[0] + ((frame.timestamp - origin[1]) & 0xFFFFFFFF) / 90000
                self._offer(jpeg, position)

    def _rebuild(self, frame: MediaFrame, depacketizer: JpegDepacketizer) -> bytes | None:
        if self.target.dialect is Dialect.TEXTBOOK:
            assembler = self._raw_assembler
            dropped, rejected = assembler.frames_dropped, assembler.frames_rejected
            jpeg = assembler.push(b"".join(frame.payloads), frame.first_seq)
            if jpeg is not None:
                return jpeg
            if assembler.frames_rejected != rejected:
                with self._lock:
                    self.counters.frames_rejected += 1
                return None
            if assembler.frames_dropped == dropped:
                return None  # a piece of a frame still being assembled
        else:
            jpeg = None
            try:
                last = len(frame.payloads) - 1
                for i, payload in enumerate(frame.payloads):
                    jpeg = depacketizer.push(payload, frame.timestamp, i == last)
            except Rfc2435FrameTooLargeError as exc:
                log.debug("frame rejected: %s", exc)
                with self._lock:
                    self.counters.frames_rejected += 1
                return None
            except Rfc2435Error as exc:
                log.debug("bad RFC 2435 payload: %s", exc)
                jpeg = None
            if jpeg is not None:
                return jpeg
        with self._lock:
            self.counters.frames_corrupt += 1
        return None

    def _offer(self, jpeg: bytes, position: float | None) -> None:
        while True:
            try:
                self._decode_queue.put_nowait((jpeg, position))
                return
            except queue.Full:
                try:
                    self._decode_queue.get_nowait()
                    with self._lock:
                        self.counters.frames_skipped += 1
                except queue.Empty:
                    pass

    def _decode_loop(self) -> None:
        while self._running:
            try:
                item = self._decode_queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is None:
                return
            jpeg, position = item
            try:
                image, width, height = decode_for_display(jpeg, self.options.display_size)
            except FrameTooLargeError as exc:
                log.debug("frame rejected: %s", exc)
                with self._lock:
                    self.counters.frames_rejected += 1
                continue
            except Exception as exc:  # noqa: BLE001
                # Pillow raises OSError, ValueError, SyntaxError, struct.error, its own
                # DecompressionBombError, MemoryError...: whatever one frame does, it is
                # dropped and counted, and this thread goes on to the next.
                log.debug("frame does not decode: %s", exc)
                with self._lock:
                    self.counters.frames_undecodable += 1
                continue
            now = self.clock()
            with self._lock:
                self.counters.frames_decoded += 1
                self.counters.width, self.counters.height = width, height
                self.receiver_stats.on_frame(len(jpeg), now)
                number = self.counters.frames_decoded
            if self.options.save_frames:
                path = os.path.join(self.options.save_frames, f"frame-{number:06d}.jpg")
                try:
                    with open(path, "wb") as out:
                        out.write(jpeg)
                except OSError as exc:
                    log.warning("cannot save %s: %s", path, exc.strerror or exc)
            self._latest = DisplayFrame(image, width, height, number, position)

    def _end_of_stream(self) -> None:
        if not self.ended.is_set():
            self.ended.set()
            self.events.put(PlayerEvent("ended", "end of stream"))


def decode_for_display(
    jpeg: bytes, size: tuple[int, int] | None = None, max_pixels: int = MAX_FRAME_PIXELS
) -> tuple:
    """Decode a JPEG in memory and fit it into ``size`` keeping its aspect: (image, w, h).

    ``w`` and ``h`` are the frame's own size. When the display is smaller than the frame,
    libjpeg decodes at a reduced scale directly (draft mode), which is much cheaper than
    decoding whole and shrinking. The size is read from the SOF before anything is
    allocated: a frame of more than ``max_pixels`` raises :class:`FrameTooLargeError`, and none
    is decoded at more than :data:`MAX_DECODE_PIXELS` (see :mod:`mjpeg_rtsp.limits`).
    """
    from PIL import Image  # only decoding needs Pillow

    width, height = frame_size(jpeg)  # JpegError (a ValueError) when there is no SOF
    if width * height > max_pixels:
        raise FrameTooLargeError(f"{width}x{height} frame exceeds {max_pixels} pixels")
    image = Image.open(io.BytesIO(jpeg), formats=("JPEG",))  # lazy: headers only
    if image.size != (width, height):
        raise ValueError(f"the decoder sees {image.size}, the SOF says {width}x{height}")
    request = size if size and (width > size[0] or height > size[1]) else None
    scale = 1
    while scale < 8 and -(-width // scale) * -(-height // scale) > MAX_DECODE_PIXELS:
        scale *= 2
    if scale > 1:
        # draft() picks the largest DCT scale whose result still covers the request.
        cap = (max(1, width // scale), max(1, height // scale))
        request = cap if request is None else (min(request[0], cap[0]), min(request[1], cap[1]))
    if request is not None:
        image.draft("RGB", request)
    image.load()
    if image.mode != "RGB":
        image = image.convert("RGB")
    if size and image.size != size:
        scale = min(size[0] / image.width, size[1] / image.height)
        target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        if target != image.size:
            # Shrinking: an area average is as good as bilinear here and a third cheaper.
            shrink = target[0] < image.width
            image = image.resize(target, Image.BOX if shrink else Image.BILINEAR)
    return image, width, height
