"""The player's protocol logic without sockets, threads or clocks: bytes and times in,
bytes, actions and events out.

Theory of operation: :class:`PlayerController` is driven by a few calls, each given the
time ``now``:

* :meth:`~PlayerController.command` queues what the user asked for (setup, play, pause,
  teardown, login, cancel_login). Commands become request steps (``setup`` on a standard
  server is OPTIONS, DESCRIBE, SETUP); one request is outstanding at a time, each with a
  reply deadline. A 401 is answered with credentials by :class:`RtspClient` when the
  target has them, else reported as a ``credentials`` event when asked to, so a window
  can prompt and :meth:`login` sends the refused request again.
* :meth:`~PlayerController.receive_control` takes bytes from the RTSP connection: replies
  and, over TCP, interleaved RTP/RTCP. ``b""`` means the server closed it.
* :meth:`~PlayerController.receive_rtp` / :meth:`~PlayerController.receive_rtcp` take UDP
  datagrams with their source address. Packets from another address or SSRC, of another
  payload type, and garbage are counted and ignored; the rest go to the statistics and
  the jitter buffer; RTCP sender reports are remembered for receiver reports, a BYE ends
  the stream once the buffer is empty.
* :meth:`~PlayerController.tick` runs the timers: reply timeouts, keep-alives (half the
  session timeout), receiver reports, the textbook dialect's quiet-socket rule (its
  replies end with no blank line) and its end of stream (the course's server just stops
  sending).
* :meth:`~PlayerController.release` releases the complete frames that are due, as
  rebuilt JPEGs (:class:`ReleasedFrame`) with their position in seconds and RTP timestamp.
* :meth:`~PlayerController.note_shown` is told when a frame is displayed, with the wall
  clock (Unix seconds) read by the driver: with the latest RTCP sender report of the
  stream's SSRC, which maps an RTP timestamp to the sender's wall clock (for a live source
  the capture time, for a file the send time), the frame's end-to-end latency is
  ``shown - (sr_wall + (timestamp - sr_rtp) / 90000)``, the timestamp difference taken
  modulo 2**32 (:func:`~mjpeg_rtsp.rtp.ts_diff`). Frames before the first SR of a PLAY
  have no latency. Sender and player clocks are assumed to agree (same host, or NTP).

Outputs are collected in order and taken by the driver with :meth:`take_outputs`
(:class:`SendControl`, :class:`SendRtcp`, :class:`OpenMedia`, :class:`CloseMedia`) and
:meth:`take_events` (:class:`PlayerEvent`). The driver owns the sockets and threads and
calls in under one lock; nothing here blocks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import NamedTuple

from .client import ClientError, PlayerState, RtspClient, StreamTarget
from .jitter import JitterBuffer, MediaFrame, starts_jpeg_frame
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
    unix_from_ntp,
)
from .rtp import JPEG_CLOCK_RATE, RtpError, RtpPacket, ts_diff
from .rtsp import (
    NEED_DATA,
    Dialect,
    InterleavedFrame,
    Response,
    RtspError,
    RtspReader,
    format_interleaved,
)
from .stats import LatencyStats, ReceiverStats

log = logging.getLogger(__name__)

RECEIVER_REPORT_INTERVAL = 5.0
FIRST_REPORT_DELAY = 1.0
# The textbook server's replies end with no blank line: once its socket has been quiet
# this long, a reply is complete.
TEXTBOOK_QUIET = 0.05
# The course's server just stops sending at the end of the movie: silence this long ends it.
TEXTBOOK_END_SILENCE = 2.0
NEVER = float("inf")


@dataclass(frozen=True)
class PlayerEvent:
    kind: str  # "state", "error", "ended", "credentials" (see ControllerOptions.ask_credentials)
    message: str = ""


@dataclass(frozen=True)
class SendControl:
    """Bytes for the RTSP connection (a request, or interleaved RTCP)."""

    data: bytes


@dataclass(frozen=True)
class SendRtcp:
    """An RTCP packet for the server's RTCP port over UDP."""

    data: bytes
    port: int


@dataclass(frozen=True)
class OpenMedia:
    """Bind the RTP/RTCP ports, then call :meth:`PlayerController.media_opened`."""


