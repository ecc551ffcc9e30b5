"""Live channels: frames that arrive (a pipe, a command, a generator, the screen, a publisher)
instead of being read from a file, fanned out to whoever watches.

Theory of operation: a :class:`LiveChannel` is the live kind of media source. A producer
(``sources.py``) or a publisher's stream (``ingest.py``) pushes complete JPEGs into it; the
channel checks each one once (re-encoding what RFC 2435 cannot carry, as the file path does),
numbers it, stamps it on the channel's own timeline (capture time, never going backwards) and
hands it to its listener, the streamer's fan-out, which sends that one frame to every playing
viewer at once. Payloads are made once per frame and shared by all viewers; a publisher's own
RFC 2435 payloads are passed on as they came when they fit. Nothing here waits or keeps a
thread: the producer's thread carries the frame through, sinks never block, so a slow viewer
loses frames and never slows the source.

:class:`LivePaths` maps request paths to channels: those declared with ``--live`` (for the
server's lifetime) and those publishers hold (from ANNOUNCE to the end of their session).
"""

from __future__ import annotations

import logging
from collections import deque
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Protocol

from . import rfc2435
from .jpeg import JpegError, JpegInfo, scan_jpeg
from .limits import MAX_FILE_FRAME_BYTES
from .media import MAX_DATAGRAM_JPEG
from .rtp import RTP_HEADER_SIZE

log = logging.getLogger(__name__)

# The channel's timeline never goes backwards, even if a producer's clock does.
MIN_FRAME_STEP = 1e-4
# A publisher's payloads go out as they came (re-packetizing nothing) when none is larger
# than this: what fits a 1500-byte Ethernet MTU, as ffmpeg's default 1472-byte packets do.
PUBLISHER_PAYLOAD_LIMIT = 1500 - 20 - 8 - RTP_HEADER_SIZE
MAX_LIVE_PATHS = 64  # publisher paths at once (--live paths come on top)
RATE_WINDOW_FRAMES = 64  # the measured rate is over this many frames


class FrameSink(Protocol):
    """What a live producer feeds: complete JPEGs and its on-air/off-air changes."""

    def push_jpeg(self, jpeg: bytes, capture_time: float) -> None: ...

    def source_started(self, description: str) -> None: ...

    def source_ended(self, reason: str) -> None: ...


class LiveListener(Protocol):
    """Who hears of a channel's frames (the streamer's fan-out)."""

    def live_frame(self, channel: LiveChannel, frame: LiveFrame) -> None: ...

    def live_ended(self, channel: LiveChannel, reason: str) -> None: ...


@dataclass(eq=False)
class LiveFrame:
    """One frame of a channel, checked once and shared by every viewer."""

    number: int
    jpeg: bytes  # as it came (what the textbook client and recordings get)
    info: JpegInfo  # of the RFC 2435 form (``carried``)
    time: float  # seconds on the channel's timeline (capture time, strictly increasing)
    capture_time: float  # wall clock, for RTCP sender reports
    carried: bytes | None  # the JPEG RFC 2435 carries (re-encoded if need be); None: it cannot
    publisher_payloads: tuple[bytes, ...] = ()  # a publisher's own, passed on when they can be
    _payloads: dict[int, tuple[bytes, ...]] = field(default_factory=dict, repr=False)

    @property
    def width(self) -> int:
        return self.info.width

    @property
    def height(self) -> int:
        return self.info.height

    def rtp_payloads(self, max_payload: int) -> tuple[bytes, ...]:
        """RFC 2435 payloads of this frame (made once per payload size); empty when it cannot
        be carried."""
        cached = self._payloads.get(max_payload)
        if cached is not None:
            return cached
        limit = max(max_payload, PUBLISHER_PAYLOAD_LIMIT)
        if self.publisher_payloads and max(map(len, self.publisher_payloads)) <= limit:
            payloads = self.publisher_payloads
        elif self.carried is None:
            payloads = ()
        else:
            try:
                payloads = tuple(rfc2435.packetize(self.carried, self.info, max_payload))
            except ValueError as exc:  # e.g. scan data beyond the 24-bit fragment offset
                log.warning("live frame %d cannot be sent as RFC 2435: %s", self.number, exc)
                payloads = ()
        self._payloads[max_payload] = payloads
        return payloads

    def raw_payload(self) -> tuple[bytes, ...]:
        """The textbook's one whole JPEG; empty when it does not fit in one datagram."""
        return (self.jpeg,) if len(self.jpeg) <= MAX_DATAGRAM_JPEG else ()


