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
raises :class:`UnsupportedMediaError` with a message that says where and why;
each kind of :class:`MediaError` says what went wrong, not how to answer it
(the RTSP service maps kinds to statuses).
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import stat
import threading
import urllib.parse
from array import array
from collections import OrderedDict
from dataclasses import dataclass

from . import rfc2435
from .jpeg import JpegError, JpegInfo, JpegTruncatedError, scan_jpeg
from .limits import MAX_FILE_FRAME_BYTES, MAX_REENCODE_PIXELS
from .rtp import RTP_HEADER_SIZE

log = logging.getLogger(__name__)

MEDIA_EXTENSIONS = (".mjpeg", ".mjpg")
TEXTBOOK_LENGTH_DIGITS = 5
_READ_CHUNK = 4 << 20
# Files up to this size are indexed whole when opened (a 64 MiB file of 720p frames in about
# 0.2 s); a larger one only its first LAZY_FIRST_BYTES, then LAZY_AHEAD_FRAMES ahead of the
# frame asked for, so PLAY starts in milliseconds whatever the size (issue 11: a 1 GB file).
EAGER_INDEX_BYTES = 64 << 20
LAZY_FIRST_BYTES = 1 << 20
LAZY_AHEAD_FRAMES = 8
# How many frames' RFC 2435 payloads a sender makes at a time when it reads ahead (already
# indexed, not cached yet), from one read: a server thread wakes once per frame with cold
# caches, and packetizing the next frames while they are warm costs a fraction of doing
# each in its own wake-up (bench/pass_micro.py --gap).
READ_AHEAD_FRAMES = 8
# ...when they lie close together in the file (a read spanning at most this much more than
# the frames themselves; else each frame is read on its own).
READ_AHEAD_SLACK = 64 << 10
DEFAULT_CACHE_BYTES = 64 << 20
# The whole JPEG in one UDP datagram (the textbook dialect): 65507 minus the RTP header.
MAX_DATAGRAM_JPEG = 65507 - RTP_HEADER_SIZE
# Per-frame flags in the index.
FLAG_REENCODE = 1  # RFC 2435 cannot carry it as it is: re-encoded for standard clients
FLAG_UNDELIVERABLE = 2  # and it cannot be re-encoded (too large, or undecodable)
_PADDING = b"\x00\xff\r\n"  # bytes some writers put between frames
_ZEROS = bytes(_READ_CHUNK)


class MediaError(Exception):
    """A media file that cannot be served; the subclass says why, the message where.

    Media knows nothing of RTSP: the service maps each kind to the status it answers.
    """

    def copy(self) -> MediaError:
        """The same error, fresh, to raise again (a remembered one would grow a traceback)."""
        return type(self)(str(self))


class MediaNotFoundError(MediaError):
    """No such file to serve: missing, outside the media folder, not a regular file, unreadable."""


class UnsupportedMediaError(MediaError):
    """The file is not Motion-JPEG, is malformed or truncated, or no frame can be sent."""


class MediaChangedError(MediaError):
    """The file was truncated or rewritten after it was indexed."""


class MediaIndexingError(MediaError):
    """Indexing failed unexpectedly (a bug, logged where it happened), for requests that waited."""


class MjpegLayout(enum.Enum):
    TEXTBOOK = "textbook"  # 5-digit length prefix per frame
    RAW = "raw"  # concatenated JPEG files


@dataclass
class FrameIndex:
    """Where each frame is. Grows at the end only (see :class:`_Indexer`); ``complete`` once
    the end of the file (or of its readable part) has been reached."""

    layout: MjpegLayout
    offsets: array  # of frame starts (the JPEG's SOI)
    lengths: array
    width: int
    height: int
    flags: bytearray  # FLAG_* per frame
    complete: bool = True

    @property
    def frame_count(self) -> int:
        return len(self.offsets)


