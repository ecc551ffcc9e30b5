"""The player without Tk: the threads and sockets around :class:`PlayerController`.

Theory of operation: every protocol decision (request sequencing, the 401 retry, timers,
RTP/RTCP filtering, the jitter buffer, statistics, receiver reports) is made by the
sans-I/O :class:`~mjpeg_rtsp.controller.PlayerController`; this module only moves bytes and
time into it and carries out what it returns, with four threads, each with one job, and
nothing here touches a widget:

* control: owns the RTSP connection; feeds it to the controller, runs its timers, sends
  what it asks for (requests, keep-alives, RTCP), opens and closes the media ports.
* receiver (UDP only): reads the RTP and RTCP ports into the controller.
* playout: takes due frames (rebuilt JPEGs) out of the controller, writes each to the
  recording when there is one (``PlayerOptions.record``: raw concatenated JPEGs, as they
  were received, before any decoding), and hands them to the decoder through a bounded
  queue (a newer frame replaces one still waiting).
* decoder: Pillow, in memory, scaled to the display size (JPEG draft mode when the display
  is smaller); the newest picture is kept for the UI to fetch.

Latency (:meth:`PlayerController.note_shown`) is measured at *display*, on the injected
wall clock: by default when the decoder has the picture ready (the moment a headless run
takes it, which is when it would be shown); with ``PlayerOptions.ui_shows_frames`` when
the UI reports the frame on screen (:meth:`Player.frame_shown`, the Tk window does).

Every call into the controller is made under one lock. The UI polls
:meth:`Player.latest_frame`, :meth:`Player.stats` and the :attr:`Player.events` queue from
its own thread.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import BinaryIO

from .client import ClientError, PlayerState, RtspClient, StreamTarget
from .controller import (
    CloseMedia,
    ControllerOptions,
    OpenMedia,
    PlayerController,
    PlayerCounters,
    PlayerEvent,
    ReleasedFrame,
    SendControl,
    SendRtcp,
)
from .jpeg import frame_size
from .limits import MAX_DECODE_PIXELS, MAX_FRAME_PIXELS, FrameTooLargeError
from .ports import Selector, bind_rtp_pair
from .rtsp import Dialect

__all__ = ["DisplayFrame", "Player", "PlayerEvent", "PlayerOptions", "decode_for_display"]

log = logging.getLogger(__name__)

CONTROL_POLL = 0.05  # how soon the control thread notices a command from the UI


@dataclass
class PlayerOptions(ControllerOptions):
    """The controller's options (transport, latency, reply timeout, credentials prompt) and
    the driver's own."""

    save_frames: str | None = None
    display_size: tuple[int, int] | None = None
    connect_timeout: float = 5.0
    # Every complete frame received is written here as it came (raw MJPEG); the caller
    # opens and closes it, the player flushes it at close().
    record: BinaryIO | None = None
    # The UI calls Player.frame_shown when a frame is on screen (the latency is measured
    # then); otherwise a frame counts as shown once decoded.
    ui_shows_frames: bool = False


@dataclass
class DisplayFrame:
    image: object  # PIL.Image.Image, already scaled for display
    width: int  # the frame's own size
    height: int
    number: int  # frames displayed so far
    position: float | None  # seconds into the stream, when the server gave a range
    timestamp: int = 0  # RTP timestamp (for Player.frame_shown)


