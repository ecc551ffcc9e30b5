"""sendmmsg(2) through ctypes: one system call for a whole pass's datagrams, for many
sessions, with UDP segmentation offload per message where it is on.

Theory of operation: a :class:`DatagramBatch` owns one fixed buffer (the *arena*) holding
the ``mmsghdr`` array, and after it each added frame's RTP headers and ``iovec`` array.
Payloads are not copied: iovecs point into the (immutable, cached) payload ``bytes`` of
the frame. A frame's layout (which packets form which message, payload addresses and
lengths, the UDP_SEGMENT control block per message) is worked out once per payload tuple
(:func:`frame_plan`, shared by every session sending that frame); adding a session's frame
is then three big-integer sums written into the arena, whatever the number of packets.
:meth:`DatagramBatch.send` makes one ``sendmmsg`` call (more only after a message failed
on its own), and says per added frame how many packets did not go.

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

log = logging.getLogger(__name__)

# Linux UDP generic segmentation offload (linux/udp.h), as in streaming.UDP_SEGMENT.
SOL_UDP = 17
UDP_SEGMENT = 103
MAX_MESSAGES = 1024  # UIO_MAXIOV: the most messages one sendmmsg takes
ARENA_BYTES = 1 << 20  # headers + iovecs of one pass; a fuller pass is sent in parts
_BYTEORDER = sys.byteorder


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


@functools.lru_cache(maxsize=256)
def _header_mask(count: int) -> int:
    """1 in each header iovec's base: adds the address of a frame's header block."""
    return int.from_bytes(_iov_struct(2 * count).pack(*(1, 0, 0, 0) * count), _BYTEORDER)


@functools.lru_cache(maxsize=256)
def _mm_masks(messages: int) -> tuple[int, int, int]:
    """1 in each message's name, namelen and iov fields: add a destination and iovecs."""
    pack = _mm_struct(messages).pack
    return (int.from_bytes(pack(*(1, 0, 0, 0, 0, 0, 0, 0) * messages), _BYTEORDER),
            int.from_bytes(pack(*(0, 1, 0, 0, 0, 0, 0, 0) * messages), _BYTEORDER),
            int.from_bytes(pack(*(0, 0, 1, 0, 0, 0, 0, 0) * messages), _BYTEORDER))


class FramePlan:
    """One frame's messages for any session: which packets go in which message and the
    templates of its iovecs and mmsghdrs, to which a session adds its own addresses."""

    __slots__ = ("payloads", "count", "messages", "packets", "iov_template", "iov_header_mask",
                 "mm_template", "mm_name_mask", "mm_namelen_mask", "mm_iov_mask", "header_bytes")

    def __init__(self, payloads: tuple[bytes, ...], layout: tuple[tuple[int, int, int], ...],
                 header_size: int) -> None:
        self.payloads = payloads  # kept alive: iovecs point into them
        self.count = n = len(payloads)
        self.header_bytes = (header_size * n + 7) & ~7  # iovecs after it stay aligned
        # Header iovecs at offsets into the session's block (its address added per session).
        fields = []
        for i, payload in enumerate(payloads):
            fields += (header_size * i, header_size, address_of(payload), len(payload))
        self.iov_template = int.from_bytes(_iov_struct(2 * n).pack(*fields), _BYTEORDER)
        self.iov_header_mask = _header_mask(n)
        fields = []
        for first, end, size in layout:
            control, control_size = (_segment_control(size)[1], _CMSG_SPACE_U16) \
                if end - first > 1 else (0, 0)
            fields += (0, 0, IOV_SIZE * 2 * first, 2 * (end - first), control, control_size,
                       0, 0)
        self.messages = m = len(layout)
        self.packets = tuple(end - first for first, end, _ in layout)
        self.mm_template = int.from_bytes(_mm_struct(m).pack(*fields), _BYTEORDER)
        self.mm_name_mask, self.mm_namelen_mask, self.mm_iov_mask = _mm_masks(m)