def forwardable(payloads: tuple[bytes, ...]) -> bool:
    """Whether a publisher's RFC 2435 payloads can go to every player as they are: tables by
    Q (below 128) or both tables in band. ffmpeg's packetizer sends a single 64-byte table for
    a JPEG with one, which ffmpeg's own depacketizer refuses; those frames are packetized
    again from the rebuilt JPEG (which has both)."""
    try:
        header = rfc2435.parse_header(payloads[0])
    except (rfc2435.Rfc2435Error, IndexError):
        return False
    return header.q < 128 or (header.qt_length or 0) >= 128


class LiveChannel:
    """One live path: its latest frame, whether it is on air, and its counters.

    Frames come from one producer thread at a time; readers take ``latest`` (one reference,
    replaced whole) and never see a frame half made.
    """

    live = True

    def __init__(self, name: str, kind: str, listener: LiveListener | None = None,
                 declared_fps: float | None = None) -> None:
        self.name = name
        self.kind = kind  # "live" (--live) or "publish"
        self.listener = listener
        self.declared_fps = declared_fps
        self.latest: LiveFrame | None = None
        self.on_air = False
        self.status = "waiting for the first frame"
        self.frames_in = 0
        self.frames_invalid = 0
        self.frames_reencoded = 0
        self.frames_uncarried = 0
        self._epoch: float | None = None
        # Recent frames' times, for the measured rate: frames over a window, not one step's
        # inverse, which a pipe's bursts (several frames read at once) would inflate.
        self._recent: deque[float] = deque(maxlen=RATE_WINDOW_FRAMES)
        self._last_time: float | None = None

    # --- the producer's side (FrameSink) ------------------------------------------------

    def source_started(self, description: str) -> None:
        self.status = f"starting: {description}"
        log.info("live %s: source started (%s)", self.name, description)

    def source_ended(self, reason: str) -> None:
        was_on_air = self.on_air
        self.on_air = False
        self.status = f"off air: {reason}"
        self._last_time = None
        self._recent.clear()
        log.info("live %s: off air (%s)", self.name, reason)
        if was_on_air and self.listener is not None:
            self.listener.live_ended(self, reason)

    def push_jpeg(self, jpeg: bytes, capture_time: float,
                  publisher_payloads: tuple[bytes, ...] = ()) -> LiveFrame | None:
        """Take one complete JPEG captured at ``capture_time`` (wall clock); None when it was
        refused (counted, and logged the first time and every hundredth)."""
        frame = self._check(jpeg, capture_time, publisher_payloads)
        if frame is None:
            return None
        self.latest = frame
        if not self.on_air:
            self.on_air = True
            self.status = "on air"
            log.info("live %s: on air, %dx%d", self.name, frame.width, frame.height)
        if self.listener is not None:
            self.listener.live_frame(self, frame)
        return frame

    def _check(self, jpeg: bytes, capture_time: float,
               publisher_payloads: tuple[bytes, ...]) -> LiveFrame | None:
        if publisher_payloads and not forwardable(publisher_payloads):
            publisher_payloads = ()  # packetized again from the rebuilt JPEG
        if len(jpeg) > MAX_FILE_FRAME_BYTES:
            return self._refuse(f"frame of {len(jpeg)} bytes exceeds {MAX_FILE_FRAME_BYTES}")
        try:
            info = scan_jpeg(jpeg)
        except JpegError as exc:
            return self._refuse(f"not a valid JPEG: {exc}")
        carried: bytes | None = jpeg
        if info.rfc2435_type is None and not publisher_payloads:
            from .transcode import make_rfc2435_compatible  # Pillow only where needed

            if not self.frames_reencoded:
                log.warning("live %s: RFC 2435 cannot carry its frames as they are (%s); "
                            "re-encoding them to baseline 4:2:0", self.name, info.incompatibility)
            try:
                carried = make_rfc2435_compatible(jpeg)
                info = scan_jpeg(carried)
                self.frames_reencoded += 1
            except JpegError as exc:
                carried = None
                self.frames_uncarried += 1
                if self.frames_uncarried % 100 == 1:
                    log.warning("live %s: frame cannot be sent to standard clients (%s); "
                                "%d such frames so far", self.name, exc, self.frames_uncarried)
        time = self._timeline(capture_time)
        frame = LiveFrame(self.frames_in, jpeg, info, time, capture_time, carried,
                          publisher_payloads)
        self.frames_in += 1
        return frame

    def _refuse(self, reason: str) -> None:
        self.frames_invalid += 1
        if self.frames_invalid % 100 == 1:
            log.warning("live %s: frame skipped: %s (%d skipped so far)", self.name, reason,
                        self.frames_invalid)
        return None

    def _timeline(self, capture_time: float) -> float:
        if self._epoch is None:
            self._epoch = capture_time
        time = capture_time - self._epoch
        if self._last_time is not None and time - self._last_time < MIN_FRAME_STEP:
            time = self._last_time + MIN_FRAME_STEP
        self._last_time = time
        self._recent.append(time)
        return time

    # --- what the service reads ----------------------------------------------------------

    @property
    def fps(self) -> float | None:
        """The declared rate, else the measured one (None before two frames)."""
        if self.declared_fps:
            return self.declared_fps
        recent = self._recent
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return None
        return (len(recent) - 1) / (recent[-1] - recent[0])

    @property
    def width(self) -> int:
        return self.latest.width if self.latest else 0

    @property
    def height(self) -> int:
        return self.latest.height if self.latest else 0

    def time_now(self, wallclock: float) -> float:
        """The channel's timeline at wall-clock time ``wallclock`` (for RTP-Info and BYE)."""
        frame = self.latest
        if frame is None:
            return 0.0
        return frame.time + max(0.0, wallclock - frame.capture_time)

    def stats(self) -> dict[str, object]:
        return {
            "name": self.name, "kind": self.kind, "on_air": self.on_air, "status": self.status,
            "frames_in": self.frames_in, "frames_invalid": self.frames_invalid,
            "frames_reencoded": self.frames_reencoded, "frames_uncarried": self.frames_uncarried,
            "width": self.width, "height": self.height,
            "fps": round(self.fps, 1) if self.fps else None,
        }


