"""sendmmsg(2) through ctypes: one system call for a whole pass's datagrams, for many
sessions, with UDP segmentation offload per message where it is on.

Theory of operation: a :class:`DatagramBatch` owns one fixed buffer (the *arena*) holding
the ``mmsghdr`` array, and after it each added frame's RTP headers and ``iovec`` array.
Payloads are not copied: iovecs point into the (immutable, cached) payload ``bytes`` of
the frame. A frame's layout (which packets form which message, payload addresses and
lengths, the UDP_SEGMENT control block per message) is worked out once per payload tuple
(:class:`FramePlan`, shared by every session sending that frame). Adding a session's frame
only queues it with the others of its plan; :meth:`DatagramBatch.send` then writes each
plan's group whole, with C-speed operations whatever the number of sessions: their headers
and addresses joined, the plan's iovec and mmsghdr templates repeated, and the addresses
that differ per session (header iovecs, message names, message iovecs: arithmetic
progressions, as the group's blocks lie back to back) written as strided columns of machine
words. It makes one ``sendmmsg`` call (more only after a message failed on its own), and
says per added frame how many packets did not go.

Linux only (CPython on a 64-bit or 32-bit ABI whose layouts are checked at import).
Anything missing (ctypes, libc's sendmmsg, a layout that does not match) makes
:func:`available` false, and callers keep their one-sendmsg-per-batch path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import logging
import socket
import struct
import sys
from array import array

log = logging.getLogger(__name__)

# Linux UDP generic segmentation offload (linux/udp.h), as in streaming.UDP_SEGMENT.
SOL_UDP = 17
UDP_SEGMENT = 103
MAX_MESSAGES = 1024  # UIO_MAXIOV: the most messages one sendmmsg takes
ARENA_BYTES = 1 << 20  # headers + iovecs of one pass; a fuller pass is sent in parts


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.c_void_p), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


class _CMsgHdr(ctypes.Structure):
    _fields_ = [("len", ctypes.c_size_t), ("level", ctypes.c_int), ("type", ctypes.c_int)]


IOV_SIZE = ctypes.sizeof(_IoVec)
MMSG_SIZE = ctypes.sizeof(_MMsgHdr)
_PTR = ctypes.sizeof(ctypes.c_void_p)
_CMSG_ALIGN = _PTR  # glibc aligns control messages to sizeof(size_t)
_CMSG_HDR = ctypes.sizeof(_CMsgHdr)
_CMSG_SPACE_U16 = (_CMSG_HDR + 2 + _CMSG_ALIGN - 1) // _CMSG_ALIGN * _CMSG_ALIGN


def _bytes_data_offset() -> int | None:
    """Where a ``bytes`` object's data starts relative to ``id()`` (CPython), or None.

    ``ctypes.cast`` gives the same address but costs over a microsecond a call, too much per
    payload at one viewer; the offset is checked here against ctypes on a few objects.
    """
    offsets = {ctypes.cast(b, ctypes.c_void_p).value - id(b)
               for b in (b"\x01" * 7, b"\x02" * 300, bytes(range(40)))}
    return offsets.pop() if len(offsets) == 1 and sys.implementation.name == "cpython" else None


def _load() -> tuple[object | None, int | None, str]:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        function = libc.sendmmsg
    except (OSError, AttributeError) as exc:
        return None, None, f"no sendmmsg in libc ({exc})"
    function.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
    function.restype = ctypes.c_int
    offset = _bytes_data_offset()
    if offset is None:
        return None, None, "bytes objects' data cannot be addressed here"
    return function, offset, ""


_sendmmsg, _DATA_OFFSET, _unavailable_reason = _load()
_reported = False


def available(sock: socket.socket | None = None) -> bool:
    """Whether batches can be sent (and, given ``sock``, whether the kernel takes sendmmsg
    on it: an empty call). The first "no" is logged once, with its reason."""
    global _sendmmsg, _unavailable_reason, _reported
    if _sendmmsg is not None and sock is not None:
        if _sendmmsg(sock.fileno(), None, 0, 0) < 0:
            _unavailable_reason = f"sendmmsg failed: {errno.errorcode.get(ctypes.get_errno())}"
            _sendmmsg = None
    if _sendmmsg is None and not _reported:
        _reported = True
        log.info("batched sends off (%s): one sendmsg per datagram or segment batch",
                 _unavailable_reason)
    return _sendmmsg is not None


def disable(reason: str) -> None:
    """Turn batches off for this process (tests of the fallback path, a failing kernel)."""
    global _sendmmsg, _unavailable_reason
    _sendmmsg, _unavailable_reason = None, reason


def address_of(data: bytes) -> int:
    """The address of an immutable ``bytes`` object's data (it never moves in CPython)."""
    return id(data) + _DATA_OFFSET  # type: ignore[operator]


