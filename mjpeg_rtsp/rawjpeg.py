"""The course's raw JPEG payload: whole frames, or frames split over consecutive datagrams.

Theory of operation: the textbook server puts a whole JPEG in each datagram; variants
that must send larger frames split them, the first piece starting with SOI and the last
ending with EOI. Pieces are joined only while sequence numbers are consecutive, so a frame
missing any piece is discarded (and counted), never produced half. A frame that grows past
``max_bytes`` without its EOI is discarded too (counted in ``frames_rejected``), and so are
the pieces after it up to the next SOI: what is buffered never exceeds ``max_bytes``.
"""

from __future__ import annotations

from .limits import MAX_FRAME_BYTES

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"


class RawJpegAssembler:
    def __init__(self, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_bytes = max_bytes
        self._parts: list[bytes] = []
        self._size = 0
        self._next_seq: int | None = None
        self.frames_dropped = 0  # incomplete: a piece missing, or no EOI before the next SOI
        self.frames_rejected = 0  # more than max_bytes

    @property
    def buffered_bytes(self) -> int:
        """Bytes of the frame being assembled."""
        return self._size

    def push(self, payload: bytes, seq: int) -> bytes | None:
        """Add the payload of extended sequence number ``seq``; a complete JPEG or None."""
        if payload[:2] == SOI:
            if self._parts:
                self.frames_dropped += 1  # the previous frame never got its end
            self._parts, self._size = [payload], len(payload)
        elif self._parts and seq == self._next_seq:
            self._parts.append(payload)
            self._size += len(payload)
        else:
            if self._parts:
                self.frames_dropped += 1
            self._parts, self._size = [], 0
            return None
        self._next_seq = seq + 1
        if self._size > self.max_bytes:
            self.frames_rejected += 1
            self._parts, self._size = [], 0
            return None
        if payload[-2:] == EOI:
            jpeg = b"".join(self._parts)
            self._parts, self._size = [], 0
            return jpeg
        return None
