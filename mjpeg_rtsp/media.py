"""Motion-JPEG files: indexing, random access, and RTP payloads shared by all sessions.

Theory of operation: a file is indexed once, when first asked for, into an
array of (offset, length) per frame; every session playing it shares that
index and a bounded cache of ready-made RFC 2435 payloads, so a frame is read,
checked (and if need be re-encoded) and fragmented once however many clients
watch it. Two layouts are read:

* the networking course's ``.Mjpeg``: per frame, five ASCII digits giving the
  length, then the JPEG;
* raw concatenated JPEGs, as ``ffmpeg -f mjpeg`` writes them.

The layout is recognised from the content. Indexing reads the file in chunks
(no mmap: a file truncated under a mapping would kill the process with
SIGBUS); frames are then read with ``os.pread``. A malformed or truncated file
raises :class:`MediaError` with a message that says where and why.
"""

from __future__ import annotations

import enum
import logging
import os
import stat
import threading
import urllib.parse
from array import array
from collections import OrderedDict
from dataclasses import dataclass

from . import rfc2435
from .jpeg import JpegError, find_frame_end, scan_jpeg
from .rtsp import RtspStatus

log = logging.getLogger(__name__)

MEDIA_EXTENSIONS = (".mjpeg", ".mjpg")
TEXTBOOK_LENGTH_DIGITS = 5
_READ_CHUNK = 4 << 20
DEFAULT_CACHE_BYTES = 64 << 20


class MediaError(Exception):
    """A media file that cannot be served, with the RTSP status to answer."""

    def __init__(self, message: str, status: RtspStatus = RtspStatus.UNSUPPORTED_MEDIA_TYPE):
        super().__init__(message)
        self.status = status


class MjpegLayout(enum.Enum):
    TEXTBOOK = "textbook"  # 5-digit length prefix per frame
    RAW = "raw"  # concatenated JPEG files


@dataclass(frozen=True)
class FrameIndex:
    layout: MjpegLayout
    offsets: array  # of frame starts (the JPEG's SOI)
    lengths: array
    width: int
    height: int

    @property
    def frame_count(self) -> int:
        return len(self.offsets)


def detect_layout(head: bytes, name: str) -> MjpegLayout:
    if head[:2] == b"\xff\xd8":
        return MjpegLayout.RAW
    digits = head[:TEXTBOOK_LENGTH_DIGITS]
    if len(digits) == TEXTBOOK_LENGTH_DIGITS and digits.isdigit() and head[5:7] == b"\xff\xd8":
        return MjpegLayout.TEXTBOOK
    raise MediaError(f"{name}: not a Motion-JPEG file (neither .Mjpeg length prefixes nor JPEGs)")