class DatagramBatch:
    """Datagrams of one pass to many destinations through one socket, sent by one sendmmsg.

    Not thread-safe: one batch per sending thread.
    """

    def __init__(self, sock: socket.socket, arena_bytes: int = ARENA_BYTES) -> None:
        self.sock = sock
        self._mm_bytes = MAX_MESSAGES * MMSG_SIZE
        self._arena = bytearray(self._mm_bytes + arena_bytes)
        self._view = memoryview(self._arena)
        self._c_arena = (ctypes.c_char * len(self._arena)).from_buffer(self._arena)
        self._base = ctypes.addressof(self._c_arena)
        self._entries: list[tuple[object, int, FramePlan]] = []
        self._keep: list[bytes] = []  # the sockaddrs in use, alive until the call returns
        self._messages = 0
        self._data = self._mm_bytes
        self.calls = 0  # sendmmsg system calls made
        self.datagrams = 0  # datagrams they carried (GSO batches counted by their segments)

    def __len__(self) -> int:
        return len(self._entries)

    def fits(self, plan: FramePlan) -> bool:
        """Whether ``plan`` fits in an empty batch at all (else: send it the plain way)."""
        return plan.messages <= MAX_MESSAGES and \
            plan.header_bytes + plan.count * 2 * IOV_SIZE <= len(self._arena) - self._mm_bytes

    def add(self, token: object, address: bytes, headers: bytes, plan: FramePlan) -> bool:
        """Queue one frame (``headers``: its packets' headers back to back) to ``address``
        (a packed sockaddr); False when the batch is full (send it, then add again)."""
        data = self._data
        iov_at = data + plan.header_bytes
        end = iov_at + plan.count * 2 * IOV_SIZE
        if self._messages + plan.messages > MAX_MESSAGES or end > len(self._arena):
            return False
        base = self._base
        view = self._view
        view[data:data + len(headers)] = headers
        view[iov_at:end] = (plan.iov_template + (base + data) * plan.iov_header_mask).to_bytes(
            end - iov_at, _BYTEORDER)
        mm_at = self._messages * MMSG_SIZE
        view[mm_at:mm_at + plan.messages * MMSG_SIZE] = (
            plan.mm_template + address_of(address) * plan.mm_name_mask
            + len(address) * plan.mm_namelen_mask + (base + iov_at) * plan.mm_iov_mask
        ).to_bytes(plan.messages * MMSG_SIZE, _BYTEORDER)
        self._keep.append(address)
        self._entries.append((token, self._messages, plan))
        self._messages += plan.messages
        self._data = end
        return True

    def send(self) -> list[tuple[object, int, int, int, bool]]:
        """Send everything queued; for each added frame whose packets did not all go:
        (token, packets dropped, its packets, errno of its first failed message or 0 for a
        full buffer, whether that message was a segmentation-offload batch).

        A full send buffer (EAGAIN) drops the rest of the pass, never retried; a message
        that fails on its own (a bad route, GSO refused) is dropped and the call goes on
        after it, so each further call moves past at least one message.
        """
        count, entries = self._messages, self._entries
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
        result = []
        for token, first, plan in entries:
            if first + plan.messages <= position and not failed:
                self.datagrams += plan.count
                continue
            dropped, first_error, segmented = 0, 0, False
            for m, packets in enumerate(plan.packets, first):
                if m >= position:
                    dropped += packets
                elif m in failed:
                    dropped += packets
                    if not first_error:
                        first_error, segmented = failed[m], packets > 1
            self.datagrams += plan.count - dropped
            if dropped:
                result.append((token, dropped, plan.count, first_error, segmented))
        self._entries, self._keep = [], []
        self._messages, self._data = 0, self._mm_bytes
        return result

    def close(self) -> None:
        self._entries, self._keep = [], []
        del self._c_arena
        self._view.release()
