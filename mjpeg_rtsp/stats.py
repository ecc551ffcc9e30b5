"""Receiver statistics for one RTP source (RFC 3550 sections 6.4 and appendix A).

Theory of operation
-------------------
:class:`ReceiverStats` is fed every RTP packet received (``on_packet``) and every frame
shown (``on_frame``), each with the time the caller read from its own clock; it reads no
clock itself.

* **Sequence tracking** follows RFC 3550 appendix A.1 (:class:`~mjpeg_rtsp.rtp.
  SequenceTracker`, shared with the jitter buffer): ``base_seq``, ``max_seq`` and
  ``cycles`` (a multiple of 65536, counted when the sequence number wraps forward) give the
  extended highest sequence number. A packet up to ``MAX_DROPOUT`` ahead of ``max_seq``
  advances it; one more than ``MAX_MISORDER`` behind (or ``MAX_DROPOUT`` or more ahead) is a
  jump: it is ignored unless the next packet follows it, in which case the source is taken
  to have restarted and the statistics start over (``init_seq``). Anything else behind
  ``max_seq`` is a duplicate or reordered packet and only counts as received. The probation
  of new sources (``MIN_SEQUENTIAL``) is left out: the first packet starts the source.
* **Loss** (appendix A.3): ``expected = extended_max - base_seq + 1`` and
  ``lost = expected - received``, negative when duplicates outnumber losses. The report
  block's fraction lost covers the interval since the previous report block.
* **Interarrival jitter** (section 6.4.1, appendix A.8): for consecutive packets ``i, j``
  ``D = (Rj - Ri) - (Sj - Si)`` in timestamp units, with ``R = arrival * clock_rate`` and the
  timestamp difference taken modulo 2**32; ``J += (|D| - J) / 16``. Kept as a float and
  truncated to an int in the report block.
* **Latency** (:class:`LatencyStats`): end-to-end latencies of shown frames, in seconds as
  the controller computes them from RTCP sender reports; summarised as the median and the
  95th percentile (nearest rank) in milliseconds, over the last
  :data:`RECENT_LATENCY_FRAMES` frames (the status bar) or the whole run (at most the last
  :data:`LATENCY_SAMPLES`, so a long run's memory stays bounded; ``frames`` counts them all).
* **JSON**: :func:`rounded_summary` rounds the headless player's summary for people.
* **Rates**: payload bytes and displayed frames are kept for the last ``window`` seconds
  (a half-open interval ``(now - window, now]``) and divided by ``window``, so the figures
  ramp up during the first window after the stream starts.
"""

from __future__ import annotations

import math
import statistics
from collections import deque

from .rtcp import (
    CUMULATIVE_LOST_MAX,
    CUMULATIVE_LOST_MIN,
    ReportBlock,
    dlsr_from_seconds,
    ntp_middle32,
)
from .rtp import JPEG_CLOCK_RATE, SequenceTracker, SeqVerdict, ts_diff

__all__ = ["LATENCY_SAMPLES", "RECENT_LATENCY_FRAMES", "LatencyStats", "ReceiverStats",
           "rounded_summary"]

#: Frames in the running latency figure (the status bar): about a second of video.
RECENT_LATENCY_FRAMES = 30
#: Latencies kept for the whole-run figures: 2.4 hours at 30 fps, about 8 MB.
LATENCY_SAMPLES = 1 << 18


class LatencyStats:
    """End-to-end latencies of shown frames (seconds in, milliseconds out)."""

    def __init__(self) -> None:
        self.frames = 0  # every latency added
        self._recent: deque[float] = deque(maxlen=RECENT_LATENCY_FRAMES)
        self._run: deque[float] = deque(maxlen=LATENCY_SAMPLES)

    def add(self, seconds: float) -> None:
        self.frames += 1
        self._recent.append(seconds)
        self._run.append(seconds)

    def summary_ms(self, recent: bool = False) -> dict | None:
        """``{"median": ms, "p95": ms, "frames": n}`` over the recent frames or the run
        (``frames``: how many the figures cover, or with the run every one); None when
        there are none."""
        values = self._recent if recent else self._run
        if not values:
            return None
        ordered = sorted(values)
        p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]  # nearest rank
        return {
            "median": statistics.median(ordered) * 1000.0,
            "p95": p95 * 1000.0,
            "frames": len(ordered) if recent else self.frames,
        }