class _ChunkReader:
    """A growing window over a file, so frames can be scanned without reading it all."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size
        self.base = 0  # file offset of buf[0]
        self.buf = b""

    def window(self, offset: int, need: int) -> tuple[bytes, int]:
        """Bytes from file ``offset`` (``need`` of them unless at EOF) and its index in them."""
        end = self.base + len(self.buf)
        if offset < self.base or offset + need > end:
            want = max(need, _READ_CHUNK)
            self.buf = os.pread(self.fd, want, offset)
            self.base = offset
        return self.buf, offset - self.base

    def at_eof(self) -> bool:
        return self.base + len(self.buf) >= self.size


def build_index(fd: int, size: int, name: str) -> FrameIndex:
    """Index every frame of an open file; MediaError on anything malformed or truncated."""
    reader = _ChunkReader(fd, size)
    head, _ = reader.window(0, 16)
    layout = detect_layout(head, name)
    offsets, lengths = array("q"), array("q")
    width = height = 0
    position = 0
    while position < size:
        number = len(offsets)
        if layout is MjpegLayout.TEXTBOOK:
            data, at = reader.window(position, TEXTBOOK_LENGTH_DIGITS)
            digits = data[at : at + TEXTBOOK_LENGTH_DIGITS]
            if len(digits) < TEXTBOOK_LENGTH_DIGITS or not digits.isdigit():
                raise MediaError(
                    f"{name}: frame {number} at byte {position}: expected 5 length digits, "
                    f"found {bytes(digits)!r}"
                )
            length = int(digits)
            start = position + TEXTBOOK_LENGTH_DIGITS
            if start + length > size:
                raise MediaError(
                    f"{name}: truncated: frame {number} at byte {position} needs {length} bytes, "
                    f"only {size - start} remain"
                )
            data, at = reader.window(start, length)
            info = _scan(data, at, name, number, start)
            if info.end - at != length:
                raise MediaError(
                    f"{name}: frame {number} at byte {start}: the JPEG ends after "
                    f"{info.end - at} bytes but its length prefix says {length}"
                )
            position = start + length
        else:
            start = position
            info = None
            need = 1 << 16
            while info is None:
                data, at = reader.window(start, need)
                try:
                    end = find_frame_end(data, at)
                    info = _scan(data, at, name, number, start)
                    length = end - at
                except (JpegError, MediaError) as exc:
                    if reader.at_eof() and len(data) - at >= size - start:
                        raise MediaError(
                            f"{name}: frame {number} at byte {start} is corrupt or truncated: {exc}"
                        ) from None
                    need = min(max(need * 4, len(data) - at + 1), size - start)
                    reader.base, reader.buf = 0, b""  # force a re-read of a larger window
            position = start + length
            # Some writers pad between frames; skip anything up to the next SOI.
            while position < size:
                data, at = reader.window(position, 2)
                if data[at : at + 2] == b"\xff\xd8":
                    break
                if data[at : at + 1] not in (b"\x00", b"\xff", b"\r", b"\n"):
                    raise MediaError(
                        f"{name}: unexpected bytes after frame {number} at byte {position}"
                    )
                position += 1
        if not offsets:
            width, height = info.width, info.height
        offsets.append(start)
        lengths.append(length)
    if not offsets:
        raise MediaError(f"{name}: no frames")
    return FrameIndex(layout, offsets, lengths, width, height)


def _scan(data: bytes, at: int, name: str, number: int, offset: int):
    try:
        return scan_jpeg(data, at)
    except JpegError as exc:
        raise MediaError(f"{name}: frame {number} at byte {offset}: {exc}") from None


class MjpegFile:
    """One indexed file: random access to frames and to their RTP payloads."""

    def __init__(self, path: str, name: str | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES):
        self.path = path
        self.name = name or os.path.basename(path)
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            st = os.fstat(self._fd)
            if not stat.S_ISREG(st.st_mode):
                raise MediaError(f"{self.name}: not a regular file", RtspStatus.NOT_FOUND)
            self.signature = (st.st_ino, st.st_size, st.st_mtime_ns)
            self.index = build_index(self._fd, st.st_size, self.name)
        except BaseException:
            self.close()  # and mark it closed, so __del__ cannot close a reused descriptor
            raise
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple, tuple[bytes, ...]] = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = cache_bytes
        self.reencoded_frames = 0

    @property
    def frame_count(self) -> int:
        return self.index.frame_count

    @property
    def width(self) -> int:
        return self.index.width

    @property
    def height(self) -> int:
        return self.index.height

    def frame(self, number: int) -> bytes:
        """The JPEG of frame ``number`` (0-based) as stored."""
        if not 0 <= number < self.frame_count:
            raise IndexError(f"frame {number} out of range 0..{self.frame_count - 1}")
        return os.pread(self._fd, self.index.lengths[number], self.index.offsets[number])

    def rtp_payloads(self, number: int, max_payload: int) -> tuple[bytes, ...]:
        """RFC 2435 payloads of frame ``number``, re-encoding frames RFC 2435 cannot carry."""
        return self._cached(("rfc2435", number, max_payload), self._make_payloads)

    def raw_payload(self, number: int) -> tuple[bytes, ...]:
        """The whole JPEG in one payload (the textbook dialect)."""
        return self._cached(("raw", number), lambda key: (self.frame(key[1]),))

    def _cached(self, key: tuple, make) -> tuple[bytes, ...]:
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        value = make(key)
        size = sum(len(p) for p in value)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = value
                self._cache_bytes += size
                while self._cache_bytes > self._cache_limit and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._cache_bytes -= sum(len(p) for p in old)
        return value

    def _make_payloads(self, key: tuple) -> tuple[bytes, ...]:
        _, number, max_payload = key
        jpeg = self.frame(number)
        info = scan_jpeg(jpeg)
        if info.rfc2435_type is None:
            from .transcode import make_rfc2435_compatible  # Pillow only where needed

            if self.reencoded_frames == 0:
                log.warning(
                    "%s: RFC 2435 cannot carry frame %d as it is (%s); re-encoding such frames "
                    "to baseline 4:2:0 with their own quantization tables (cached)",
                    self.name, number, info.incompatibility,
                )
            jpeg = make_rfc2435_compatible(jpeg)
            info = scan_jpeg(jpeg)
            self.reencoded_frames += 1
        return tuple(rfc2435.packetize(jpeg, info, max_payload))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:
            pass


class MediaLibrary:
    """Maps request paths to files inside one media folder, and shares their indexes."""

    def __init__(self, root: str, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.root = os.path.realpath(root)
        self._cache_bytes = cache_bytes
        self._files: dict[str, MjpegFile] = {}
        self._lock = threading.Lock()

    def resolve_path(self, request_path: str) -> tuple[str, str]:
        """(real path, name under the root) of a URL path; MediaError 404 outside the root."""
        name = urllib.parse.unquote(request_path, errors="strict").strip("/")
        not_found = MediaError(f"{request_path[:200]!r}: not found", RtspStatus.NOT_FOUND)
        segments = name.split("/")
        if (
            not name
            or "\x00" in name
            or "\\" in name
            or any(s in ("", ".", "..") for s in segments)
            or os.path.isabs(name)
        ):
            raise not_found
        if not name.lower().endswith(MEDIA_EXTENSIONS):
            raise not_found
        real = os.path.realpath(os.path.join(self.root, *segments))
        if not real.startswith(self.root + os.sep) or not os.path.isfile(real):
            raise not_found
        return real, name

    def open(self, request_path: str) -> MjpegFile:
        """The shared, indexed file for a request path (MediaError 404/415 when it cannot be)."""
        real, name = self.resolve_path(request_path)
        with self._lock:
            media = self._files.get(real)
            try:
                st = os.stat(real)
            except OSError:
                raise MediaError(f"{name}: not found", RtspStatus.NOT_FOUND) from None
            if media is not None and media.signature == (st.st_ino, st.st_size, st.st_mtime_ns):
                return media
            try:
                media = MjpegFile(real, name, self._cache_bytes)
            except OSError as exc:
                raise MediaError(
                    f"{name}: cannot read: {exc.strerror}", RtspStatus.NOT_FOUND
                ) from None
            log.info(
                "indexed %s: %d frames, %dx%d (%s layout)",
                name, media.frame_count, media.width, media.height, media.index.layout.value,
            )
            self._files[real] = media
            return media

    def list_media(self, limit: int = 50) -> list[str]:
        """Names of the media files directly in the root, for the start-up banner."""
        try:
            names = sorted(os.listdir(self.root))
        except OSError:
            return []
        return [
            n for n in names
            if n.lower().endswith(MEDIA_EXTENSIONS) and os.path.isfile(os.path.join(self.root, n))
        ][:limit]