def sockaddr(family: int, address: tuple) -> bytes | None:
    """A ``struct sockaddr_in``/``sockaddr_in6`` for ``address``; None when it cannot be
    made here (a scoped IPv6 name, a host name): such a sink keeps the plain path."""
    try:
        if family == socket.AF_INET:
            return struct.pack("=H", socket.AF_INET) + struct.pack(
                "!H4s8x", address[1], socket.inet_pton(socket.AF_INET, address[0]))
        if family == socket.AF_INET6:
            flow = address[2] if len(address) > 2 else 0
            scope = address[3] if len(address) > 3 else 0
            return struct.pack("=H", socket.AF_INET6) + struct.pack(
                "!HI16s", address[1], flow, socket.inet_pton(socket.AF_INET6, address[0])
            ) + struct.pack("=I", scope)
    except (OSError, ValueError, struct.error):
        return None
    return None


@functools.cache
def _segment_control(size: int) -> tuple[bytes, int]:
    """The UDP_SEGMENT control block for ``size`` (kept for good: its address is in templates)."""
    block = struct.pack(f"@NiiH{_CMSG_SPACE_U16 - _CMSG_HDR - 2}x", _CMSG_HDR + 2, SOL_UDP,
                        UDP_SEGMENT, size)
    return block, address_of(block)


# Native layouts of one iovec and one mmsghdr for struct, checked against ctypes in _layouts_ok.
_IOV_FORMAT = "PN"
_MSGHDR_FORMAT = "PIPNPNi"
_MM_FORMAT = (_MSGHDR_FORMAT + f"{ctypes.sizeof(_MsgHdr) - struct.calcsize(_MSGHDR_FORMAT)}x"
              + "I" + f"{MMSG_SIZE - ctypes.sizeof(_MsgHdr) - 4}x")


def _layouts_ok() -> bool:
    try:
        iov = _IoVec.from_buffer_copy(struct.pack("@" + _IOV_FORMAT, 0x1234, 56))
        raw = struct.pack("@" + _MM_FORMAT, 1, 2, 3, 4, 5, 6, 7, 8)
        mm = _MMsgHdr.from_buffer_copy(raw)
    except (struct.error, ValueError):
        return False
    h = mm.hdr
    return (struct.calcsize("@" + _IOV_FORMAT) == IOV_SIZE and len(raw) == MMSG_SIZE
            and (iov.base, iov.len) == (0x1234, 56)
            and (h.name, h.namelen, h.iov, h.iovlen, h.control, h.controllen, h.flags,
                 mm.len) == (1, 2, 3, 4, 5, 6, 7, 8))


if not _layouts_ok():
    _sendmmsg, _unavailable_reason = None, "struct layouts do not match this ABI's"


@functools.lru_cache(maxsize=64)
def _iov_struct(iovecs: int) -> struct.Struct:
    return struct.Struct("@" + _IOV_FORMAT * iovecs)


@functools.lru_cache(maxsize=64)
def _mm_struct(messages: int) -> struct.Struct:
    return struct.Struct("@" + _MM_FORMAT * messages)


# The arena seen as machine words (unsigned long: the size of a pointer and of size_t on
# Linux's ABIs), and where the per-destination fields sit in those of an iovec and mmsghdr.
_WORD = ctypes.sizeof(ctypes.c_ulong)
_IOV_WORDS = IOV_SIZE // _WORD
_MM_WORDS = MMSG_SIZE // _WORD
_MM_NAME = _MsgHdr.name.offset // _WORD
_MM_IOV = _MsgHdr.iov.offset // _WORD
_WORDS_OK = (_WORD == _PTR == ctypes.sizeof(ctypes.c_size_t) and IOV_SIZE % _WORD == 0
             and MMSG_SIZE % _WORD == 0 and _MsgHdr.name.offset % _WORD == 0
             and _MsgHdr.iov.offset % _WORD == 0)