@dataclass(frozen=True)
class CloseMedia:
    """The session is over: close the RTP/RTCP ports."""


class ReleasedFrame(NamedTuple):
    """A complete frame out of the jitter buffer, rebuilt as a JPEG."""

    jpeg: bytes
    position: float | None  # seconds into the stream, when the server gave a range
    timestamp: int  # its RTP timestamp (for the latency, see note_shown)


@dataclass
class ControllerOptions:
    transport: str = "udp"  # or "tcp" (interleaved); the textbook dialect is always UDP
    # Jitter-buffer delay in seconds; 0 releases each frame as soon as it is complete.
    latency: float = 0.1
    reply_timeout: float = 10.0
    # On 401, post a "credentials" event and wait for login() or cancel_login().
    ask_credentials: bool = False


@dataclass
class PlayerCounters:
    frames_decoded: int = 0
    frames_corrupt: int = 0  # could not be rebuilt from their packets
    frames_undecodable: int = 0  # rebuilt, but the JPEG decoder refused them
    frames_rejected: int = 0  # over a size limit (mjpeg_rtsp.limits): never decoded
    frames_skipped: int = 0  # decoded too late for display: a newer one was waiting
    frames_recorded: int = 0  # written to the --record file
    packets_foreign: int = 0
    packets_garbage: int = 0
    width: int = 0
    height: int = 0