class LivePathError(Exception):
    """A path that cannot be published (taken, not allowed, too many)."""


class LivePaths:
    """Request paths of live channels: ``--live`` ones for good, publishers' while they hold
    them. Thread-safe with the lock its creator gives."""

    def __init__(self, listener: LiveListener | None = None,
                 lock: AbstractContextManager | None = None,
                 max_published: int = MAX_LIVE_PATHS) -> None:
        self.listener = listener
        self.max_published = max_published
        self._channels: dict[str, LiveChannel] = {}
        self._publishers: dict[str, object] = {}  # path -> who publishes it (a token)
        self._lock = lock if lock is not None else nullcontext()

    @staticmethod
    def normalise(path: str) -> str:
        return path.strip("/")

    def declare(self, name: str, declared_fps: float | None = None) -> LiveChannel:
        """A ``--live`` channel (at start-up)."""
        name = self.normalise(name)
        with self._lock:
            if name in self._channels:
                raise LivePathError(f"live path {name!r} is declared twice")
            channel = self._channels[name] = LiveChannel(name, "live", self.listener,
                                                         declared_fps)
            return channel

    def get(self, path: str) -> LiveChannel | None:
        with self._lock:
            return self._channels.get(self.normalise(path))

    def publish(self, path: str, publisher: object) -> LiveChannel:
        """A new channel at ``path`` held by ``publisher`` (a token compared with ==);
        LivePathError when the path is a ``--live`` one, is being published by another, or
        too many are."""
        name = self.normalise(path)
        with self._lock:
            existing = self._channels.get(name)
            if existing is not None and existing.kind == "live":
                raise LivePathError(f"{name!r} is a live source of the server's own")
            holder = self._publishers.get(name)
            if holder == publisher and existing is not None:
                return existing  # a second SETUP of the same publisher
            if holder is not None:
                raise LivePathError(f"{name!r} is being published by someone else")
            if len(self._publishers) >= self.max_published:
                raise LivePathError(f"{self.max_published} paths are being published already")
            channel = self._channels[name] = LiveChannel(name, "publish", self.listener)
            self._publishers[name] = publisher
            return channel

    def held_by(self, path: str, publisher: object) -> bool:
        with self._lock:
            return self._publishers.get(self.normalise(path)) == publisher

    def unpublish(self, channel: LiveChannel, reason: str) -> None:
        """The publisher of ``channel`` has gone: the path is free again."""
        with self._lock:
            if self._channels.get(channel.name) is not channel or channel.kind != "publish":
                return
            del self._channels[channel.name]
            self._publishers.pop(channel.name, None)
        channel.source_ended(reason)

    def channels(self) -> list[LiveChannel]:
        with self._lock:
            return list(self._channels.values())

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._channels)


__all__ = [
    "FrameSink", "LiveChannel", "LiveFrame", "LiveListener", "LivePathError", "LivePaths",
]