def detect_layout(head: bytes, name: str) -> MjpegLayout:
    if head[:2] == b"\xff\xd8":
        return MjpegLayout.RAW
    digits = head[:TEXTBOOK_LENGTH_DIGITS]
    if len(digits) == TEXTBOOK_LENGTH_DIGITS and digits.isdigit() and head[5:7] == b"\xff\xd8":
        return MjpegLayout.TEXTBOOK
    raise UnsupportedMediaError(
        f"{name}: not a Motion-JPEG file (neither .Mjpeg length prefixes nor JPEGs)"
    )


class _ChunkReader:
    """A window over a file, so frames can be scanned without reading it all."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size
        self.base = 0  # file offset of buf[0]
        self.buf = b""

    def window(self, offset: int, need: int) -> tuple[bytes, int]:
        """Bytes from file ``offset`` (``need`` of them unless at EOF) and its index in them."""
        end = self.base + len(self.buf)
        if offset < self.base or offset + need > end and end < self.size:
            self.buf = os.pread(self.fd, max(need, _READ_CHUNK), offset)
            self.base = offset
        return self.buf, offset - self.base


def build_index(fd: int, size: int, name: str) -> FrameIndex:
    """Index every frame of an open file; MediaError on anything malformed or truncated.

    Everything runs at C speed over the bytes (segments skipped by their lengths, scan data
    and padding searched, holes of sparse files not even read), so a 1 GiB file takes well
    under a second when it is mostly padding.
    """
    indexer = _Indexer(fd, size, name)
    indexer.advance(until_frame=None)
    return indexer.index


class _Indexer:
    """Builds a file's :class:`FrameIndex` frame by frame and can stop and go on later, so a
    large file is indexed ahead of the playing position instead of all before its first
    frame (``advance``). A malformed frame raises MediaError while the index is empty or
    ``strict``; later (a large file's damage found while it plays) the index just ends there."""

    def __init__(self, fd: int, size: int, name: str) -> None:
        self.reader = _ChunkReader(fd, size)
        self.size, self.name = size, name
        head, _ = self.reader.window(0, 16)
        layout = detect_layout(head[:16], name)
        self.index = FrameIndex(layout, array("q"), array("q"), 0, 0, bytearray(), False)
        self.position = 0

    def advance(self, until_frame: int | None, until_byte: int | None = None,
                strict: bool = True) -> None:
        """Index frames until frame ``until_frame`` is known (None: to the end of the file),
        stopping early once past byte ``until_byte``."""
        index = self.index
        while not index.complete:
            if until_frame is not None and index.frame_count > until_frame:
                return
            if until_byte is not None and self.position >= until_byte:
                return
            if self.position >= self.size:
                if not index.offsets:
                    raise UnsupportedMediaError(f"{self.name}: no frames")
                index.complete = True
                return
            try:
                self._next()
            except MediaError as exc:
                if strict or not index.offsets:
                    raise
                # Damage far into a file found while it plays: it ends at its last good frame.
                index.complete = True
                log.warning("%s: %s; playing it as %d frames", self.name, exc, index.frame_count)

    def _next(self) -> None:
        index, reader, name, size = self.index, self.reader, self.name, self.size
        position = self.position
        number = index.frame_count
        if index.layout is MjpegLayout.TEXTBOOK:
            data, at = reader.window(position, TEXTBOOK_LENGTH_DIGITS)
            digits = data[at : at + TEXTBOOK_LENGTH_DIGITS]
            if len(digits) < TEXTBOOK_LENGTH_DIGITS or not digits.isdigit():
                raise UnsupportedMediaError(
                    f"{name}: frame {number} at byte {position}: expected 5 length digits, "
                    f"found {bytes(digits)!r}"
                )
            length = int(digits)
            start = position + TEXTBOOK_LENGTH_DIGITS
            if start + length > size:
                raise UnsupportedMediaError(
                    f"{name}: truncated: frame {number} at byte {position} needs {length} bytes, "
                    f"only {size - start} remain"
                )
            data, at = reader.window(start, length)
            info = _scan(data, at, name, number, start)
            if info.end - at != length:
                raise UnsupportedMediaError(
                    f"{name}: frame {number} at byte {start}: the JPEG ends after "
                    f"{info.end - at} bytes but its length prefix says {length}"
                )
            position = start + length
        else:
            start = position
            info, length = _scan_raw_frame(reader, start, name, number)
            position = _skip_padding(reader, start + length, name, number)
        if not index.offsets:
            index.width, index.height = info.width, info.height
        # Flags before lengths before offsets: a reader that sees the offset sees the rest.
        index.flags.append(_frame_flags(info))
        index.lengths.append(length)
        index.offsets.append(start)
        self.position = position


def _frame_flags(info: JpegInfo) -> int:
    if info.rfc2435_type is not None:
        return 0
    if info.width * info.height > MAX_REENCODE_PIXELS:
        return FLAG_REENCODE | FLAG_UNDELIVERABLE
    return FLAG_REENCODE


def _scan_raw_frame(
    reader: _ChunkReader, start: int, name: str, number: int
) -> tuple[JpegInfo, int]:
    """The JPEG at ``start`` and its length, read in a window that grows to hold it."""
    limit = min(reader.size - start, MAX_FILE_FRAME_BYTES)
    need = min(1 << 16, limit)
    while True:
        data, at = reader.window(start, need)
        try:
            info = scan_jpeg(data, at)
            return info, info.end - at
        except JpegTruncatedError as exc:
            if len(data) - at >= limit:
                why = "truncated" if limit < MAX_FILE_FRAME_BYTES else (
                    f"larger than {MAX_FILE_FRAME_BYTES >> 20} MiB or truncated")
                raise UnsupportedMediaError(
                    f"{name}: frame {number} at byte {start} is corrupt or {why}: {exc}"
                ) from None
            need = min(max(need * 4, len(data) - at + 1), limit)
        except JpegError as exc:
            raise UnsupportedMediaError(
                f"{name}: frame {number} at byte {start} is corrupt or truncated: {exc}"
            ) from None


def _skip_padding(reader: _ChunkReader, position: int, name: str, number: int) -> int:
    """The offset of the next SOI, skipping padding (zeros, 0xFF, CR, LF) some writers add.

    The padding is searched a chunk at a time with C-speed bytes methods, and holes of a
    sparse file (zeros that take no disk space) are skipped without reading them.
    """
    size = reader.size
    step = 1 << 12
    while position < size:
        data, at = reader.window(position, 2)
        if data[at : at + 2] == b"\xff\xd8":
            return position
        n = min(step, size - position)
        data, at = reader.window(position, n)
        chunk = data[at : at + n]
        rest = b"" if chunk == _ZEROS[:n] else chunk.translate(None, _PADDING)
        if not rest:
            position += n
            step = min(step * 4, _READ_CHUNK)
            if step == _READ_CHUNK:
                position = _next_data(reader.fd, position, size)
            continue
        position += chunk.find(rest[:1])  # the first byte that is not padding
        if position > 0:
            data, at = reader.window(position - 1, 2)
            if data[at : at + 2] == b"\xff\xd8":
                return position - 1
        raise UnsupportedMediaError(
            f"{name}: unexpected bytes after frame {number} at byte {position}"
        )
    return size


def _next_data(fd: int, position: int, size: int) -> int:
    """``position``, or past the hole of a sparse file that starts there (it reads as zeros)."""
    seek_data = getattr(os, "SEEK_DATA", None)
    if seek_data is None:
        return position
    try:
        return max(position, min(os.lseek(fd, position, seek_data), size))
    except OSError as exc:
        # ENXIO: only a hole from here to the end; anything else: no hole information.
        return size if exc.errno == errno.ENXIO else position


def _scan(data: bytes, at: int, name: str, number: int, offset: int) -> JpegInfo:
    try:
        return scan_jpeg(data, at)
    except JpegError as exc:
        raise UnsupportedMediaError(f"{name}: frame {number} at byte {offset}: {exc}") from None


class MjpegFile:
    """One indexed file: random access to frames and to their RTP payloads."""

    def __init__(self, path: str, name: str | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES):
        self.path = path
        self.name = name or os.path.basename(path)
        self._fd = -1  # until opened: close() and __del__ must find it
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            st = os.fstat(self._fd)
            if not stat.S_ISREG(st.st_mode):
                raise MediaNotFoundError(f"{self.name}: not a regular file")
            self.signature = (st.st_ino, st.st_size, st.st_mtime_ns)
            self._indexer = _Indexer(self._fd, st.st_size, self.name)
            # A file up to EAGER_INDEX_BYTES is indexed whole now (exact range, every error
            # at once); a larger one only its first part, the rest ahead of playing.
            eager = None if st.st_size <= EAGER_INDEX_BYTES else LAZY_FIRST_BYTES
            self._indexer.advance(until_frame=None, until_byte=eager)
            self.index = self._indexer.index
        except BaseException:
            self.close()  # and mark it closed, so __del__ cannot close a reused descriptor
            raise
        self._lock = threading.Lock()
        self._index_lock = threading.Lock()  # one thread indexes further at a time
        self._cache: OrderedDict[tuple, tuple[bytes, ...]] = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = cache_bytes
        self.reencoded_frames = 0
        self.changed = False  # the file no longer holds what was indexed

    @property
    def frame_count(self) -> int:
        """Frames indexed so far: all of them once :attr:`complete`."""
        return self.index.frame_count

    @property
    def complete(self) -> bool:
        return self.index.complete

    def has_frame(self, number: int) -> bool:
        """Whether frame ``number`` exists, indexing further (ahead of it) if need be."""
        if number < self.index.frame_count:
            return True
        if self.index.complete or number < 0:
            return False
        with self._index_lock:
            if not self.index.complete:
                try:
                    self._indexer.advance(until_frame=number + LAZY_AHEAD_FRAMES, strict=False)
                except OSError as exc:  # reading failed: the file ends here for now
                    log.warning("%s: cannot read further: %s", self.name, exc)
                    return number < self.index.frame_count
        return number < self.index.frame_count

    def total_frames(self) -> int:
        """Index the whole file (however long that takes) and return its frame count."""
        self.has_frame(2**62)
        return self.index.frame_count

    @property
    def width(self) -> int:
        return self.index.width

    @property
    def height(self) -> int:
        return self.index.height

    def frame(self, number: int) -> bytes:
        """The JPEG of frame ``number`` (0-based) as stored.

        MediaChangedError if the file no longer holds what was indexed (truncated or
        rewritten while being served): every later call on this object fails the same way.
        """
        if not self.has_frame(number):
            raise IndexError(f"frame {number} out of range 0..{self.frame_count - 1}")
        return self._read_frames(number, number + 1)[0]

    def _read_frames(self, first: int, end: int) -> list[bytes]:
        """The JPEGs of indexed frames ``first`` to ``end`` (exclusive), in one read when
        they lie together; MediaChangedError as for :meth:`frame`."""
        if self.changed:
            raise MediaChangedError(f"{self.name} changed on disk while being served")
        offsets, lengths = self.index.offsets, self.index.lengths
        start = offsets[first]
        span = offsets[end - 1] + lengths[end - 1] - start
        if span <= sum(lengths[first:end]) + READ_AHEAD_SLACK:
            block = memoryview(os.pread(self._fd, span, start))
            frames = [bytes(block[offsets[n] - start:offsets[n] - start + lengths[n]])
                      for n in range(first, end)]
        else:
            frames = [os.pread(self._fd, lengths[n], offsets[n]) for n in range(first, end)]
        st = os.fstat(self._fd)
        for number, data in zip(range(first, end), frames, strict=True):
            if (
                len(data) != lengths[number]
                or data[:2] != b"\xff\xd8"
                or data[-2:] != b"\xff\xd9"
                or (st.st_ino, st.st_size, st.st_mtime_ns) != self.signature
            ):
                self.changed = True
                raise MediaChangedError(
                    f"{self.name} changed on disk while being served (frame {number} is no "
                    f"longer what was indexed)"
                )
        return frames

    def check_unchanged(self) -> None:
        """MediaChangedError if the file was rewritten or truncated since indexing."""
        if not self.changed:
            st = os.fstat(self._fd)
            self.changed = (st.st_ino, st.st_size, st.st_mtime_ns) != self.signature
        if self.changed:
            raise MediaChangedError(
                f"{self.name} changed on disk since it was set up; TEARDOWN and set it up again"
            )

    def rtp_payloads(self, number: int, max_payload: int, ahead: int = 1) -> tuple[bytes, ...]:
        """RFC 2435 payloads of frame ``number``, re-encoding frames RFC 2435 cannot carry.
        When they are not cached, those of the ``ahead - 1`` indexed frames after it that
        are not either are made and cached with them, from one read.

        Empty for a frame that cannot be sent (too large or impossible to re-encode).
        """
        return self._cached(("rfc2435", number, max_payload), self._make_payloads_ahead, ahead)

    def raw_payload(self, number: int) -> tuple[bytes, ...]:
        """The whole JPEG in one payload (the textbook dialect); empty when it is too large
        for one datagram."""
        if self.index.lengths[number] > MAX_DATAGRAM_JPEG:
            return ()
        return self.jpeg_payload(number)

    def jpeg_payload(self, number: int) -> tuple[bytes, ...]:
        """The whole JPEG of any size in one payload (HTTP viewers), cached once with the
        textbook's (the same bytes)."""
        return self._cached(("raw", number), lambda key: (self.frame(key[1]),))

    def deliverable_frames(self, raw: bool) -> int:
        """How many frames can be sent whole as raw JPEGs in datagrams (``raw``), or as RFC
        2435 (as far as the index knows: a re-encoding may still fail when it is tried)."""
        if raw:
            return sum(1 for n in self.index.lengths if n <= MAX_DATAGRAM_JPEG)
        return self.frame_count - self.index.flags.count(FLAG_REENCODE | FLAG_UNDELIVERABLE)

    def check_deliverable(self, raw: bool) -> None:
        """UnsupportedMediaError when no frame of the file can be sent in that payload format."""
        if self.deliverable_frames(raw):
            return
        if raw:
            raise UnsupportedMediaError(
                f"{self.name}: every frame is larger than one datagram (the smallest is "
                f"{min(self.index.lengths)} bytes, the limit {MAX_DATAGRAM_JPEG}); the textbook "
                "client cannot receive it, a standard RTSP client can"
            )
        raise UnsupportedMediaError(
            f"{self.name}: no frame can be sent as RFC 2435: they are {self.width}x"
            f"{self.height} and would need re-encoding, which is limited to "
            f"{MAX_REENCODE_PIXELS} pixels"
        )

    def _cached(self, key: tuple, make, *args: object) -> tuple[bytes, ...]:
        if self.changed:
            raise MediaChangedError(f"{self.name} changed on disk while being served")
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        value = make(key, *args)
        self._store(key, value)
        return value

    def _store(self, key: tuple, value: tuple[bytes, ...]) -> None:
        size = sum(map(len, value))
        with self._lock:
            if key not in self._cache:
                self._cache[key] = value
                self._cache_bytes += size
                while self._cache_bytes > self._cache_limit and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._cache_bytes -= sum(map(len, old))

    def _make_payloads_ahead(self, key: tuple, ahead: int) -> tuple[bytes, ...]:
        """Frame ``key``'s payloads, and those of the indexed frames after it that are not
        cached (``ahead`` in all, the ones after it cached here)."""
        kind, number, max_payload = key
        end = number + 1
        with self._lock:
            while end < min(number + ahead, self.index.frame_count) and \
                    (kind, end, max_payload) not in self._cache:
                end += 1
        jpegs = self._read_frames(number, end)
        for later in range(number + 1, end):
            self._store((kind, later, max_payload),
                        self._make_payloads((kind, later, max_payload), jpegs[later - number]))
        return self._make_payloads(key, jpegs[0])

    def _make_payloads(self, key: tuple, jpeg: bytes) -> tuple[bytes, ...]:
        _, number, max_payload = key
        if self.index.flags[number] & FLAG_UNDELIVERABLE:
            return self._undeliverable(number, "too large to re-encode for RFC 2435")
        try:
            info = scan_jpeg(jpeg)
        except JpegError:  # the index vouched for it: the file changed in place
            self.changed = True
            raise MediaChangedError(f"{self.name} changed on disk while being served") from None
        if info.rfc2435_type is None:
            from .transcode import make_rfc2435_compatible  # Pillow only where needed

            if self.reencoded_frames == 0:
                log.warning(
                    "%s: RFC 2435 cannot carry frame %d as it is (%s); re-encoding such frames "
                    "to baseline 4:2:0 with their own quantization tables (cached)",
                    self.name, number, info.incompatibility,
                )
            try:
                jpeg = make_rfc2435_compatible(jpeg)
            except JpegError as exc:
                return self._undeliverable(number, str(exc))
            info = scan_jpeg(jpeg)
            self.reencoded_frames += 1
        try:
            return tuple(rfc2435.packetize(jpeg, info, max_payload))
        except ValueError as exc:  # e.g. scan data beyond the 24-bit fragment offset
            return self._undeliverable(number, str(exc))

    def _undeliverable(self, number: int, reason: str) -> tuple[bytes, ...]:
        self.index.flags[number] |= FLAG_UNDELIVERABLE
        log.warning("%s: frame %d cannot be sent to standard clients and is skipped: %s",
                    self.name, number, reason)
        return ()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:
            pass


class _Indexing:
    """One indexing in progress, for requests that arrive while it runs."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.media: MjpegFile | None = None
        self.error: MediaError | None = None


class MediaLibrary:
    """Maps request paths to files inside one media folder, and shares their indexes."""

    def __init__(self, root: str, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.root = os.path.realpath(root)
        self._cache_bytes = cache_bytes
        self._files: dict[str, MjpegFile] = {}
        self._failed: dict[str, tuple[tuple[int, int, int], MediaError]] = {}
        self._indexing: dict[str, _Indexing] = {}
        self._lock = threading.Lock()  # guards the three maps, never held while indexing

    def resolve_path(self, request_path: str) -> tuple[str, str]:
        """(real path, name under the root) of a URL path; MediaNotFoundError outside the root."""
        name = urllib.parse.unquote(request_path, errors="strict").strip("/")
        not_found = MediaNotFoundError(f"{request_path[:200]!r}: not found")
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
        """The shared, indexed file for a request path (a MediaError when it cannot be).

        Indexing runs outside the library's lock: requests for other files go on meanwhile,
        and concurrent requests for the same file wait for that one indexing and share its
        result (or its error, which is also remembered until the file changes).
        """
        real, name = self.resolve_path(request_path)
        try:
            st = os.stat(real)
        except OSError:
            raise MediaNotFoundError(f"{name}: not found") from None
        signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            media = self._files.get(real)
            if media is not None and media.signature == signature:
                return media
            failed = self._failed.get(real)
            if failed is not None and failed[0] == signature:
                raise failed[1].copy()
            pending = self._indexing.get(real)
            owner = pending is None
            if owner:
                pending = self._indexing[real] = _Indexing()
        if not owner:
            pending.done.wait()
            if pending.media is None:
                raise pending.error.copy()  # type: ignore[union-attr]
            return pending.media
        media = None
        try:
            media = self._index(real, name)
        except MediaError as exc:
            pending.error = exc
            raise
        finally:
            with self._lock:
                del self._indexing[real]
                if media is not None:
                    self._files[real] = media
                    self._failed.pop(real, None)
                elif pending.error is not None:
                    # Only the file's content is a lasting verdict; a read error (out of
                    # descriptors, say) may pass, so the next request tries again.
                    if isinstance(pending.error, UnsupportedMediaError):
                        self._failed[real] = (signature, pending.error)
                else:  # an unexpected error: the owner reports it, waiters get a MediaIndexingError
                    pending.error = MediaIndexingError(f"{name}: cannot be indexed")
            pending.media = media
            pending.done.set()
        return media

    def _index(self, real: str, name: str) -> MjpegFile:
        try:
            media = MjpegFile(real, name, self._cache_bytes)
        except OSError as exc:
            raise MediaNotFoundError(f"{name}: cannot read: {exc.strerror}") from None
        log.info(
            "indexed %s: %d frames%s, %dx%d (%s layout)",
            name, media.frame_count, "" if media.complete else " so far (the rest as it plays)",
            media.width, media.height, media.index.layout.value,
        )
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
