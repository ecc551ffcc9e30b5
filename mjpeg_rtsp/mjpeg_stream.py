"""Split a raw Motion-JPEG byte stream (concatenated JPEGs, as ``ffmpeg -f mjpeg -`` writes
them to a pipe) into whole JPEGs, whatever the chunking. Sans-I/O: bytes in, frames out.

Theory of operation
-------------------
A frame is found the way :mod:`mjpeg_rtsp.jpeg` finds it in a file (T.81 B.1.1.4/B.1.1.5):
from SOI, header segments are skipped by their lengths (so the ``FFD9`` of an EXIF
thumbnail inside APP1 never ends the frame), and entropy-coded data after each SOS is
searched at C speed for the marker that ends it (:func:`jpeg.find_scan_end`); EOI ends the
frame, any other marker (more DHT/SOS in progressive files) continues the header walk. The
walk is *resumable*: its position survives between :meth:`MjpegStreamSplitter.feed` calls,
so every byte is looked at once however the stream is chunked, and one frame costs a Python
step per header segment, never per byte.

Hostile or broken input never grows memory past one frame's limit:

* bytes before an SOI (garbage, padding some writers put between frames) are dropped;
* a frame that is still open after ``max_frame_bytes`` is dropped (``frames_oversized``),
  and the stream is searched for the next SOI from there;
* a frame whose markers make no sense (``frames_corrupt``), or that a new SOI interrupts
  (``frames_truncated``), is dropped and the stream resyncs at the next SOI;
* :meth:`~MjpegStreamSplitter.end` (end of the stream, or a producer restarting) drops a frame
  left open (``frames_truncated``).

Only the framing is checked; the frames' contents are the consumer's (``scan_jpeg``) to judge.
Every input byte is either delivered in a frame, counted in ``bytes_skipped``, or still
buffered (``buffered_bytes``).
"""

from __future__ import annotations

import re

from .jpeg import _STANDALONE, EOI, SOI, SOS, find_scan_end
from .limits import MAX_FILE_FRAME_BYTES

__all__ = ["MjpegStreamSplitter"]

_SOI_BYTES = b"\xff\xd8"
_FILL = re.compile(rb"\xff+")  # fill bytes before a marker (T.81 B.1.1.2)