class PlayerController:
    def __init__(
        self,
        target: StreamTarget,
        options: ControllerOptions | None = None,
        our_ssrc: int = 0,
        cname: str = "player@localhost",
    ) -> None:
        self.target = target
        self.options = options or ControllerOptions()
        self.client = RtspClient(target)
        self.counters = PlayerCounters()
        self.receiver_stats = ReceiverStats()
        self.latency_stats = LatencyStats()
        textbook = target.dialect is Dialect.TEXTBOOK
        self.jitter = JitterBuffer(
            self.options.latency,
            frame_per_packet=textbook,
            frame_start=None if textbook else starts_jpeg_frame,
        )
        self.failed: str | None = None
        self.ended = False
        self.duration: float | None = None
        self.server_ip: str | None = None
        self._our_ssrc = our_ssrc
        self._cname = cname
        self._reader = RtspReader()
        self._outputs: list = []
        self._events: list[PlayerEvent] = []
        self._steps: list[tuple[str, tuple]] = []
        self._awaiting: tuple[str, float] | None = None  # (step, reply deadline)
        self._current_step: tuple[str, tuple] | None = None
        self._login_step: tuple[str, tuple] | None = None  # refused with 401, to send again
        self._media_port: int | None = None  # our RTP port once the driver has bound it
        self._opening_media = False
        self._depacketizer = JpegDepacketizer()
        self._raw_assembler = RawJpegAssembler()
        self._play_origin: tuple[float, int] | None = None  # (npt start, rtptime)
        self._next_keepalive = NEVER
        self._next_report = NEVER
        self._last_sr: tuple[int, float] | None = None  # (middle 32 bits of NTP, arrival)
        # The latest SR's clock mapping: (SSRC, RTP timestamp, sender's wall clock, Unix s).
        self._sender_clock: tuple[int, int, float] | None = None
        self._bye = False
        self._last_packet = 0.0
        self._last_control_data = 0.0

    # --- driver interface -------------------------------------------------------------------

    def take_outputs(self) -> list:
        outputs, self._outputs = self._outputs, []
        return outputs

    def take_events(self) -> list[PlayerEvent]:
        events, self._events = self._events, []
        return events

    @property
    def state(self) -> PlayerState:
        return self.client.state

    @property
    def busy(self) -> bool:
        """A request is on its way, queued, or waiting for credentials or media ports."""
        return (self._awaiting is not None or bool(self._steps) or self._opening_media
                or self._login_step is not None)

    @property
    def needs_media_ports(self) -> bool:
        """Whether SETUP needs UDP ports of ours (not over TCP)."""
        return self.target.dialect is Dialect.TEXTBOOK or self.options.transport != "tcp"

    def connected(self, server_ip: str) -> None:
        """The RTSP connection is up; media from other addresses is foreign."""
        self.server_ip = server_ip

    def command(self, name: str, args: tuple = (), now: float = 0.0) -> None:
        """A user command: setup, play (start or None), pause, teardown, login (user,
        password), cancel_login (message)."""
        if name == "login":
            step, self._login_step = self._login_step, None
            if step is not None:
                user, password = args
                self.target = replace(self.target, user=user, password=password)
                self.client.target = self.target
                self._steps.insert(0, step)
        elif name == "cancel_login":
            if self._login_step is not None:
                self._login_step = None
                self._fail(args[0])
        elif name == "setup":
            if self.target.dialect is Dialect.STANDARD:
                self._steps += [("options", ()), ("describe", ()), ("setup", ())]
            else:
                self._steps.append(("setup", ()))
        elif name in ("play", "pause", "teardown"):
            self._steps.append((name, args))
        else:
            raise ValueError(f"unknown player command {name!r}")
        self._advance(now)

    def leave(self, now: float) -> None:
        """The user is leaving: drop queued commands and end the session now, with a
        TEARDOWN sent even while another request is unanswered (RFC 2326 section 9.1 lets
        requests be pipelined), so a server that never answers cannot hold us."""
        self._steps.clear()
        self._login_step = None
        if self.client.state is PlayerState.INIT or self.failed is not None:
            return
        if self._awaiting is None or self._awaiting[0] != "teardown":
            self._send_step("teardown", (), now)

    def media_opened(self, rtp_port: int, now: float) -> None:
        """The driver bound our RTP port (and RTCP on the next one): SETUP can go."""
        self._media_port = rtp_port
        if self._opening_media:
            self._opening_media = False
            self._send_step("setup", (), now)

    def media_failed(self, message: str) -> None:
        self._opening_media = False
        self._fail(message)

    def receive_control(self, data: bytes, now: float) -> None:
        """Bytes read from the RTSP connection; ``b""`` when the server closed it."""
        self._last_control_data = now
        if not data:
            if self.client.state is not PlayerState.INIT or self._awaiting is not None:
                self._fail("the server closed the connection", connection_lost=True)
            self._set_ended()
            return
        self._reader.receive_data(data)
        while True:
            try:
                event = self._reader.next_event()
            except RtspError as exc:
                self._fail(f"unreadable reply from the server: {exc}")
                return
            if event is NEED_DATA:
                return
            if isinstance(event, Response):
                self._on_response(event, now)
            elif isinstance(event, InterleavedFrame):
                channels = self.client.interleaved or (0, 1)
                if event.channel == channels[0]:
                    self._on_rtp(event.data, now)
                elif event.channel == channels[1]:
                    self._on_rtcp(event.data, now)

    def control_failed(self, message: str) -> None:
        """The RTSP connection broke (reset, unreachable)."""
        self._fail(message, connection_lost=True)
        self._set_ended()

    def internal_error(self, message: str) -> None:
        """A driver thread met something unexpected: fail, and end the server's session
        (TEARDOWN) while the connection still stands."""
        self._fail(message)
        self._set_ended()

    def receive_rtp(self, data: bytes, source_ip: str, now: float) -> None:
        if self.server_ip is not None and source_ip != self.server_ip:
            self.counters.packets_foreign += 1
            return
        self._on_rtp(data, now)

    def receive_rtcp(self, data: bytes, source_ip: str, now: float) -> None:
        if self.server_ip is not None and source_ip != self.server_ip:
            self.counters.packets_foreign += 1
            return
        self._on_rtcp(data, now)

    def tick(self, now: float) -> None:
        """Run whatever timer is due at ``now``."""
        if (self._reader.pending_textbook_message()
                and now - self._last_control_data >= TEXTBOOK_QUIET):
            message = self._reader.flush_textbook_message()
            if isinstance(message, Response):
                self._on_response(message, now)
        if self._awaiting is not None and now > self._awaiting[1]:
            step = self._awaiting[0].upper()
            self._fail(f"the server did not answer {step} within "
                       f"{self.options.reply_timeout:.0f} s")
            return
        if now >= self._next_keepalive and self._awaiting is None:
            self._send(self.client.keepalive())
            self._next_keepalive = now + self.client.session_timeout / 2
        if now >= self._next_report and self.client.state is PlayerState.PLAYING:
            self._send_receiver_report(now)
            self._next_report = now + RECEIVER_REPORT_INTERVAL
        if (self.target.dialect is Dialect.TEXTBOOK and self.client.state is PlayerState.PLAYING
                and self.receiver_stats.packets_received and not self.ended
                and now - self._last_packet > TEXTBOOK_END_SILENCE):
            self._set_ended()
        if self._bye and self.jitter.next_due() is None:
            self._set_ended()  # BYE, and every frame before it has been played out

    def next_timer(self, now: float) -> float:
        """When :meth:`tick` next has something to do (``inf``: only on input)."""
        times = [self._next_keepalive if self._awaiting is None else self._awaiting[1]]
        if self._reader.pending_textbook_message():
            times.append(self._last_control_data + TEXTBOOK_QUIET)
        if self.client.state is PlayerState.PLAYING:
            times.append(self._next_report)
            if self.target.dialect is Dialect.TEXTBOOK and not self.ended:
                times.append(self._last_packet + TEXTBOOK_END_SILENCE)
        return min(times)

    def next_due(self) -> float | None:
        """When the next frame is due out of the jitter buffer (None: nothing pending)."""
        return self.jitter.next_due()

    def pop_frames(self, now: float) -> list[tuple[bytes, float | None]]:
        """:meth:`release` as (JPEG, seconds into the stream or None) pairs."""
        return [(frame.jpeg, frame.position) for frame in self.release(now)]

    def release(self, now: float) -> list[ReleasedFrame]:
        """Complete frames due at ``now``, rebuilt, in order."""
        frames = self.jitter.pop(now)
        released = []
        for frame in frames:
            try:
                jpeg = self._rebuild(frame)
            except Exception:  # noqa: BLE001 -- one frame must never stop playout
                log.debug("frame cannot be rebuilt", exc_info=True)
                self.counters.frames_corrupt += 1
                continue
            if jpeg is None:
                continue
            position = None
            if self._play_origin is not None:
                start, rtptime = self._play_origin
                position = start + ((frame.timestamp - rtptime) & 0xFFFFFFFF) / 90000
            released.append(ReleasedFrame(jpeg, position, frame.timestamp))
        return released

    def capture_time(self, timestamp: int) -> float | None:
        """The sender's wall-clock time (Unix seconds) of RTP ``timestamp``, from the latest
        sender report of the stream's SSRC; None before one has come in this PLAY."""
        mapping = self._sender_clock
        if mapping is None or mapping[0] != self.client.ssrc:
            return None
        _, sr_rtp, sr_wall = mapping
        return sr_wall + ts_diff(timestamp, sr_rtp) / JPEG_CLOCK_RATE

    def note_shown(self, timestamp: int, wall: float) -> float | None:
        """The frame with RTP ``timestamp`` was displayed at ``wall`` (the driver's wall
        clock, Unix seconds): returns its end-to-end latency in seconds, counted in the
        statistics, or None when no sender report maps its timestamp yet."""
        captured = self.capture_time(timestamp)
        if captured is None:
            return None
        latency = wall - captured
        self.latency_stats.add(latency)
        return latency

    def note_recorded(self) -> None:
        """A released frame was written to the recording."""
        self.counters.frames_recorded += 1

    def note_decoded(self, size: int, width: int, height: int, now: float) -> int:
        """A frame was decoded for display; returns how many have been so far."""
        self.counters.frames_decoded += 1
        self.counters.width, self.counters.height = width, height
        self.receiver_stats.on_frame(size, now)
        return self.counters.frames_decoded

    def note_undecodable(self) -> None:
        self.counters.frames_undecodable += 1

    def note_rejected(self) -> None:
        """The decoder refused a frame over a size limit (limits.FrameTooLargeError)."""
        self.counters.frames_rejected += 1

    def note_skipped(self) -> None:
        self.counters.frames_skipped += 1

    def stats(self, now: float, whole_run: bool = False) -> dict:
        """Statistics now; rates over the last seconds, or over the whole run.

        ``latency_ms`` is ``{"median", "p95", "frames"}`` over the frames shown (the last
        :data:`~mjpeg_rtsp.stats.RECENT_LATENCY_FRAMES`, or with ``whole_run`` the run), or
        None when none had a latency (no sender report: the textbook dialect).
        """
        snapshot = self.receiver_stats.snapshot(now, whole_run)
        snapshot.update(
            frames=self.counters.frames_decoded,
            frames_lost=self.jitter.frames_lost + self.counters.frames_corrupt
            + self.counters.frames_undecodable + self.counters.frames_rejected,
            frames_undecodable=self.counters.frames_undecodable,
            frames_rejected=self.counters.frames_rejected,
            frames_skipped=self.counters.frames_skipped,
            frames_recorded=self.counters.frames_recorded,
            latency_ms=self.latency_stats.summary_ms(recent=not whole_run),
            packets_foreign=self.counters.packets_foreign + self.counters.packets_garbage,
            packets_late=self.jitter.packets_late,
            packets_duplicate=self.jitter.packets_duplicate,
            width=self.counters.width,
            height=self.counters.height,
        )
        return snapshot

    # --- requests ---------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        self._outputs.append(SendControl(data))

    def _fail(self, message: str, connection_lost: bool = False) -> None:
        if self.failed is None:
            self.failed = message
            log.info("player error: %s", message)
            self._events.append(PlayerEvent("error", message))
            # The session the server holds for us ends with a TEARDOWN (its answer is not
            # awaited), unless a TEARDOWN is what failed.
            if not connection_lost and self.client.session_id is not None and not (
                self._current_step is not None and self._current_step[0] == "teardown"
            ):
                self._send(self.client.teardown())
        self._steps.clear()
        self._awaiting = None
        self._next_keepalive = self._next_report = NEVER  # nothing more for this session

    def _set_ended(self) -> None:
        if not self.ended:
            self.ended = True
            self._events.append(PlayerEvent("ended", "end of stream"))

    def _advance(self, now: float) -> None:
        while (self._awaiting is None and self._login_step is None and not self._opening_media
               and self._steps and self.failed is None):
            self._send_step(*self._steps.pop(0), now)

    def _send_step(self, step: str, args: tuple, now: float) -> None:
        client = self.client
        try:
            if step == "setup":
                if self.needs_media_ports and self._media_port is None:
                    self._opening_media = True
                    self._outputs.append(OpenMedia())
                    return
                data = client.setup(self.options.transport, self._media_port or 0)
            elif step == "play":
                if client.state is PlayerState.INIT:
                    return
                data = client.play(*args)
                self._new_play(now)  # before sending: the first packets may beat the reply
            elif step in ("pause", "teardown") and client.state is PlayerState.INIT:
                return
            else:
                data = getattr(client, step)()
        except ClientError as exc:
            self._fail(str(exc))
            return
        self._awaiting = (step, now + self.options.reply_timeout)
        self._current_step = (step, args)
        self._send(data)

    def _new_play(self, now: float) -> None:
        """Forget the previous PLAY's packets and timing (a seek or a resume starts afresh)."""
        self.jitter.reset()
        media = self.client.media
        self._depacketizer = JpegDepacketizer(
            *(media.width, media.height) if media else (None, None)
        )
        self._raw_assembler = RawJpegAssembler()
        self._bye = False
        self._sender_clock = None  # a seek moves the timestamps: wait for this PLAY's SR
        self._last_packet = now
        self.ended = False

    def _on_response(self, response: Response, now: float) -> None:
        try:
            reply = self.client.receive(response)
        except ClientError as exc:
            self._fail(str(exc))
            return
        if reply is None:
            return
        if reply.retry is not None:
            self._send(reply.retry)
            return
        if reply.keepalive or (
            self._awaiting is not None and reply.method.lower() != self._awaiting[0]
        ):
            return  # a keep-alive's answer, or one overtaken by a TEARDOWN on leaving
        self._awaiting = None
        if not reply.ok:
            status = response.status
            if status == 401:
                message = "the server requires a user name and password (401 Unauthorized)"
                if self.target.user is not None:
                    message = "the server rejected the user name or password (401 Unauthorized)"
                if self.options.ask_credentials and self._current_step is not None:
                    self._login_step = self._current_step
                    self._events.append(PlayerEvent("credentials", message))
                    return
            else:
                message = f"{reply.method} failed: {status} {response.reason or ''}".strip()
            self._fail(message)
            return
        if reply.method == "DESCRIBE" and self.client.media:
            self.duration = self.client.media.duration
        elif reply.method == "SETUP":
            if self.target.dialect is Dialect.STANDARD:
                self._next_keepalive = now + self.client.session_timeout / 2
        elif reply.method == "PLAY":
            start = reply.play_range[0] if reply.play_range else None
            self._last_packet = now
            if reply.rtp_time is not None:  # range-checked by the client ("²" is no digit)
                self._play_origin = (start or 0.0, reply.rtp_time)
            else:
                self._play_origin = None
            if self.target.dialect is Dialect.STANDARD:
                self._next_report = now + FIRST_REPORT_DELAY
        elif reply.method == "TEARDOWN":
            self._media_port = None
            self._outputs.append(CloseMedia())
            self._next_keepalive = self._next_report = NEVER
        self._events.append(PlayerEvent("state", self.client.state.value))
        self._advance(now)

    def _send_receiver_report(self, now: float) -> None:
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
            SourceDescription.cname(self._our_ssrc, self._cname),
        )
        if self.client.interleaved is not None:
            self._send(format_interleaved(self.client.interleaved[1], packet))
        elif self.client.server_ports is not None:
            port = self.client.server_ports[1] or self.client.server_ports[0] + 1
            self._outputs.append(SendRtcp(packet, port))

    # --- media ------------------------------------------------------------------------------

    def _on_rtp(self, data: bytes, arrival: float) -> None:
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            self.counters.packets_garbage += 1
            return
        media = self.client.media
        if self.client.ssrc is None:
            # The server did not announce it (textbook servers never do): the first
            # packet's source is the stream's.
            self.client.ssrc = packet.ssrc
        if packet.ssrc != self.client.ssrc or (
            media is not None and self.target.dialect is Dialect.STANDARD
            and packet.payload_type != media.payload_type
        ):
            self.counters.packets_foreign += 1
            return
        self._last_packet = arrival
        self.receiver_stats.on_packet(packet.sequence_number, packet.timestamp, arrival,
                                      len(packet.payload))
        self.jitter.push(packet, arrival)

    def _on_rtcp(self, data: bytes, arrival: float) -> None:
        try:
            packets = parse_compound(data)
        except RtcpError:
            self.counters.packets_garbage += 1
            return
        for packet in packets:
            if isinstance(packet, SenderReport):
                self._last_sr = (ntp_middle32(packet.ntp_timestamp), arrival)
                if self.client.ssrc is None or packet.ssrc == self.client.ssrc:
                    self._sender_clock = (packet.ssrc, packet.rtp_timestamp,
                                          unix_from_ntp(packet.ntp_timestamp))
            elif isinstance(packet, Bye) and (
                self.client.ssrc is None or self.client.ssrc in packet.sources
            ):
                self._bye = True

    def _rebuild(self, frame: MediaFrame) -> bytes | None:
        if self.target.dialect is Dialect.TEXTBOOK:
            assembler = self._raw_assembler
            dropped, rejected = assembler.frames_dropped, assembler.frames_rejected
            jpeg = assembler.push(b"".join(frame.payloads), frame.first_seq)
            if jpeg is not None:
                return jpeg
            if assembler.frames_rejected != rejected:
                self.counters.frames_rejected += 1
                return None
            if assembler.frames_dropped == dropped:
                return None  # a piece of a frame still being assembled
        else:
            jpeg = None
            try:
                last = len(frame.payloads) - 1
                for i, payload in enumerate(frame.payloads):
                    jpeg = self._depacketizer.push(payload, frame.timestamp, i == last)
            except Rfc2435FrameTooLargeError as exc:
                log.debug("frame rejected: %s", exc)
                self.counters.frames_rejected += 1
                return None
            except Rfc2435Error as exc:
                log.debug("bad RFC 2435 payload: %s", exc)
                jpeg = None
            if jpeg is not None:
                return jpeg
        self.counters.frames_corrupt += 1
        return None