if not _WORDS_OK:
    _sendmmsg, _unavailable_reason = None, "iovec/mmsghdr fields are not word-aligned here"


def _align(offset: int) -> int:
    return (offset + _WORD - 1) // _WORD * _WORD


class FramePlan:
    """One frame's messages for any session: which packets go in which message and the
    templates of its iovecs and mmsghdrs, to which a session adds its own addresses."""

    __slots__ = ("payloads", "count", "messages", "packets", "header_size", "iov_template",
                 "message_iovs", "_mm_templates")

    def __init__(self, payloads: tuple[bytes, ...], layout: tuple[tuple[int, int, int], ...],
                 header_size: int) -> None:
        self.payloads = payloads  # kept alive: iovecs point into them
        self.count = n = len(payloads)
        self.header_size = header_size
        # Header iovecs' bases are left 0: written per session by DatagramBatch.send.
        fields = []
        for payload in payloads:
            fields += (0, header_size, address_of(payload), len(payload))
        self.iov_template = _iov_struct(2 * n).pack(*fields)
        self.messages = len(layout)
        self.packets = tuple(end - first for first, end, _ in layout)
        # Each message's first iovec, from the start of the session's iovecs.
        self.message_iovs = tuple(IOV_SIZE * 2 * first for first, _, _ in layout)
        layout_fields = []
        for first, end, size in layout:
            control, control_size = (_segment_control(size)[1], _CMSG_SPACE_U16) \
                if end - first > 1 else (0, 0)
            layout_fields.append((2 * (end - first), control, control_size))
        self._mm_templates: dict[int, bytes] = {}
        self._mm_templates[0] = _mm_struct(self.messages).pack(
            *(v for iovlen, control, size in layout_fields
              for v in (0, 0, 0, iovlen, control, size, 0, 0)))

    def mm_template(self, namelen: int) -> bytes:
        """The frame's mmsghdrs with ``namelen``; names and iovecs left 0 (per session)."""
        template = self._mm_templates.get(namelen)
        if template is None:
            fields = list(_mm_struct(self.messages).unpack(self._mm_templates[0]))
            fields[1::8] = [namelen] * self.messages
            template = self._mm_templates[namelen] = _mm_struct(self.messages).pack(*fields)
        return template


