"""A publisher's RTP/JPEG stream taken in (RFC 2326 RECORD, RFC 3550, RFC 2435): sans-I/O.

Theory of operation
-------------------
After ANNOUNCE (:func:`mjpeg_rtsp.sdp.parse_announce`), SETUP with ``mode=record`` and
RECORD, a publisher (ffmpeg ``-f rtsp``, GStreamer ``rtspclientsink``) sends RTP/JPEG to the
server's RTP port or interleaved on its RTSP connection, and RTCP sender reports beside it.
The driver hands each RTP packet to :meth:`RtpJpegIngest.receive_rtp` and each RTCP packet to
:meth:`RtpJpegIngest.receive_rtcp`, with the wall-clock time it read when the bytes arrived.

* **Filtering**: a packet that is not RTP version 2 (or is malformed) is counted as bad; one
  of another payload type than the announced one is counted and ignored; the first SSRC of
  the announced type is latched and every other one counted and ignored (one publisher, one
  source).
* **Order**: sequence numbers go through :class:`~mjpeg_rtsp.rtp.SequenceTracker`
  (RFC 3550 A.1). There is no reordering: a packet behind the highest one (duplicate or
  late) is counted and dropped, so a reordered frame is dropped as a frame with a gap would
  be; a large jump is ignored until the next packet confirms a restart.
* **Frames**: payloads go, in order, to the one RFC 2435 depacketizer
  (:class:`~mjpeg_rtsp.rfc2435.JpegDepacketizer`), which drops and counts any frame with a
  missing fragment (offset gap, lost marker packet) and refuses frames over the limits of
  :mod:`mjpeg_rtsp.limits`. Beside it the payloads of the frame in progress are kept as they
  came (at most :data:`~mjpeg_rtsp.limits.MAX_FRAME_BYTES` and
  :data:`~mjpeg_rtsp.limits.MAX_FRAME_PACKETS`), so that a complete frame comes out both as
  a JPEG and as the publisher's own payloads, which viewers can be sent unchanged.
* **Times**: an RTCP sender report of the latched source maps its RTP clock to its wall
  clock (NTP); each frame's ``capture_time`` is taken from the latest such mapping, or is the
  arrival of the frame's first packet before one has come (``from_sender_report`` says
  which). A report whose wall clock is 0 or more than :data:`SR_PLAUSIBLE_OFFSET` away from
  its own arrival (a sender counting from its start, or a clock set wrong) is not used.

Malformed input never raises: every refusal is a counter in :meth:`RtpJpegIngest.stats`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .jpeg import frame_size
from .limits import MAX_FRAME_BYTES, MAX_FRAME_PACKETS, MAX_FRAME_PIXELS
from .rfc2435 import (
    JpegDepacketizer,
    Rfc2435Error,
    Rfc2435FrameTooLargeError,
    parse_header,
)
from .rtcp import Bye, ReportBlock, RtcpError, SenderReport, parse_compound, unix_from_ntp
from .rtp import RtpError, RtpPacket, SequenceTracker, SeqVerdict, ts_diff
from .sdp import AnnouncedVideo
from .stats import ReceiverStats

__all__ = ["SR_PLAUSIBLE_OFFSET", "IngestedFrame", "RtpJpegIngest"]

#: Seconds a sender report's wall clock may be from its arrival and still map capture times.
#: Beyond it the publisher's clock is not ours (or not a clock at all): arrival times are used.
SR_PLAUSIBLE_OFFSET = 3600.0


@dataclass(frozen=True)
class IngestedFrame:
    """One complete frame from the publisher.

    ``jpeg`` is the frame rebuilt as a JPEG file (RFC 2435 appendix B); ``payloads`` are its
    RFC 2435 payloads as received, in order, without RTP headers; ``max_payload_size`` is the
    largest of them (a sender forwards them as-is only if this fits its packets).
    ``payloads_standalone`` is False when the frame relies on quantization tables sent with an
    earlier frame (Q 128..254 without in-band tables, RFC 2435 3.1.8): a viewer that joined
    since could not decode the payloads alone, so they must be re-packetized from ``jpeg``.
    ``capture_time`` is wall-clock Unix seconds: from the publisher's latest RTCP sender
    report when ``from_sender_report``, else ``arrival_time``, the arrival of the frame's
    first packet.
    """

    jpeg: bytes
    payloads: tuple[bytes, ...]
    rtp_timestamp: int
    capture_time: float
    arrival_time: float
    from_sender_report: bool
    width: int
    height: int
    max_payload_size: int
    payloads_standalone: bool


class RtpJpegIngest:
    """Turn one publisher's RTP/JPEG packets and RTCP reports into :class:`IngestedFrame`."""

    def __init__(
        self,
        video: AnnouncedVideo,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        max_frame_packets: int = MAX_FRAME_PACKETS,
        max_frame_pixels: int = MAX_FRAME_PIXELS,
    ) -> None:
        self.video = video
        self.max_frame_bytes = max_frame_bytes
        self.max_frame_packets = max_frame_packets
        self._depacketizer = JpegDepacketizer(
            video.width, video.height, max_pixels=max_frame_pixels, max_bytes=max_frame_bytes
        )
        self._sequence = SequenceTracker()
        self._reception = ReceiverStats(clock_rate=video.clock_rate)
        self._ssrc: int | None = None
        # The latest sender report: (SSRC, 64-bit NTP, RTP timestamp, arrival); it may come
        # before the first RTP packet, so it is kept with its SSRC and checked at use.
        self._sender_report: tuple[int, int, int, float] | None = None
        self._bye = False
        # The frame in progress, mirroring the depacketizer's view of timestamps: the
        # timestamp being assembled and the last one finished (emitted or dropped), whose
        # stragglers it ignores.
        self._frame_ts: int | None = None
        self._done_ts: int | None = None
        self._payloads: list[bytes] = []
        self._payload_bytes = 0
        self._frame_arrival = 0.0
        self._overflow = False
        self._counts = dict.fromkeys(
            (
                "packets", "bad_packets", "bad_payloads", "wrong_payload_type",
                "foreign_ssrc", "late_packets", "sequence_jumps", "frames",
                "frames_too_large", "sender_reports", "sender_reports_unusable", "bad_rtcp",
            ),
            0,
        )
        self._local_drops = 0  # frames the depacketizer completed that we could not keep

    # -- input -----------------------------------------------------------------------------

    def receive_rtp(
        self, datagram: bytes | bytearray | memoryview, arrival_wall: float
    ) -> IngestedFrame | None:
        """Take one RTP packet that arrived at ``arrival_wall`` (Unix seconds).

        Returns the frame it completes, else None. Never raises for what the packet holds.
        """
        counts = self._counts
        try:
            packet = RtpPacket.parse(datagram)
        except RtpError:
            counts["bad_packets"] += 1
            return None
        if packet.payload_type != self.video.payload_type:
            counts["wrong_payload_type"] += 1
            return None
        if self._ssrc is None:
            self._ssrc = packet.ssrc
        elif packet.ssrc != self._ssrc:
            counts["foreign_ssrc"] += 1
            return None
        highest = self._sequence.extended_max
        verdict, extended = self._sequence.update(packet.sequence_number)
        if verdict is SeqVerdict.JUMP:
            counts["sequence_jumps"] += 1
            return None
        # A.1 takes a repeat of the highest number as "ahead" (a distance of 0): a duplicate.
        if verdict is SeqVerdict.BEHIND or (verdict is SeqVerdict.AHEAD and extended == highest):
            counts["late_packets"] += 1
            return None
        counts["packets"] += 1
        self._reception.on_packet(
            packet.sequence_number, packet.timestamp, arrival_wall, len(packet.payload)
        )
        return self._on_payload(packet.payload, packet.timestamp, packet.marker, arrival_wall)

    def receive_rtcp(self, data: bytes | bytearray | memoryview, arrival_wall: float) -> None:
        """Take one (compound) RTCP packet: sender reports of the publisher, its BYE."""
        try:
            packets = parse_compound(data)
        except RtcpError:
            self._counts["bad_rtcp"] += 1
            return
        for packet in packets:
            if isinstance(packet, SenderReport):
                if self._ssrc is not None and packet.ssrc != self._ssrc:
                    continue
                self._counts["sender_reports"] += 1
                wall = unix_from_ntp(packet.ntp_timestamp)
                if packet.ntp_timestamp == 0 or abs(wall - arrival_wall) > SR_PLAUSIBLE_OFFSET:
                    self._counts["sender_reports_unusable"] += 1
                    continue
                self._sender_report = (
                    packet.ssrc, packet.ntp_timestamp, packet.rtp_timestamp, arrival_wall
                )
            elif isinstance(packet, Bye) and self._ssrc in packet.sources:
                self._bye = True

    # -- state -----------------------------------------------------------------------------

    @property
    def ssrc(self) -> int | None:
        """The publisher's SSRC, latched from its first packet of the announced type."""
        return self._ssrc

    @property
    def bye_received(self) -> bool:
        """True once the publisher's source said RTCP BYE (it is ending the stream)."""
        return self._bye

    def capture_time(self, rtp_timestamp: int) -> float | None:
        """The publisher's wall-clock time (Unix seconds) of ``rtp_timestamp``, from its latest
        usable sender report; None before one."""
        report = self._sender_report
        if report is None or report[0] != self._ssrc:
            return None
        _, ntp, sr_rtp, _ = report
        return unix_from_ntp(ntp) + ts_diff(rtp_timestamp, sr_rtp) / self.video.clock_rate

    def report_block(self, now: float) -> ReportBlock | None:
        """A reception report block on the publisher (RFC 3550 6.4.1) for an RR the server
        sends back; None before its first packet. Advances the report interval."""
        if self._ssrc is None:
            return None
        report = self._sender_report
        if report is None or report[0] != self._ssrc:
            return self._reception.report_block(self._ssrc, now, None, None)
        return self._reception.report_block(self._ssrc, now, report[1], report[3])

    def stats(self) -> dict[str, int]:
        """Counters: packets (accepted), bad_packets (not RTP v2), bad_payloads (malformed
        RFC 2435), wrong_payload_type, foreign_ssrc, late_packets (duplicate or reordered,
        dropped), sequence_jumps, packets_lost (RFC 3550 A.3), frames, frames_dropped
        (incomplete or refused), frames_too_large (of those, over a limit), sender_reports,
        sender_reports_unusable, bad_rtcp."""
        result = dict(self._counts)
        result["packets_lost"] = self._reception.packets_lost
        result["frames_dropped"] = self._depacketizer.frames_dropped + self._local_drops
        return result

    # -- internals -------------------------------------------------------------------------

    def _on_payload(
        self, payload: bytes, timestamp: int, marker: bool, arrival: float
    ) -> IngestedFrame | None:
        if timestamp == self._done_ts:
            return None  # a straggler of a finished frame: the depacketizer ignores it too
        if timestamp != self._frame_ts:
            if self._frame_ts is not None:
                self._done_ts = self._frame_ts  # abandoned by the depacketizer as well
            self._frame_ts = timestamp
            self._payloads = []
            self._payload_bytes = 0
            self._frame_arrival = arrival
            self._overflow = False
        if not self._overflow:
            self._payload_bytes += len(payload)
            if (
                self._payload_bytes > self.max_frame_bytes
                or len(self._payloads) >= self.max_frame_packets
            ):
                self._overflow = True  # the frame will be dropped: keep nothing more of it
                self._payloads = []
            else:
                self._payloads.append(payload)
        try:
            jpeg = self._depacketizer.push(payload, timestamp, marker)
        except Rfc2435FrameTooLargeError:
            self._counts["frames_too_large"] += 1
            jpeg = None
        except (Rfc2435Error, ValueError):
            # A malformed payload (its frame is dropped as incomplete), or a header the
            # rebuild could not use (ValueError from build_jpeg_header).
            self._counts["bad_payloads"] += 1
            jpeg = None
        if not marker:
            return None
        payloads = self._payloads
        overflow = self._overflow
        self._done_ts, self._frame_ts = timestamp, None
        self._payloads = []
        if jpeg is None:
            return None
        if overflow:
            # More packets than we keep: the depacketizer took the frame, but it cannot be
            # forwarded as it came.
            self._counts["frames_too_large"] += 1
            self._local_drops += 1
            return None
        return self._frame(jpeg, tuple(payloads), timestamp)

    def _frame(
        self, jpeg: bytes, payloads: tuple[bytes, ...], timestamp: int
    ) -> IngestedFrame | None:
        try:
            first = parse_header(payloads[0])
            width, height = frame_size(jpeg)
        except (IndexError, ValueError):
            self._local_drops += 1  # cannot happen for a frame the depacketizer rebuilt
            return None
        if first.fragment_offset != 0:
            self._local_drops += 1  # our bookkeeping lost step with the depacketizer's
            return None
        standalone = first.q < 128 or bool(first.qt_length)
        captured = self.capture_time(timestamp)
        self._counts["frames"] += 1
        return IngestedFrame(
            jpeg=jpeg,
            payloads=payloads,
            rtp_timestamp=timestamp,
            capture_time=captured if captured is not None else self._frame_arrival,
            arrival_time=self._frame_arrival,
            from_sender_report=captured is not None,
            width=width,
            height=height,
            max_payload_size=max(len(p) for p in payloads),
            payloads_standalone=standalone,
        )

