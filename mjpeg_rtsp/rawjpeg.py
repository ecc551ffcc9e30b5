"""The course's raw JPEG payload: whole frames, or frames split over consecutive datagrams.

Theory of operation: the textbook server puts a whole JPEG in each datagram; variants
that must send larger frames split them, the first piece starting with SOI and the last
ending with EOI. Pieces are joined only while sequence numbers are consecutive, so a frame
missing any piece is discarded (and counted), never produced half.
"""

from __future__ import annotations

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"


class RawJpegAssembler:
    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._next_seq: int | None = None
        self.frames_dropped = 0

    def push(self, payload: bytes, seq: int) -> bytes | None:
        """Add the payload of extended sequence number ``seq``; a complete JPEG or None."""
        if payload[:2] == SOI:
            if self._parts:
                self.frames_dropped += 1  # the previous frame never got its end
            self._parts = [payload]
        elif self._parts and seq == self._next_seq:
            self._parts.append(payload)
        else:
            if self._parts:
                self.frames_dropped += 1
            self._parts = []
            return None
        self._next_seq = seq + 1
        if payload[-2:] == EOI:
            jpeg = b"".join(self._parts)
            self._parts = []
            return jpeg
        return None