class DatagramBatch:
    """Datagrams of one pass to many destinations through one socket, sent by one sendmmsg.

    Not thread-safe: one batch per sending thread.
    """

    def __init__(self, sock: socket.socket, arena_bytes: int = ARENA_BYTES) -> None:
        self.sock = sock
        self._mm_bytes = MAX_MESSAGES * MMSG_SIZE
        self._arena = bytearray(self._mm_bytes + arena_bytes + _WORD)
        self._c_arena = (ctypes.c_char * len(self._arena)).from_buffer(self._arena)
        address = ctypes.addressof(self._c_arena)
        skip = _align(address) - address  # words of the arena on word boundaries
        self._view = memoryview(self._arena)[skip:skip + self._mm_bytes + arena_bytes]
        self._words = self._view.cast("L")
        self._base = address + skip
        self._capacity = arena_bytes  # for headers, addresses and iovecs
        # Frames queued, by (plan, address length): their tokens, addresses and headers.
        self._groups: dict[tuple[FramePlan, int], tuple[list, list, list]] = {}
        self._messages = 0
        self._bytes = 0  # of the capacity they need
        self.calls = 0  # sendmmsg system calls made
        self.datagrams = 0  # datagrams they carried (GSO batches counted by their segments)
        self.frames = 0  # frames queued since the last send

    def __len__(self) -> int:
        return self._messages

    def add(self, token: object, address: bytes, headers: bytes, plan: FramePlan) -> bool:
        """Queue one frame (``headers``: its packets' headers back to back) to ``address``
        (a packed sockaddr); False when the batch is full (send it, then add again)."""
        messages = self._messages + plan.messages
        needed = self._bytes + _needed(plan, len(headers), len(address))
        if messages > MAX_MESSAGES or needed > self._capacity:
            return False
        key = (plan, len(address))
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = ([], [], [])
        group[0].append(token)
        group[1].append(address)
        group[2].append(headers)
        self._messages, self._bytes = messages, needed
        self.frames += 1
        return True

    def _write(self) -> list[tuple[list, int, FramePlan]]:
        """Lay every group out in the arena: (tokens, first message, plan) per group."""
        view, words, base = self._view, self._words, self._base
        data = self._mm_bytes
        message = 0
        placed = []
        for (plan, namelen), (tokens, addresses, headers) in self._groups.items():
            sessions = len(tokens)
            block = b"".join(headers)
            headers_at = data
            view[data:data + len(block)] = block
            data = _align(data + len(block))
            block = b"".join(addresses)
            names_at = data
            view[data:data + len(block)] = block
            data = _align(data + len(block))
            iovecs = 2 * plan.count  # per session
            iov_at = data
            end = data + iovecs * IOV_SIZE * sessions
            view[iov_at:end] = plan.iov_template * sessions
            first = iov_at // _WORD
            step = plan.header_size
            words[first:first + iovecs * _IOV_WORDS * sessions:2 * _IOV_WORDS] = array(
                "L", range(base + headers_at, base + headers_at + step * plan.count * sessions,
                           step))
            data = end
            mm_at = message * MMSG_SIZE
            m = plan.messages
            view[mm_at:mm_at + m * MMSG_SIZE * sessions] = plan.mm_template(namelen) * sessions
            stride = m * _MM_WORDS
            for k, offset in enumerate(plan.message_iovs):
                first = mm_at // _WORD + k * _MM_WORDS
                last = first + stride * sessions
                words[first + _MM_NAME:last:stride] = array(
                    "L", range(base + names_at, base + names_at + namelen * sessions, namelen))
                start = base + iov_at + offset
                words[first + _MM_IOV:last:stride] = array(
                    "L", range(start, start + iovecs * IOV_SIZE * sessions, iovecs * IOV_SIZE))
            placed.append((tokens, message, plan))
            message += m * sessions
        return placed

    def send(self) -> list[tuple[object, int, int, int, bool]]:
        """Send everything queued; for each added frame whose packets did not all go:
        (token, packets dropped, its packets, errno of its first failed message or 0 for a
        full buffer, whether that message was a segmentation-offload batch).

        A full send buffer (EAGAIN) drops the rest of the pass, never retried; a message
        that fails on its own (a bad route, GSO refused) is dropped and the call goes on
        after it, so each further call moves past at least one message.
        """
        if not self._messages:
            return []
        placed = self._write()
        count = self._messages
        failed: dict[int, int] = {}
        position = 0
        fd = self.sock.fileno()
        while position < count:
            sent = _sendmmsg(fd, self._base + position * MMSG_SIZE,  # type: ignore[misc]
                             count - position, socket.MSG_DONTWAIT)
            self.calls += 1
            if sent > 0:
                position += sent
                continue
            if sent == 0:
                break  # nothing taken (not expected): the rest is dropped, never spun on
            error = ctypes.get_errno()
            if error == errno.EINTR:
                continue
            if error in (errno.EAGAIN, errno.ENOBUFS):
                break  # full: the rest of the pass is dropped
            failed[position] = error
            position += 1
        self._groups = {}
        self._messages = self._bytes = self.frames = 0
        result = []
        for tokens, first, plan in placed:
            m = plan.messages
            if first + m * len(tokens) <= position and not failed:
                self.datagrams += plan.count * len(tokens)
                continue
            for token in tokens:
                dropped, first_error, segmented = 0, 0, False
                for index, packets in enumerate(plan.packets, first):
                    if index >= position:
                        dropped += packets
                    elif index in failed:
                        dropped += packets
                        if not first_error:
                            first_error, segmented = failed[index], packets > 1
                self.datagrams += plan.count - dropped
                if dropped:
                    result.append((token, dropped, plan.count, first_error, segmented))
                first += m
        return result

    def close(self) -> None:
        self._groups = {}
        self._words.release()
        self._view.release()
        del self._c_arena


def _needed(plan: FramePlan, header_bytes: int, namelen: int) -> int:
    """Arena bytes one more frame of ``plan`` may take (alignment of its group included)."""
    return header_bytes + namelen + plan.count * 2 * IOV_SIZE + 2 * _WORD