class MjpegStreamSplitter:
    """Whole JPEGs out of a raw MJPEG byte stream fed in any pieces.

    ``feed(data)`` returns the frames completed by ``data``, in order; the counters say what
    was dropped and why. ``max_frame_bytes`` bounds what one frame may buffer.
    """

    def __init__(self, max_frame_bytes: int = MAX_FILE_FRAME_BYTES) -> None:
        if max_frame_bytes < 4:
            raise ValueError(f"max_frame_bytes must be >= 4, got {max_frame_bytes}")
        self.max_frame_bytes = max_frame_bytes
        # buf[0] is the SOI of the open frame, or the first byte not yet searched for one.
        self._buf = bytearray()
        self._in_frame = False
        self._pos = 0  # walk position in buf (in a frame) or where the SOI search resumes
        self._in_scan = False  # _pos is inside entropy-coded data
        self._scans = 0
        self.bytes_in = 0
        self.bytes_delivered = 0
        self.bytes_skipped = 0
        self.frames = 0
        self.frames_oversized = 0
        self.frames_truncated = 0
        self.frames_corrupt = 0

    @property
    def buffered_bytes(self) -> int:
        """Bytes held: the open frame so far, or a trailing 0xFF that may start an SOI."""
        return len(self._buf)

    @property
    def in_frame(self) -> bool:
        """A frame has begun (SOI seen) and not ended yet."""
        return self._in_frame

    def stats(self) -> dict[str, int]:
        return {
            "frames": self.frames,
            "bytes_in": self.bytes_in,
            "bytes_skipped": self.bytes_skipped,
            "frames_oversized": self.frames_oversized,
            "frames_truncated": self.frames_truncated,
            "frames_corrupt": self.frames_corrupt,
        }

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add the next bytes of the stream; the JPEGs (SOI..EOI) they complete."""
        self.bytes_in += len(data)
        self._buf += data
        out: list[bytes] = []
        while True:
            if not self._in_frame and not self._seek_soi():
                return out
            end = self._walk()
            if end is None:
                return out
            if end > 0:
                frame = bytes(self._buf[:end])
                del self._buf[:end]
                self.frames += 1
                self.bytes_delivered += end
                self._in_frame = False
                self._pos = 0
                out.append(frame)

    def end(self) -> bool:
        """The stream ended (or will restart from a fresh source): drop what is buffered.

        True when a frame was left open (counted in ``frames_truncated``)."""
        truncated = self._in_frame
        if truncated:
            self.frames_truncated += 1
        self._drop(len(self._buf))
        self._in_frame = False
        self._pos = 0
        return truncated

    # -- internals ---------------------------------------------------------------------------

    def _drop(self, count: int) -> None:
        """Forget the first ``count`` buffered bytes, counting them as skipped."""
        if count:
            del self._buf[:count]
            self.bytes_skipped += count

    def _seek_soi(self) -> bool:
        """Drop bytes up to the next SOI and open a frame there; False if none yet."""
        buf = self._buf
        at = buf.find(_SOI_BYTES, self._pos)
        if at < 0:
            # Keep a last 0xFF: the next piece may begin with the D8 that makes it an SOI.
            self._drop(len(buf) - 1 if buf[-1:] == b"\xff" else len(buf))
            self._pos = 0
            return False
        self._drop(at)
        self._open_frame()
        return True

    def _open_frame(self) -> None:
        self._in_frame = True
        self._pos = 2
        self._in_scan = False
        self._scans = 0

    def _resync(self, skip: int) -> None:
        """Abandon the open frame; search for the next SOI ``skip`` bytes into it."""
        self._in_frame = False
        self._pos = skip

    def _walk(self) -> int | None:
        """Advance the open frame's walk: its length when it ends, None when more bytes are
        needed, 0 when it was abandoned (counted; the caller searches for the next SOI)."""
        buf = self._buf
        limit = min(len(buf), self.max_frame_bytes)
        pos = self._pos
        while True:
            if self._in_scan:
                found = find_scan_end(buf, pos, limit)
                if found is None:
                    pos = max(pos, limit - 1)
                    break
                pos = found
                self._in_scan = False
            if pos + 2 > limit:
                break
            if buf[pos] != 0xFF:
                return self._corrupt()
            if buf[pos + 1] == 0xFF:
                pos = _FILL.match(buf, pos, limit).end() - 1  # type: ignore[union-attr]
                if pos + 2 > limit:
                    break
            marker = buf[pos + 1]
            if marker == EOI:
                if self._scans == 0:
                    return self._corrupt()  # no scan data: not a picture
                return pos + 2
            if marker == SOI:
                # A new frame began before this one ended: the writer was cut off mid-frame.
                self.frames_truncated += 1
                self._drop(pos)
                self._open_frame()
                buf, pos = self._buf, 2
                limit = min(len(buf), self.max_frame_bytes)
                continue
            if marker == 0x00:
                return self._corrupt()
            if marker in _STANDALONE:
                pos += 2
                continue
            if pos + 4 > limit:
                break
            length = (buf[pos + 2] << 8) | buf[pos + 3]
            if length < 2:
                return self._corrupt()
            seg_end = pos + 2 + length
            if seg_end > limit:
                break
            if marker == SOS:
                self._scans += 1
                self._in_scan = True
            pos = seg_end
        self._pos = pos
        if limit >= self.max_frame_bytes:
            # Still open after max_frame_bytes: drop what is held, look for the next SOI.
            self.frames_oversized += 1
            self._drop(self.max_frame_bytes)
            self._resync(0)
            return 0
        return None

    def _corrupt(self) -> int:
        self.frames_corrupt += 1
        self._resync(2)
        return 0