class Player:
    def __init__(
        self,
        target: StreamTarget,
        options: PlayerOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        """``clock`` times the protocol (monotonic); ``wallclock`` (Unix seconds) is what
        the sender reports' NTP times are compared with for the latency."""
        self.options = options or PlayerOptions()
        self.clock = clock
        self.wallclock = wallclock
        self.controller = PlayerController(
            target,
            self.options,
            our_ssrc=int.from_bytes(os.urandom(4), "big"),
            cname=f"player@{socket.gethostname()}",
        )
        self.events: queue.Queue[PlayerEvent] = queue.Queue()
        self.ended = threading.Event()
        self._lock = threading.Condition()  # guards the controller; notified on any change
        self._commands: queue.Queue[tuple[str, tuple]] = queue.Queue()
        self._sock: socket.socket | None = None
        self._rtp: socket.socket | None = None
        self._rtcp: socket.socket | None = None
        self._running = False
        self._threads: list[threading.Thread] = []
        # (order of release, frame): decoders may finish out of order; only a newer frame
        # replaces the one on show.
        self._decode_queue: queue.Queue[tuple[int, ReleasedFrame] | None] = queue.Queue(4)
        self._released = 0  # frames handed to the decoders (the playout thread's count)
        self._recording = self.options.record
        self._latest: DisplayFrame | None = None
        self._in_order = _InOrder()

    # --- what the UI reads (any thread) -----------------------------------------------------

    @property
    def target(self) -> StreamTarget:
        return self.controller.target

    @property
    def client(self) -> RtspClient:
        return self.controller.client

    @property
    def counters(self) -> PlayerCounters:
        return self.controller.counters

    @property
    def state(self) -> PlayerState:
        return self.controller.state

    @property
    def failed(self) -> str | None:
        return self.controller.failed

    @property
    def duration(self) -> float | None:
        return self.controller.duration

    @property
    def busy(self) -> bool:
        """A request is on its way or queued."""
        return self.controller.busy or not self._commands.empty()

    def latest_frame(self) -> DisplayFrame | None:
        return self._latest

    def stats(self, whole_run: bool = False) -> dict:
        """Statistics now; rates over the last seconds, or over the whole run."""
        with self._lock:
            return self.controller.stats(self.clock(), whole_run)

    def frame_shown(self, frame: DisplayFrame) -> None:
        """The UI has put ``frame`` on screen (with ``PlayerOptions.ui_shows_frames``)."""
        shown = self.wallclock()
        with self._lock:
            self.controller.note_shown(frame.timestamp, shown)

    # --- commands (any thread) --------------------------------------------------------------

    def start(self) -> None:
        """Connect to the server; ClientError if it cannot be reached."""
        warm_up_decoder()  # before any frame can arrive
        target = self.target
        try:
            self._sock = socket.create_connection(
                (target.host, target.port), timeout=self.options.connect_timeout
            )
        except ConnectionRefusedError:
            raise ClientError(
                f"connection refused by {target.host}:{target.port} (is the server running?)"
            ) from None
        except TimeoutError:
            raise ClientError(f"no answer from {target.host}:{target.port}") from None
        except OSError as exc:
            raise ClientError(
                f"cannot connect to {target.host}:{target.port}: {exc.strerror or exc}"
            ) from None
        self._sock.settimeout(None)
        self.controller.connected(self._sock.getpeername()[0])
        self._running = True
        self._spawn(self._control_loop, "rtsp-control")
        self._spawn(self._playout_loop, "playout")
        for n in range(DECODER_THREADS):
            self._spawn(self._decode_loop, f"decoder-{n}")

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
        """Tear down (if set up; at once, even behind an unanswered request) and stop every
        thread."""
        if not self._running:
            return
        if self.state is not PlayerState.INIT and self.failed is None:
            self._commands.put(("leave", ()))
            with self._lock:
                self._lock.wait_for(
                    lambda: self.state is PlayerState.INIT or self.failed is not None
                    or not self._running_control(), timeout)
        self._running = False
        with self._lock:
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._close_media_sockets()
        if self._sock is not None:
            self._sock.close()
        self._flush_recording()

    def _flush_recording(self) -> None:
        recording, self._recording = self._recording, None
        if recording is None:
            return
        try:
            recording.flush()
        except (OSError, ValueError) as exc:  # ValueError: the caller closed it already
            log.warning("cannot write the recording: %s", getattr(exc, "strerror", None) or exc)

    # --- control thread ---------------------------------------------------------------------

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _running_control(self) -> bool:
        return bool(self._threads) and self._threads[0].is_alive()

    def _control_loop(self) -> None:
        controller = self.controller
        try:
            with Selector() as selector:
                selector.register(self._sock, selectors.EVENT_READ)
                while self._running:
                    self._take_commands()
                    with self._lock:
                        now = self.clock()
                        wait = min(CONTROL_POLL, max(0.0, controller.next_timer(now) - now))
                    data = self._sock.recv(65536) if selector.select(wait) else None
                    arrival = self.clock()
                    with self._lock:
                        if data is not None:
                            controller.receive_control(data, arrival)
                        controller.tick(self.clock())
                    self._carry_out()
                    if data == b"":
                        return  # the server closed the connection
        except OSError as exc:
            if self._running:
                with self._lock:
                    controller.control_failed(
                        f"connection to the server failed: {exc.strerror or exc}")
                self._carry_out(send=False)
        except Exception as exc:  # noqa: BLE001
            # The controller answers every value it is given; should one still slip through,
            # the user gets an error (and the server its TEARDOWN), not a silent hang.
            self._internal_error("cannot handle the server's messages", exc)

    def _internal_error(self, what: str, exc: Exception) -> None:
        """The one way a driver thread reports an unexpected error: the player fails with
        ``what`` and the server gets its TEARDOWN while the connection stands."""
        log.debug("%s", what, exc_info=True)
        with self._lock:
            self.controller.internal_error(f"{what} ({type(exc).__name__}: {exc})")
        try:
            self._carry_out()
        except OSError:
            pass  # the connection is gone too: nothing left to end

    def _take_commands(self) -> None:
        while True:
            try:
                command, args = self._commands.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                if command == "leave":
                    self.controller.leave(self.clock())
                else:
                    self.controller.command(command, args, self.clock())
            self._carry_out()

    def _carry_out(self, send: bool = True) -> None:
        """Do what the controller asked for, in order; pass its events on to the UI."""
        while True:
            with self._lock:
                outputs = self.controller.take_outputs()
                events = self.controller.take_events()
                if self.controller.ended:
                    self.ended.set()
                else:
                    self.ended.clear()
                self._lock.notify_all()
            for event in events:
                self.events.put(event)
            if not outputs:
                return
            for output in outputs:
                if isinstance(output, SendControl):
                    if send:
                        self._sock.sendall(output.data)
                elif isinstance(output, SendRtcp):
                    self._send_rtcp(output)
                elif isinstance(output, OpenMedia):
                    self._open_media_sockets()
                elif isinstance(output, CloseMedia):
                    self._close_media_sockets()

    def _send_rtcp(self, output: SendRtcp) -> None:
        if self._rtcp is None or self.controller.server_ip is None:
            return
        try:
            self._rtcp.sendto(output.data, (self.controller.server_ip, output.port))
        except OSError:
            pass  # a receiver report lost is no loss

    # --- media sockets and the receive path -----------------------------------------------

    def _open_media_sockets(self) -> None:
        """Bind the RTP (and RTCP) ports before SETUP, so no early packet is missed."""
        target = self.target
        family = self._sock.family
        bind_host = "::" if family == socket.AF_INET6 else "0.0.0.0"
        try:
            if target.dialect is Dialect.TEXTBOOK:
                rtp = socket.socket(family, socket.SOCK_DGRAM)
                try:
                    rtp.bind((bind_host, target.rtp_port))
                except OSError:
                    rtp.close()
                    raise
                rtcp = None
            else:
                rtp, rtcp = bind_rtp_pair(bind_host, family)
        except OSError as exc:
            message = (f"cannot use RTP port {target.rtp_port}: {exc.strerror}"
                       if target.dialect is Dialect.TEXTBOOK
                       else f"no UDP ports for RTP/RTCP: {exc}")
            with self._lock:
                self.controller.media_failed(message)
            return
        rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self._rtp, self._rtcp = rtp, rtcp
        self._spawn(self._receive_loop, "rtp-receiver")
        with self._lock:
            self.controller.media_opened(rtp.getsockname()[1], self.clock())

    def _close_media_sockets(self) -> None:
        rtp, rtcp = self._rtp, self._rtcp
        self._rtp = self._rtcp = None
        for sock in (rtp, rtcp):
            if sock is not None:
                sock.close()

    def _receive_loop(self) -> None:
        rtp, rtcp = self._rtp, self._rtcp
        try:
            with Selector() as selector:
                for sock in (rtp, rtcp):
                    if sock is not None:
                        selector.register(sock, selectors.EVENT_READ)
                while self._running and self._rtp is rtp:
                    for key, _ in selector.select(0.2):
                        try:
                            data, address = key.fileobj.recvfrom(65536)  # type: ignore[union-attr]
                        except OSError:
                            continue  # closed by teardown (the loop ends), or an ICMP error
                        arrival = self.clock()  # before waiting for the lock
                        with self._lock:
                            if key.fileobj is rtp:
                                self.controller.receive_rtp(data, address[0], arrival)
                            else:
                                self.controller.receive_rtcp(data, address[0], arrival)
                            self._lock.notify_all()
        except (OSError, ValueError):
            return  # a socket closed by teardown under the selector
        except Exception as exc:  # noqa: BLE001
            self._internal_error("cannot handle the stream's packets", exc)

    # --- playout and decoding ---------------------------------------------------------------

    def _playout_loop(self) -> None:
        try:
            while self._running:
                with self._lock:
                    now = self.clock()
                    due = self.controller.next_due()
                    if due is None or due > now:
                        wait = 0.1 if due is None else min(0.1, due - now)
                        self._lock.wait(max(wait, 0.001))
                        continue
                    frames = self.controller.release(now)
                for frame in frames:
                    if self._recording is not None:
                        self._record(frame.jpeg)
                    self._offer(frame)
        except Exception as exc:  # noqa: BLE001
            self._internal_error("cannot play the stream out", exc)

    def _record(self, jpeg: bytes) -> None:
        """Append one received frame to the recording; a write that fails (disk full)
        fails the player: the user asked for a recording and would not get it."""
        try:
            self._recording.write(jpeg)  # type: ignore[union-attr]
        except OSError as exc:
            self._recording = None
            with self._lock:
                self.controller.internal_error(
                    f"cannot write the recording: {exc.strerror or exc}")
            try:
                self._carry_out()
            except OSError:
                pass  # the connection is gone too: nothing left to end
            return
        with self._lock:
            self.controller.note_recorded()

    def _offer(self, frame: ReleasedFrame) -> None:
        self._released += 1
        while True:
            try:
                self._decode_queue.put_nowait((self._released, frame))
                return
            except queue.Full:
                try:
                    dropped = self._decode_queue.get_nowait()
                    with self._lock:
                        self.controller.note_skipped()
                    if dropped is not None:
                        self._in_order.finish(dropped[0], None)
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
            order, item = item
            jpeg = item.jpeg
            try:
                image, width, height = decode_for_display(jpeg, self.options.display_size)
            except FrameTooLargeError as exc:
                log.debug("frame rejected: %s", exc)
                with self._lock:
                    self.controller.note_rejected()
                self._in_order.finish(order, None)
                continue
            except Exception as exc:  # noqa: BLE001
                # Pillow raises OSError, ValueError, SyntaxError, struct.error, its own
                # DecompressionBombError, MemoryError...: whatever one frame does, it is
                # dropped and counted, and this thread goes on to the next.
                log.debug("frame does not decode: %s", exc)
                with self._lock:
                    self.controller.note_undecodable()
                self._in_order.finish(order, None)
                continue
            self._in_order.finish(order, partial(self._publish, item, image, width, height))

    def _publish(self, item: ReleasedFrame, image, width: int, height: int) -> None:
        """A decoded frame becomes the picture on show (in release order: see _InOrder)."""
        shown = self.wallclock()  # headless: the moment it would be shown
        with self._lock:
            number = self.controller.note_decoded(len(item.jpeg), width, height, self.clock())
            if not self.options.ui_shows_frames:
                self.controller.note_shown(item.timestamp, shown)
        if self.options.save_frames:
            path = os.path.join(self.options.save_frames, f"frame-{number:06d}.jpg")
            try:
                with open(path, "wb") as out:
                    out.write(item.jpeg)
            except OSError as exc:
                log.warning("cannot save %s: %s", path, exc.strerror or exc)
        self._latest = DisplayFrame(image, width, height, number, item.position, item.timestamp)


class _InOrder:
    """Frames decoded by several threads, published in the order they were released: a
    frame that finishes before an earlier one waits for it (or for its verdict: skipped,
    rejected, undecodable), so pictures, counts and saved frames never go back."""

    def __init__(self) -> None:
        self._next = 1  # release orders start at 1
        self._done: dict[int, Callable[[], None] | None] = {}
        self._lock = threading.Lock()

    def finish(self, order: int, publish: Callable[[], None] | None) -> None:
        """Frame ``order`` is done: ``publish`` shows it (None: it is not shown)."""
        with self._lock:
            self._done[order] = publish
            while self._next in self._done:
                action = self._done.pop(self._next)
                self._next += 1
                if action is not None:
                    action()


# Pillow releases the GIL while it decodes: two decoders use both cores of a small machine,
# which a 1920x1080 stream shown at 1280x720 needs (issue 11: >= 2x headroom).
DECODER_THREADS = 2
HALF_DECODE_PIXELS = 1600 * 900  # frames from this size on may be decoded at 1/2 (see below)


def warm_up_decoder() -> None:
    """Load Pillow and its JPEG decoder now (a first decode takes a good 100 ms on a busy
    machine), so the first frames of a stream do not queue behind it and get skipped."""
    from PIL import Image

    sample = io.BytesIO()
    Image.new("RGB", (16, 16)).save(sample, "JPEG")
    decode_for_display(sample.getvalue(), (8, 8))


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
    if request is not None and width * height >= HALF_DECODE_PIXELS and \
            2 * width >= 3 * request[0] and 2 * height >= 3 * request[1]:
        # A large frame shown at 2/3 of its size or less: decoding at 1/2 and enlarging
        # costs half of decoding whole and shrinking (a 1920x1080 frame in a 1280x720
        # window: 14 ms against 27), which keeps up with 30 fps on two cores with Tk.
        request = (-(-width // 2), -(-height // 2))
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
