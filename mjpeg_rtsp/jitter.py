"""Receive-side jitter buffer: reordering, frame assembly, loss detection and playout.

Theory of operation
-------------------
RTP packets (RFC 3550 section 5.1) arrive out of order, duplicated, late or not at all. The
:class:`JitterBuffer` holds them for ``latency`` seconds so that stragglers can fall into
place, groups them into frames and hands each frame out at its *playout time* on the
sender's RTP clock. Everything is pure: the caller passes every arrival time and the current
time as float seconds; there are no sockets, threads or clocks here.

* **Extended numbers.** 16-bit sequence numbers follow RFC 3550 appendix A.1, the rule
  the statistics use too (:class:`~mjpeg_rtsp.rtp.SequenceTracker`): a gap of fewer than
  ``MAX_DROPOUT`` is loss, up to ``MAX_MISORDER`` behind is reordering or a duplicate, and
  anything else is a jump that is held back until the next packet follows it: then the
  sender restarted, and the pair is renumbered to continue right after the highest
  sequence number (a restart is not counted as loss); otherwise the jump is ignored.
  32-bit timestamps are unwrapped to the extension nearest the highest one seen
  (:class:`~mjpeg_rtsp.rtp.SequenceUnwrapper`).
* **Frames.** Packets of one frame share an RTP timestamp and the last one carries the
  marker bit (RFC 3550 section 5.1; RFC 2435 section 3). A frame is *complete* when its
  marker packet is present, every sequence number from its first packet to the marker is
  present, and its first packet directly follows the previous frame's marker packet. When the
  previous frame's marker is unknown (lost) that last condition cannot be verified, and the
  frame is dropped unless the optional ``frame_start`` predicate (for example
  :func:`starts_jpeg_frame`) recognises its first packet as a frame start. The first frame
  after construction or :meth:`JitterBuffer.reset` is accepted without that check (the
  JPEG depacketizer verifies fragment offset 0 anyway), except in the low-latency mode
  with a ``frame_start`` predicate, where its first packet must be recognised.
* **Playout.** The transit time of a packet is ``arrival - ext_timestamp / clock_rate``; the
  buffer keeps the smallest transit seen (a packet that arrives earlier than predicted moves
  the base earlier) and a frame is due at ``base + (ext_ts - base_ts) / clock_rate +
  latency``. A packet whose frame would be due more than ``max(1, 4 * latency)`` seconds
  away from its arrival means the timeline jumped (sender paused, seeked or restarted): the
  timing is re-based on that packet, starting a new *epoch*; frames already pending keep the
  playout time they had.
* **Release.** :meth:`JitterBuffer.pop` takes the pending frames in sequence order, finds the
  last one that is due and retires it together with every frame before it: complete frames
  are returned, incomplete ones are dropped and counted in ``frames_lost``; a partial frame
  is never returned.
* **Whole lost frames.** When sequence numbers are missing between the previously retired
  frame and the next one, some frames may have vanished entirely. Their number is estimated
  from the timestamp gap: ``round(ts_gap / interval) - 1``, where ``interval`` is the median
  of the last 16 timestamp steps between frames known to be adjacent (the second began right
  after the first's marker packet). The estimate is at least 1 when the gap is known to hold
  only whole frames (the earlier frame ended with its marker and the later one provably
  starts at its first present packet), at least 0 otherwise, and never more than the number
  of missing sequence numbers. It is exact for a constant frame rate once one adjacent pair
  has been seen, and 0 before that. Gaps across an epoch change are not estimated.
* **Low latency (``latency=0``).** No frame is held for reordering: a frame is due the
  moment it is complete (its ``arrival``, the time of its last packet), so the caller's next
  :meth:`JitterBuffer.pop` releases it, and retires every frame before it in sequence order
  (an incomplete one is then dropped and counted lost, even if its straggler was about to
  arrive). Packets reordered *within* a frame still reassemble: completeness does not depend
  on arrival order. An incomplete frame with nothing complete behind it is given up
  :data:`INCOMPLETE_WAIT` seconds after its latest packet (a lost last packet must not stall
  the end of a stream). The RTP clock plays no part in release, so frames come out at the
  pace they arrive.
* **One frame per packet.** The course's textbook servers send a whole JPEG per datagram,
  often without the marker bit and with timestamps in seconds or arbitrary units. With
  ``frame_per_packet=True`` every packet is a frame, due at ``arrival + latency``, released
  in sequence order, and every missing sequence number counts as one lost frame.
* **Bounded memory.** At most ``max_packets`` packets and ``max_bytes`` payload bytes are
  held; beyond either the oldest pending frames are dropped (counted lost). Duplicate
  detection remembers the last ``max_packets`` sequence numbers.

Aiortc's ``jitterbuffer.py`` and RFC 3550 appendix A were read for ideas; this is our own
design (timestamp-driven playout, explicit completeness rules, loss accounting).
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .limits import MAX_BUFFERED_BYTES
from .rtp import (
    JPEG_CLOCK_RATE,
    RtpPacket,
    SequenceTracker,
    SequenceUnwrapper,
    SeqVerdict,
)

__all__ = [
    "INCOMPLETE_WAIT",
    "JitterBuffer",
    "MediaFrame",
    "starts_jpeg_frame",
]

_INTERVAL_SAMPLES = 16
_RECENT_TIMESTAMPS = 16
#: Low-latency mode: how long an incomplete frame waits for its missing packets (seconds
#: after its latest one) when no later frame is complete.
INCOMPLETE_WAIT = 0.5


def starts_jpeg_frame(packet: RtpPacket) -> bool:
    """True when ``packet`` carries fragment offset 0 of an RFC 2435 frame (section 3.1.2).

    Pass as ``JitterBuffer(frame_start=starts_jpeg_frame)`` so that a frame following a lost
    marker packet or a wholly lost frame can still be recognised as complete.
    """
    payload = packet.payload
    return len(payload) >= 8 and payload[1:4] == b"\x00\x00\x00"


@dataclass
class MediaFrame:
    """One complete frame released by :class:`JitterBuffer`."""

    timestamp: int  #: 32-bit RTP timestamp of the frame
    payloads: list[bytes]  #: packet payloads in sequence order, complete, no gaps
    first_seq: int  #: extended sequence number of the first packet
    last_seq: int  #: extended sequence number of the last (marker) packet
    arrival: float  #: arrival time of the frame's last-arriving packet
    playout: float  #: when it was due


@dataclass
class _Pending:
    """A frame being collected: packets by extended sequence number."""

    timestamp: int
    ext_ts: int
    epoch: int
    playout: float | None  # fixed playout (frame-per-packet mode or an earlier epoch)
    first: int
    last: int
    arrival: float
    packets: dict[int, bytes] = field(default_factory=dict)
    starts: set[int] = field(default_factory=set)  # seqs that the frame_start hook accepted
    marker: int | None = None


@dataclass(frozen=True)
class _Retired:
    """What is remembered of the previously retired frame."""

    ext_ts: int
    last: int
    marker: int | None
    epoch: int


class JitterBuffer:
    """Reorder RTP packets, assemble frames and release them on the RTP clock.

    See the module docstring for the rules. ``latency`` is the playout delay in seconds,
    ``clock_rate`` the RTP clock (90 kHz for JPEG, RFC 2435 section 3 / RFC 3551 section 5),
    0 selects the low-latency mode (each frame released once complete, module docstring),
    ``frame_per_packet`` selects the one-JPEG-per-datagram mode, ``max_packets`` and
    ``max_bytes`` bound the memory, and ``frame_start`` optionally recognises the first
    packet of a frame.

    Counters (ints, never reset): ``frames_out``, ``frames_lost``, ``packets_received``,
    ``packets_duplicate``, ``packets_late``, ``packets_reordered``.
    """

    def __init__(
        self,
        latency: float,
        clock_rate: int = JPEG_CLOCK_RATE,
        frame_per_packet: bool = False,
        max_packets: int = 4096,
        frame_start: Callable[[RtpPacket], bool] | None = None,
        max_bytes: int = MAX_BUFFERED_BYTES,
    ) -> None:
        if latency < 0:
            raise ValueError(f"latency {latency} must not be negative")
        if clock_rate <= 0:
            raise ValueError(f"clock rate {clock_rate} must be positive")
        if max_packets < 1:
            raise ValueError(f"max_packets {max_packets} must be at least 1")
        if max_bytes < 1:
            raise ValueError(f"max_bytes {max_bytes} must be at least 1")
        self.latency = latency
        self.clock_rate = clock_rate
        self.frame_per_packet = frame_per_packet
        self.max_packets = max_packets
        self.max_bytes = max_bytes
        self.frame_start = frame_start
        self._max_skew = max(1.0, 4 * latency)
        self.frames_out = 0
        self.frames_lost = 0
        self.packets_received = 0
        self.packets_duplicate = 0
        self.packets_late = 0
        self.packets_reordered = 0
        self._epoch = 0
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()
        self._retired_ts: set[int] = set()
        self._retired_ts_order: deque[int] = deque()
        self.reset()

    # -- public API ----------------------------------------------------------------------

    def reset(self) -> None:
        """Start afresh for a new PLAY (RFC 2326 section 10.5): forget pending frames, timing
        and sequence state; keep the counters. Pending frames are discarded uncounted."""
        self._seqs = SequenceTracker()
        self._timestamps = SequenceUnwrapper(32)
        self._seq_offset = 0
        self._highest: int | None = None
        self._candidate: tuple[RtpPacket, float] | None = None
        self._pending: dict[int, _Pending] = {}
        self._count = 0
        self._bytes = 0
        self._base: float | None = None
        self._base_ts = 0
        self._epoch += 1
        self._prev: _Retired | None = None
        self._done: int | None = None
        self._intervals: deque[int] = deque(maxlen=_INTERVAL_SAMPLES)
        self._seen.clear()
        self._seen_order.clear()
        self._retired_ts.clear()
        self._retired_ts_order.clear()

    def push(self, packet: RtpPacket, arrival: float) -> None:
        """Add one received packet that arrived at ``arrival`` seconds.

        Sequence numbers follow RFC 3550 appendix A.1 (:class:`~mjpeg_rtsp.rtp.
        SequenceTracker`): a very large jump is held back; if the next packet follows it,
        both are accepted as a restarted sequence, renumbered to continue right after the
        highest one (a restart is not loss); otherwise it is ignored.
        """
        self.packets_received += 1
        verdict, extended = self._seqs.update(packet.sequence_number)
        if verdict is SeqVerdict.JUMP:
            self._candidate = (packet, arrival)
            return
        held, self._candidate = self._candidate, None
        if verdict is SeqVerdict.RESTART:
            highest = self._highest if self._highest is not None else extended - 1
            self._seq_offset = highest + 2 - extended
            if held is not None:
                self._accept(*held, extended - 1 + self._seq_offset)
        self._accept(packet, arrival, extended + self._seq_offset)

    def pop(self, now: float) -> list[MediaFrame]:
        """Retire every frame due at ``now`` (and any frame before it in sequence order).

        Returns the complete ones in order; incomplete ones are dropped and counted in
        ``frames_lost`` together with the estimated number of wholly lost frames.
        """
        if not self._pending:
            return []
        frames = sorted(self._pending.values(), key=lambda f: f.first)
        last_due = -1
        for index, frame in enumerate(frames):
            if self._due(frame) <= now:
                last_due = index
        released = []
        for frame in frames[: last_due + 1]:
            media = self._retire(frame, release=True)
            if media is not None:
                released.append(media)
        return released

    def next_due(self) -> float | None:
        """The earliest playout time among pending frames (None when nothing is pending)."""
        if not self._pending:
            return None
        return min(self._due(frame) for frame in self._pending.values())

    @property
    def pending_packets(self) -> int:
        """Number of packets currently held."""
        return self._count

    @property
    def pending_bytes(self) -> int:
        """Payload bytes currently held."""
        return self._bytes

    # -- internals -----------------------------------------------------------------------

    def _accept(self, packet: RtpPacket, arrival: float, ext_seq: int) -> None:
        if ext_seq in self._seen:
            self.packets_duplicate += 1
            return
        self._remember_seq(ext_seq)
        reordered = self._highest is not None and ext_seq < self._highest
        if reordered:
            self.packets_reordered += 1
        else:
            self._highest = ext_seq
        if (self._done is not None and ext_seq <= self._done) or (
            not self.frame_per_packet and packet.timestamp in self._retired_ts
        ):
            self.packets_late += 1
            return
        if self.frame_per_packet:
            key = ext_seq
            frame = _Pending(
                packet.timestamp, 0, self._epoch, arrival + self.latency, ext_seq, ext_seq, arrival
            )
            self._pending[key] = frame
        else:
            ext_ts = self._timestamps.unwrap(packet.timestamp)
            self._update_timing(ext_ts, arrival, reordered)
            frame = self._pending.get(packet.timestamp)
            if frame is None:
                frame = _Pending(
                    packet.timestamp, ext_ts, self._epoch, None, ext_seq, ext_seq, arrival
                )
                self._pending[packet.timestamp] = frame
            frame.first = min(frame.first, ext_seq)
            frame.last = max(frame.last, ext_seq)
            frame.arrival = max(frame.arrival, arrival)
            if packet.marker:
                frame.marker = ext_seq
        frame.packets[ext_seq] = packet.payload
        if self.frame_start is not None and self.frame_start(packet):
            frame.starts.add(ext_seq)
        self._count += 1
        self._bytes += len(packet.payload)
        while self._count > self.max_packets or self._bytes > self.max_bytes:
            oldest = min(self._pending.values(), key=lambda f: f.first)
            self._retire(oldest, release=False)

    def _remember_seq(self, ext_seq: int) -> None:
        self._seen.add(ext_seq)
        self._seen_order.append(ext_seq)
        if len(self._seen_order) > self.max_packets:
            self._seen.discard(self._seen_order.popleft())

    def _update_timing(self, ext_ts: int, arrival: float, reordered: bool) -> None:
        """Track the smallest transit time; re-base on a timeline jump (module docstring)."""
        if self._base is None:
            self._base, self._base_ts = arrival, ext_ts
            return
        predicted = self._base + (ext_ts - self._base_ts) / self.clock_rate
        if abs(predicted + self.latency - arrival) > self._max_skew:
            if reordered:
                return  # a straggler from before a jump must not move the timeline back
            for frame in self._pending.values():
                if frame.playout is None:
                    frame.playout = self._due(frame)
            self._epoch += 1
            self._base, self._base_ts = arrival, ext_ts
        elif arrival < predicted:
            self._base, self._base_ts = arrival, ext_ts

    def _due(self, frame: _Pending) -> float:
        if self.latency == 0 and not self.frame_per_packet:
            # Low latency: due once complete, whatever the RTP clock says (module docstring).
            if self._complete(frame):
                return frame.arrival
            return frame.arrival + INCOMPLETE_WAIT
        if frame.playout is not None:
            return frame.playout
        if self._base is None:  # cannot happen: timing starts with the first packet
            return frame.arrival + self.latency
        return self._base + (frame.ext_ts - self._base_ts) / self.clock_rate + self.latency

    def _complete(self, frame: _Pending) -> bool:
        if self.frame_per_packet:
            return True
        if frame.marker is None:
            return False
        if sum(1 for seq in frame.packets if seq <= frame.marker) != frame.marker - frame.first + 1:
            return False
        prev = self._prev
        # With no hold (latency 0) a first frame whose first packets are still on their
        # way would look complete: there the frame_start hook must vouch for its start.
        trust_first = self.latency > 0 or self.frame_start is None
        return (
            (prev is None and trust_first)
            or frame.first in frame.starts
            or (prev is not None and prev.marker is not None
                and frame.first == prev.marker + 1)
        )

    def _whole_frames_lost(self, frame: _Pending) -> int:
        prev = self._prev
        if prev is None:
            return 0
        missing = frame.first - prev.last - 1
        if missing <= 0:
            return 0
        if self.frame_per_packet:
            return missing
        unclaimed = prev.marker is not None and frame.first in frame.starts
        estimate = 0
        if prev.epoch == frame.epoch and self._intervals:
            interval = statistics.median_low(self._intervals)
            estimate = round((frame.ext_ts - prev.ext_ts) / interval) - 1
        return min(missing, max(1 if unclaimed else 0, estimate))

    def _retire(self, frame: _Pending, release: bool) -> MediaFrame | None:
        """Remove ``frame`` from the buffer; return it if it is complete and ``release``."""
        self.frames_lost += self._whole_frames_lost(frame)
        complete = self._complete(frame)
        prev = self._prev
        if (
            not self.frame_per_packet
            and prev is not None
            and prev.marker is not None
            and frame.first == prev.marker + 1
            and prev.epoch == frame.epoch
            and frame.ext_ts > prev.ext_ts
        ):
            self._intervals.append(frame.ext_ts - prev.ext_ts)
        playout = self._due(frame)
        del self._pending[frame.first if self.frame_per_packet else frame.timestamp]
        self._count -= len(frame.packets)
        self._bytes -= sum(len(payload) for payload in frame.packets.values())
        last = frame.marker if frame.marker is not None else frame.last
        self._prev = _Retired(frame.ext_ts, frame.last, frame.marker, frame.epoch)
        self._done = frame.last if self._done is None else max(self._done, frame.last)
        if not self.frame_per_packet:
            self._retired_ts.add(frame.timestamp)
            self._retired_ts_order.append(frame.timestamp)
            if len(self._retired_ts_order) > _RECENT_TIMESTAMPS:
                self._retired_ts.discard(self._retired_ts_order.popleft())
        if not (complete and release):
            self.frames_lost += 1
            return None
        self.frames_out += 1
        payloads = [frame.packets[seq] for seq in range(frame.first, last + 1)]
        return MediaFrame(frame.timestamp, payloads, frame.first, last, frame.arrival, playout)
