"""The course's ``RtpPacket`` API, as a thin adapter over :mod:`mjpeg_rtsp.rtp`.

Theory of operation
-------------------
The networking course's skeleton server calls
``rtpPacket.encode(2, 0, 0, 0, frameNbr, 0, 26, 0, data)`` and its client calls
``rtpPacket.decode(data)``, ``seqNum()`` and ``getPayload()``. This class keeps those names and
argument orders so a student can drop the file into the skeleton, but it implements nothing
itself: ``encode`` builds a :class:`mjpeg_rtsp.rtp.RtpPacket` value and ``decode`` calls
:meth:`mjpeg_rtsp.rtp.RtpPacket.parse`; the accessors read that value. ``header`` and
``payload`` are kept as attributes because the skeleton exposes them.

Differences from the skeleton's bit twiddling: the textbook's sequence-number field silently
keeps the low 16 bits, so ``seqnum`` (the frame number in the skeleton) wraps modulo 2**16
here as well, and the timestamp modulo 2**32; negative values, a version other than 2, or
non-zero padding/extension/CC arguments raise ``ValueError`` (the course's fields cannot
express them). Garbage given to ``decode`` raises :class:`mjpeg_rtsp.rtp.RtpError`.
"""

from __future__ import annotations

from time import time

from mjpeg_rtsp import rtp

HEADER_SIZE = rtp.RTP_HEADER_SIZE

__all__ = ["HEADER_SIZE", "RtpPacket"]


class RtpPacket:
    """An RTP packet with the course's method names (RFC 3550 section 5.1)."""

    header: bytearray
    payload: bytes

    def __init__(self) -> None:
        self.header = bytearray(HEADER_SIZE)
        self.payload = b""
        self._packet: rtp.RtpPacket | None = None

    def encode(
        self,
        version: int,
        padding: int,
        extension: int,
        cc: int,
        seqnum: int,
        marker: int,
        pt: int,
        ssrc: int,
        payload: bytes,
        timestamp: int | None = None,
    ) -> None:
        """Build the packet from the course's header fields (RFC 3550 section 5.1).

        ``timestamp`` defaults to ``int(time())`` as in the course's skeleton. ``version``
        must be 2 and ``padding``, ``extension`` and ``cc`` must be 0.
        """
        if version != rtp.RTP_VERSION:
            raise ValueError(f"RTP version {version} not supported, only {rtp.RTP_VERSION}")
        if padding or extension or cc:
            raise ValueError(
                f"padding={padding}, extension={extension}, cc={cc}: "
                "the course's encode() only builds packets with all three 0"
            )
        if seqnum < 0:
            raise ValueError(f"sequence number {seqnum} is negative")
        if timestamp is None:
            timestamp = int(time())
        if timestamp < 0:
            raise ValueError(f"timestamp {timestamp} is negative")
        self._set(
            rtp.RtpPacket(
                payload_type=pt,
                sequence_number=rtp.seq_add(seqnum, 0),
                timestamp=rtp.ts_add(timestamp, 0),
                ssrc=ssrc,
                payload=bytes(payload),
                marker=bool(marker),
            )
        )

    def decode(self, byteStream: bytes | bytearray | memoryview) -> None:
        """Parse a received datagram; raises :class:`mjpeg_rtsp.rtp.RtpError` if invalid."""
        packet = rtp.RtpPacket.parse(byteStream)
        self._set(packet, byteStream[: packet.header_size])

    def _set(self, packet: rtp.RtpPacket, header: bytes | bytearray | memoryview = b"") -> None:
        self._packet = packet
        self.header = bytearray(
            header
            or rtp.pack_header(
                packet.payload_type,
                packet.sequence_number,
                packet.timestamp,
                packet.ssrc,
                packet.marker,
            )
        )
        self.payload = packet.payload

    def _value(self) -> rtp.RtpPacket:
        if self._packet is None:
            raise RuntimeError("empty RtpPacket: call encode() or decode() first")
        return self._packet

    def version(self) -> int:
        """RTP version (always 2)."""
        self._value()
        return rtp.RTP_VERSION

    def seqNum(self) -> int:
        """Sequence number, 0..65535."""
        return self._value().sequence_number

    def timestamp(self) -> int:
        """RTP timestamp, 0..2**32 - 1."""
        return self._value().timestamp

    def payloadType(self) -> int:
        """Payload type, 0..127 (26 = JPEG)."""
        return self._value().payload_type

    def marker(self) -> int:
        """Marker bit as 0 or 1."""
        return int(self._value().marker)

    def ssrc(self) -> int:
        """Synchronisation source identifier."""
        return self._value().ssrc

    def getPayload(self) -> bytes:
        """The payload (padding removed)."""
        self._value()
        return self.payload

    def getPacket(self) -> bytes:
        """The whole packet as sent on the wire."""
        return bytes(self._value())