def rounded_summary(summary: dict) -> dict:
    """Numbers a person can read: milliseconds to 0.01, rates and percentages to 0.1,
    seconds to 0.01; counts stay exact. The numbers inside an object take its key's rule
    (``latency_ms``'s median and p95 are milliseconds)."""
    result = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            value = {inner: _rounded(key, number) for inner, number in value.items()}
        else:
            value = _rounded(key, value)
        result[key] = value
    return result


def _rounded(key: str, value: object) -> object:
    if not isinstance(value, float):
        return value
    if key.endswith("_ms"):
        return round(value, 2)
    if key in ("fps", "kbps") or key.endswith("_percent"):
        return round(value, 1)
    return round(value, 2)  # seconds (elapsed) and anything else fractional


class ReceiverStats:
    """RFC 3550 reception statistics for one source; times are float seconds passed in."""

    def __init__(self, clock_rate: int = JPEG_CLOCK_RATE, window: float = 2.0) -> None:
        if clock_rate <= 0:
            raise ValueError(f"clock rate {clock_rate} must be positive")
        if window <= 0:
            raise ValueError(f"window {window} must be positive")
        self.clock_rate = clock_rate
        self.window = window
        self.packets_received = 0
        self.frames_displayed = 0
        self.last_frame_size = 0
        self._seqs = SequenceTracker()
        self._base_seq = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._jitter = 0.0
        self._last_arrival: float | None = None
        self._last_timestamp = 0
        self._bytes: deque[tuple[float, int]] = deque()
        self._bytes_total = 0
        self._frames: deque[float] = deque()
        # Until a whole window has passed, rates are over the time actually observed.
        self._first_packet: float | None = None
        self._first_frame: float | None = None
        self._latest_packet = self._latest_frame = 0.0
        self.octets_received = 0

    # -- input -----------------------------------------------------------------------------

    def on_packet(self, seq: int, timestamp: int, arrival: float, size: int) -> None:
        """Account one received RTP packet (RFC 3550 appendix A.1 ``update_seq`` and A.8).

        ``size`` is the payload size in bytes (for the bit rate).
        """
        verdict, _ = self._seqs.update(seq)
        if verdict is SeqVerdict.JUMP:
            return  # a very large jump: wait for confirmation
        if verdict in (SeqVerdict.FIRST, SeqVerdict.RESTART):
            self._init_seq(seq)  # the first packet, or two sequential ones after a jump
        self.packets_received += 1
        self._update_jitter(timestamp, arrival)
        self._bytes.append((arrival, size))
        self._bytes_total += size
        self.octets_received += size
        if self._first_packet is None:
            self._first_packet = arrival
        self._latest_packet = arrival
        self._prune(arrival)

    def on_frame(self, size: int, now: float) -> None:
        """Account one displayed frame of ``size`` bytes (for the frame rate)."""
        self.frames_displayed += 1
        self.last_frame_size = size
        self._frames.append(now)
        if self._first_frame is None:
            self._first_frame = now
        self._latest_frame = now
        self._prune(now)

    # -- RFC 3550 figures ------------------------------------------------------------------

    @property
    def extended_max(self) -> int:
        """Extended highest sequence number received (``cycles + max_seq``, A.1)."""
        highest = self._seqs.extended_max
        return 0 if highest is None else highest

    @property
    def expected(self) -> int:
        """Packets expected: ``extended_max - base_seq + 1`` (A.3); 0 before any packet."""
        if self._seqs.extended_max is None:
            return 0
        return self.extended_max - self._base_seq + 1

    @property
    def cumulative_lost(self) -> int:
        """``expected - received``, signed (negative when duplicates outnumber losses, A.3)."""
        return self.expected - self.packets_received

    @property
    def packets_lost(self) -> int:
        """Packets lost for display: :attr:`cumulative_lost` floored at 0."""
        return max(0, self.cumulative_lost)

    @property
    def loss_percent(self) -> float:
        """:attr:`packets_lost` as a percentage of :attr:`expected` (0.0 when nothing is)."""
        expected = self.expected
        return 100.0 * self.packets_lost / expected if expected > 0 else 0.0

    @property
    def jitter(self) -> float:
        """Interarrival jitter estimate in timestamp units (section 6.4.1, A.8)."""
        return self._jitter

    @property
    def jitter_ms(self) -> float:
        """Interarrival jitter in milliseconds."""
        return self._jitter / self.clock_rate * 1000.0

    def bitrate_kbps(self, now: float) -> float:
        """Payload bit rate over the last ``window`` seconds, in kbit/s."""
        self._prune(now)
        return self._bytes_total * 8 / self._span(self._first_packet, now) / 1000.0

    def fps(self, now: float) -> float:
        """Frames displayed per second over the last ``window`` seconds."""
        self._prune(now)
        return len(self._frames) / self._span(self._first_frame, now)

    def _span(self, first: float | None, now: float) -> float:
        """The averaging time: the window, or less while the stream is younger than it."""
        if first is None:
            return self.window
        return min(self.window, max(now - first, 0.5))

    def report_block(
        self,
        ssrc: int,
        now: float,
        last_sr_ntp: int | None,
        last_sr_arrival: float | None,
    ) -> ReportBlock:
        """Build the reception report block for ``ssrc`` (RFC 3550 section 6.4.1, A.3).

        Advances the report interval: the fraction lost covers the packets since the previous
        call. ``last_sr_ntp`` is the 64-bit NTP timestamp of the last SR from that source and
        ``last_sr_arrival`` the local time it arrived; LSR is its middle 32 bits and DLSR the
        delay since its arrival in units of 1/65536 s, both 0 when no SR has been received.
        """
        expected = self.expected
        expected_interval = expected - self._expected_prior
        self._expected_prior = expected
        received_interval = self.packets_received - self._received_prior
        self._received_prior = self.packets_received
        lost_interval = expected_interval - received_interval
        if expected_interval <= 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        cumulative = min(max(self.cumulative_lost, CUMULATIVE_LOST_MIN), CUMULATIVE_LOST_MAX)
        lsr = ntp_middle32(last_sr_ntp) if last_sr_ntp is not None else 0
        dlsr = 0
        if last_sr_ntp is not None and last_sr_arrival is not None:
            dlsr = dlsr_from_seconds(now - last_sr_arrival)
        return ReportBlock(
            ssrc=ssrc,
            fraction_lost=fraction,
            cumulative_lost=cumulative,
            highest_seq=self.extended_max & 0xFFFFFFFF,
            jitter=min(int(self._jitter), 0xFFFFFFFF),
            lsr=lsr,
            dlsr=dlsr,
        )

    def average_kbps(self) -> float:
        """Payload bit rate from the first packet to the last."""
        if self._first_packet is None or self._latest_packet <= self._first_packet:
            return 0.0
        return self.octets_received * 8 / (self._latest_packet - self._first_packet) / 1000.0

    def average_fps(self) -> float:
        """Frame rate from the first displayed frame to the last."""
        if self._first_frame is None or self._latest_frame <= self._first_frame:
            return 0.0
        return (self.frames_displayed - 1) / (self._latest_frame - self._first_frame)

    def snapshot(self, now: float, whole_run: bool = False) -> dict[str, float]:
        """Figures for display: packets, packets_lost, loss_percent, jitter_ms, kbps, fps.

        Rates are over the last ``window`` seconds, or with ``whole_run`` over everything
        received so far (a summary at the end of a run).
        """
        return {
            "packets": self.packets_received,
            "packets_lost": self.packets_lost,
            "loss_percent": self.loss_percent,
            "jitter_ms": self.jitter_ms,
            "kbps": self.average_kbps() if whole_run else self.bitrate_kbps(now),
            "fps": self.average_fps() if whole_run else self.fps(now),
        }

    # -- internals -------------------------------------------------------------------------

    def _init_seq(self, seq: int) -> None:
        """RFC 3550 appendix A.1 ``init_seq``: (re)start the counts at ``seq`` (the tracker has
        restarted its numbering there)."""
        self._base_seq = seq
        self.packets_received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._last_arrival = None  # the timeline restarted: no transit to compare with

    def _update_jitter(self, timestamp: int, arrival: float) -> None:
        """RFC 3550 appendix A.8; the first packet only records its transit."""
        if self._last_arrival is not None:
            d = (arrival - self._last_arrival) * self.clock_rate - ts_diff(
                timestamp, self._last_timestamp
            )
            self._jitter += (abs(d) - self._jitter) / 16
        self._last_arrival = arrival
        self._last_timestamp = timestamp

    def _prune(self, now: float) -> None:
        horizon = now - self.window
        while self._bytes and self._bytes[0][0] <= horizon:
            self._bytes_total -= self._bytes.popleft()[1]
        while self._frames and self._frames[0] <= horizon:
            self._frames.popleft()
