"""Sending media: the pacing scheduler, the transports, RTCP sender reports.

Theory of operation: one scheduler thread serves every playing session. Its
heap holds one entry per playing session, keyed by the absolute time its next
frame is due: ``start + (frame - first_frame) / fps``. Deadlines are computed
from the frame number, never accumulated, so a stream cannot drift however
long it plays. A frame's payloads come from the file's shared cache, and its
``FrameShare`` (payloads, sendmmsg plans) is made ahead once for all sessions;
only the 12-byte RTP headers are made per session.

Every session at a frame rate is on that rate's one grid of deadlines, so they
share one pass (one wake-up) per frame interval (``PASS_QUANTUM``); a pass's
UDP datagrams for all its sessions go out in one ``sendmmsg`` (``UdpBatch``,
where the kernel and ctypes allow; else a sendmsg per segmentation-offload batch
or datagram), each session's headers written as one block per frame.

Sends never block the scheduler: UDP sockets are non-blocking (a full buffer
drops the packet and counts it), and interleaved frames are written at once
with MSG_DONTWAIT as far as the connection's socket takes them, the rest waiting
in its bounded queue for the one writer-loop thread shared by all connections
(a slow reader loses frames, nobody else waits). An entry whose session has moved on (PAUSE, a new
PLAY, TEARDOWN: ``session.generation`` changed) is simply discarded.
"""

from __future__ import annotations

import collections
import functools
import heapq
import itertools
import logging
import os
import queue
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from . import sendmmsg
from .ingest import RtpJpegIngest
from .live import LivePaths
from .media import READ_AHEAD_FRAMES, MediaError
from .metrics import SessionTotals
from .ports import Selector, bind_rtp_pair
from .rtcp import (
    Bye,
    ReceiverReport,
    RtcpError,
    SenderReport,
    SourceDescription,
    build_compound,
    ntp_from_unix,
    parse_compound,
)
from .rtp import PT_JPEG, RTP_HEADER_SIZE, pack_headers
from .rtsp import format_interleaved
from .session import (
    LowerTransport,
    PayloadFormat,
    Session,
    SessionRegistry,
    SessionState,
    TransportChoice,
)

log = logging.getLogger(__name__)

SENDER_REPORT_INTERVAL = 5.0
CNAME = "mjpeg-rtsp@" + socket.gethostname()


class Sink(Protocol):
    """Where one session's packets go: UDP (standard or textbook payloads), interleaved on
    its RTSP connection, and (next) HTTP viewers. A send never blocks the fan-out: what
    cannot go now is dropped and counted."""

    def send_rtp(self, headers: Sequence[bytes], share: FrameShare) -> int:
        """Send one frame's packets (a header per payload of ``share``); return how many
        were dropped."""
        ...

    def send_rtcp(self, data: bytes) -> None: ...


class MediaSource(Protocol):
    """What the scheduler streams from: a file today (:class:`~mjpeg_rtsp.media.MjpegFile`);
    a live source and a publisher are to be further kinds of it. Payloads are built once per
    frame and shared by every session that sends that frame."""

    @property
    def frame_count(self) -> int: ...

    def rtp_payloads(self, number: int, max_payload: int, ahead: int = 1) -> tuple[bytes, ...]:
        """RFC 2435 payloads of frame ``number`` (made with the next ``ahead - 1`` if not
        cached); empty when it cannot be carried."""
        ...

    def raw_payload(self, number: int) -> tuple[bytes, ...]:
        """The textbook's one whole JPEG; empty when it does not fit in one datagram."""
        ...

    def jpeg_payload(self, number: int) -> tuple[bytes, ...]:
        """The whole JPEG of any size (HTTP viewers)."""
        ...


# Linux UDP generic segmentation offload (linux/udp.h): one sendmsg carries up to 64 equal
# datagrams, which the kernel splits; far cheaper per packet than one syscall each.
UDP_SEGMENT = 103
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000


def gso_supported(sock: socket.socket) -> bool:
    """Whether this kernel accepts UDP_SEGMENT on ``sock``'s family (sent to a throwaway socket)."""
    probe = socket.socket(sock.family, socket.SOCK_DGRAM)
    try:
        probe.bind((sock.getsockname()[0], 0))
        target = probe.getsockname()[:2]
        segment = struct.pack("=H", 100)
        sock.sendmsg([b"\0" * 200], [(socket.SOL_UDP, UDP_SEGMENT, segment)], 0, target)
        return True
    except OSError:
        return False
    finally:
        probe.close()


@functools.lru_cache(maxsize=64)
def gso_layout(payloads: tuple[bytes, ...]) -> tuple[tuple[int, int, int], ...]:
    """Batches for UDP_SEGMENT of one frame's RTP packets: (first, end, segment size).

    In a batch all datagrams have the segment size but the last, which may be shorter.
    Every session sends the same payload tuple of a frame (only the 12-byte headers
    differ), so the layout is worked out once per frame, not once per session.
    """
    batches = []
    first = size = 0
    for index, payload in enumerate(payloads):
        length = RTP_HEADER_SIZE + len(payload)
        count = index - first
        if count and (
            length > size
            or count == GSO_MAX_SEGMENTS
            or (count + 1) * size > GSO_MAX_BYTES
            or RTP_HEADER_SIZE + len(payloads[index - 1]) < size  # a short packet ends a batch
        ):
            batches.append((first, index, size))
            first = index
        if index == first:
            size = length
    if payloads:
        batches.append((first, len(payloads), size))
    return tuple(batches)


@dataclass
class SendCounters:
    """System calls of the send paths and what they carried (process-wide, for the
    benchmark's syscalls per frame; updated without locks, so approximate under races)."""

    udp_frames: int = 0  # frames handed to UDP sinks (one per session per frame)
    udp_sendmsg: int = 0  # sendmsg calls: a datagram, or a segmentation-offload batch
    udp_sendmmsg: int = 0  # sendmmsg calls, each carrying many sessions' datagrams
    tcp_frames: int = 0  # media frames (RTP or RTCP) queued on RTSP connections
    tcp_sendmsg: int = 0  # sendmsg calls writing them (and replies)

    def summary(self) -> str:
        udp = self.udp_sendmsg + self.udp_sendmmsg
        return (f"UDP {self.udp_frames} frames, {self.udp_sendmmsg} sendmmsg + "
                f"{self.udp_sendmsg} sendmsg calls ({udp / max(self.udp_frames, 1):.3f} per "
                f"frame); interleaved {self.tcp_frames} frames, {self.tcp_sendmsg} sendmsg "
                f"calls ({self.tcp_sendmsg / max(self.tcp_frames, 1):.3f} per frame)")


SEND_COUNTERS = SendCounters()


class UdpSink:
    """Packets of one session over UDP, through the server's shared RTP/RTCP sockets."""

    def __init__(
        self,
        rtp_socket: socket.socket,
        rtcp_socket: socket.socket,
        rtp_address: tuple[str, int],
        rtcp_address: tuple[str, int] | None,
        gso: bool = False,
    ) -> None:
        self.rtp_socket, self.rtcp_socket = rtp_socket, rtcp_socket
        self.rtp_address, self.rtcp_address = rtp_address, rtcp_address
        self.gso = gso
        self.errors = 0
        # The destination for batched sends (None: this address goes the plain way).
        self.sockaddr = sendmmsg.sockaddr(rtp_socket.family, rtp_address)

    def send_rtp(self, headers: Sequence[bytes], share: FrameShare) -> int:
        """Send one frame's packets (a header per payload); return how many were dropped."""
        payloads = share.payloads
        SEND_COUNTERS.udp_frames += 1
        if self.gso and len(payloads) > 1:
            return self._send_segmented(headers, payloads)
        return sum(self._send_one(h, p) for h, p in zip(headers, payloads, strict=True))

    def _send_segmented(self, headers: list[bytes], payloads: tuple[bytes, ...]) -> int:
        dropped = 0
        for first, end, size in gso_layout(payloads):
            if end - first == 1:
                dropped += self._send_one(headers[first], payloads[first])
                continue
            parts = [part for i in range(first, end) for part in (headers[i], payloads[i])]
            control = [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))]
            SEND_COUNTERS.udp_sendmsg += 1
            try:
                self.rtp_socket.sendmsg(parts, control, 0, self.rtp_address)
            except BlockingIOError:
                dropped += end - first
            except OSError as exc:
                self.offload_failed(exc)
                dropped += sum(self._send_one(headers[i], payloads[i]) for i in range(first, end))
        return dropped

    def offload_failed(self, exc: OSError) -> None:
        """E.g. a route whose MTU is below the segment size: datagram by datagram for good."""
        log.info("UDP segmentation offload to %s failed (%s); sending datagram by datagram",
                 self.rtp_address, exc)
        self.gso = False

    def _send_one(self, header: bytes, payload: bytes) -> int:
        SEND_COUNTERS.udp_sendmsg += 1
        try:
            self.rtp_socket.sendmsg((header, payload), (), 0, self.rtp_address)
            return 0
        except BlockingIOError:
            return 1
        except OSError as exc:
            self._error(exc)
            return 1

    def send_rtcp(self, data: bytes) -> None:
        if self.rtcp_address is None:
            return
        try:
            self.rtcp_socket.sendto(data, self.rtcp_address)
        except OSError as exc:
            self._error(exc)

    def _error(self, exc: OSError) -> None:
        self.errors += 1
        if self.errors == 1:
            log.warning("sending to %s failed: %s", self.rtp_address, exc)


def _plain_layout(payloads: tuple[bytes, ...]) -> tuple[tuple[int, int, int], ...]:
    return tuple((i, i + 1, RTP_HEADER_SIZE + len(p)) for i, p in enumerate(payloads))


def _frame_plan(payloads: tuple[bytes, ...], gso: bool) -> sendmmsg.FramePlan | None:
    """A frame's sendmmsg messages (segmentation-offload batches, or one per datagram),
    worked out once for all the sessions sending that payload tuple (FrameShare.plan)."""
    if not all(type(p) is bytes for p in payloads):
        return None  # iovecs point into immutable bytes only
    layout = gso_layout(payloads) if gso and len(payloads) > 1 else _plain_layout(payloads)
    return sendmmsg.FramePlan(payloads, layout, RTP_HEADER_SIZE)


class FrameShare:
    """One frame's payloads in one format, and what every session sending them shares: the
    packet count, the octets, the sendmmsg plans and interleaved prefixes (worked out at
    first use). Made once per frame, not once per session: by the scheduler ahead of the
    playing position (files), by the fan-out per format (live)."""

    __slots__ = ("payloads", "count", "octets", "_plans", "_prefixes", "last")

    def __init__(self, payloads: tuple[bytes, ...]) -> None:
        self.payloads = payloads
        self.count = len(payloads)
        self.octets = sum(map(len, payloads))
        self._plans: list = [False, False]  # by GSO on; False: not worked out yet
        self._prefixes: dict[int, tuple[bytes, ...]] = {}  # by interleaved channel
        self.last = False  # the last frame made ahead: the next ones are made after it goes

    def plan(self, gso: bool) -> sendmmsg.FramePlan | None:
        """The sendmmsg plan for sinks with segmentation offload ``gso`` (None: not batchable)."""
        plan = self._plans[gso]
        if plan is False:
            plan = self._plans[gso] = _frame_plan(self.payloads, gso)
        return plan

    def interleaved_prefixes(self, channel: int) -> tuple[bytes, ...]:
        """Each packet's ``$``, channel and length (RFC 2326 section 10.12)."""
        prefixes = self._prefixes.get(channel)
        if prefixes is None:
            prefixes = self._prefixes[channel] = tuple(
                struct.pack("!cBH", b"$", channel, RTP_HEADER_SIZE + len(p))
                for p in self.payloads)
        return prefixes


class UdpBatch:
    """One pass's frames to UDP sinks, sent together by one ``sendmmsg`` (sendmmsg.py).

    Used by one thread. The datagrams are those the sinks' own path would send, byte for
    byte (segmentation-offload batches where the sink has it on, else one datagram per
    message). What a full send buffer or a failing message keeps from going is counted on
    its session at :meth:`flush`, which is called outside the sessions' guards.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._batch = sendmmsg.DatagramBatch(sock)
        self._dropped: list[tuple[object, int, int, int, bool]] = []

    def add(self, session: Session, sink: UdpSink, headers: bytes, share: FrameShare) -> bool:
        """Queue one frame (``headers``: its packets' headers back to back); False when it
        must go the sink's own way (no packed address, payloads not bytes, too large)."""
        address = sink.sockaddr
        if address is None:
            return False
        plan = share.plan(sink.gso)
        if plan is None:
            return False
        token = (session, sink)
        if not self._batch.add(token, address, headers, plan):
            if not len(self._batch):
                return False  # too large for any batch
            self._send()  # full: this part of the pass goes now
            return self.add(session, sink, headers, share)
        return True

    def _send(self) -> None:
        calls, frames = self._batch.calls, self._batch.frames
        self._dropped += self._batch.send()
        SEND_COUNTERS.udp_sendmmsg += self._batch.calls - calls
        SEND_COUNTERS.udp_frames += frames

    def flush(self) -> None:
        """Send what is queued and count what did not go on its sessions."""
        if len(self._batch):
            self._send()
        dropped, self._dropped = self._dropped, []
        for (session, sink), count, packets, error, segmented in dropped:  # type: ignore[misc]
            if error:
                exc = OSError(error, os.strerror(error))
                if segmented:
                    sink.offload_failed(exc)
                else:
                    sink._error(exc)
            with session.guard:
                session.packets_sent -= count
                session.packets_dropped += count
                if count == packets:
                    session.frames_dropped += 1

    def close(self) -> None:
        self._batch.close()


# Most buffers one sendmsg takes (Linux IOV_MAX); a longer backlog goes in several calls.
IOV_LIMIT = 1024


class _WriterLoop:
    """One thread for every RTSP connection whose socket is full: it waits for them to be
    writable and writes what they have queued. Connections that keep up never involve it
    (their writers write at once, from the sending thread, without blocking). The thread
    exists only while some connection is waiting, and closes its descriptors when it ends.

    Registration changes are requests the thread carries out itself (woken through a
    socket pair), so any selector kind is safe and a closed socket is never left in it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[tuple[ConnectionWriter, threading.Event | None]] = []
        self._thread: threading.Thread | None = None
        self._wake: socket.socket | None = None

    def watch(self, writer: ConnectionWriter) -> None:
        """Write ``writer``'s queue once its socket is writable (called with its lock held)."""
        with self._lock:
            self._requests.append((writer, None))
            if self._thread is None:
                wake, self._wake = socket.socketpair()
                wake.setblocking(False)
                self._wake.setblocking(False)
                self._thread = threading.Thread(target=self._run, args=(wake,),
                                                name="interleaved-writer", daemon=True)
                self._thread.start()
            else:
                self._poke()

    def forget(self, writer: ConnectionWriter) -> threading.Event | None:
        """Stop watching ``writer`` (before its socket closes); the event is set once done."""
        with self._lock:
            if self._thread is None:
                return None
            done = threading.Event()
            self._requests.append((writer, done))
            self._poke()
            return done

    def _poke(self) -> None:
        try:
            self._wake.send(b"\0")  # type: ignore[union-attr]
        except BlockingIOError:
            pass  # already awake-pending

    def _run(self, wake: socket.socket) -> None:
        selector = Selector()
        selector.register(wake, selectors.EVENT_READ)
        watched: set[ConnectionWriter] = set()
        try:
            while True:
                with self._lock:
                    requests, self._requests = self._requests, []
                    for writer, done in requests:
                        if done is None and writer not in watched and not writer.closed:
                            try:
                                selector.register(writer._out_sock, selectors.EVENT_WRITE,
                                                  writer)
                            except (OSError, ValueError):  # closed under us: nothing to write
                                continue
                            watched.add(writer)
                        elif done is not None:
                            if writer in watched:
                                selector.unregister(writer._out_sock)
                                watched.discard(writer)
                            done.set()
                    if not watched:
                        self._thread = None  # the next watch() starts a new thread
                        self._wake.close()  # type: ignore[union-attr]
                        self._wake = None
                        return
                for key, _ in selector.select(timeout=1.0):
                    writer = key.data
                    if writer is None:
                        try:
                            wake.recv(4096)
                        except BlockingIOError:
                            pass
                    elif writer._on_writable():
                        selector.unregister(writer._out_sock)
                        watched.discard(writer)
        finally:
            selector.close()
            wake.close()


_WRITER_LOOP = _WriterLoop()


# Media frames a connection may have waiting beyond what its kernel send buffer holds (that
# is megabytes already, autotuned): about a second at 30 fps; a reader further behind loses
# frames rather than have them arrive later and later.
MAX_QUEUED_FRAMES = 32


class ConnectionWriter:
    """Serialises writes to one RTSP connection: replies, and media frames from a bounded queue.

    Writes never block the sending thread: it writes with MSG_DONTWAIT what the socket takes
    at once; the rest waits in the queue for the shared writer loop. Replies go out whole
    and in order, ahead of queued media but never inside a ``$`` frame already begun; the
    caller of :meth:`send_reply` waits until its reply is written (as a blocking send did).
    More than ``max_queued_frames`` media frames waiting (a slow reader) drops the new ones,
    counted in :attr:`frames_dropped`; other connections never wait for it.
    """

    def __init__(self, sock: socket.socket, max_queued_frames: int = MAX_QUEUED_FRAMES) -> None:
        self.sock = sock
        # A socket with a timeout (its owner's bound on a send to a stalled client) makes
        # Python wait for room before every send, whatever the flags: writes go through a
        # duplicate without one (the descriptor is non-blocking already, as a timeout makes
        # it), and a reply waits at most that long. A blocking socket is written as it is,
        # MSG_DONTWAIT keeping every write from blocking.
        self.reply_timeout = sock.gettimeout() or None  # 0.0: a non-blocking socket
        self._out_sock = sock
        if self.reply_timeout is not None:
            self._out_sock = socket.fromfd(sock.fileno(), sock.family, sock.type)
            self._out_sock.setblocking(False)
        self.max_queued_frames = max_queued_frames
        self._lock = threading.Lock()
        self._written = threading.Condition(self._lock)
        self._replies: collections.deque[tuple[int, bytes]] = collections.deque()
        self._media: collections.deque[tuple[list, int]] = collections.deque()  # (buffers, bytes)
        self._out: list = []  # buffers handed to the socket in part: finished before others
        self._out_reply = 0  # the last reply (ticket) among them
        self._out_frames = 0  # media frames among them
        self._out_bytes = 0  # and their bytes
        self._tickets = 0
        self._replies_done = 0
        self._watched = False  # the writer loop is waiting for the socket
        self.closed = False
        self.frames_dropped = 0

    def send_reply(self, data: bytes) -> None:
        """Write one reply, after what is already on its way; OSError once the connection
        has failed or closed."""
        with self._lock:
            if self.closed:
                raise OSError("connection closed")
            self._tickets += 1
            ticket = self._tickets
            self._replies.append((ticket, data))
            if not self._watched:
                self._pump()
            deadline = None if self.reply_timeout is None else \
                time.monotonic() + self.reply_timeout
            while self._replies_done < ticket and not self.closed:
                left = 1.0 if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the client has not read a reply for "
                                       f"{self.reply_timeout:g} s")
                self._written.wait(min(left, 1.0))
            if self._replies_done < ticket:
                raise OSError("connection closed before the reply was written")

    def send_media(self, data: bytes | list, size: int | None = None) -> bool:
        """Queue one frame's worth of ``$`` frames (bytes, or a list of buffers to write back
        to back, of ``size`` bytes in all); False (and dropped) when the queue is full or
        the connection gone."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            parts, size = [data], len(data)
        else:
            parts = data
            if size is None:
                size = sum(map(len, parts))
        with self._lock:
            if self.closed:
                return False
            if len(self._media) + self._out_frames > self.max_queued_frames:
                self.frames_dropped += 1
                return False
            self._media.append((parts, size))
            SEND_COUNTERS.tcp_frames += 1
            if not self._watched:
                self._pump()
            return True

    def _pump(self) -> None:
        """Write what the socket takes now (lock held); hand the rest to the writer loop."""
        while True:
            if not self._out and not self._fill():
                return
            out = self._out
            try:
                sent = self._out_sock.sendmsg(out if len(out) <= IOV_LIMIT else out[:IOV_LIMIT],
                                              (), socket.MSG_DONTWAIT)
            except BlockingIOError:
                if not self._watched:
                    self._watched = True
                    _WRITER_LOOP.watch(self)
                return
            except OSError:
                self._fail()
                return
            finally:
                SEND_COUNTERS.tcp_sendmsg += 1
            self._advance(sent)

    def _fill(self) -> bool:
        """Next buffers to write: waiting replies first, then whole media frames."""
        out = self._out
        while self._replies:
            self._out_reply, data = self._replies.popleft()
            out.append(data)
            self._out_bytes += len(data)
        while self._media and (not out or len(out) + len(self._media[0][0]) <= IOV_LIMIT):
            parts, size = self._media.popleft()
            out.extend(parts)
            self._out_bytes += size
            self._out_frames += 1
        return bool(out)

    def _advance(self, sent: int) -> None:
        out = self._out
        if sent == self._out_bytes:
            out.clear()  # all of it (the common case): no walk over the buffers
        else:
            self._out_bytes -= sent
            done = 0
            for part in out:
                size = len(part)
                if sent < size:
                    break
                sent -= size
                done += 1
            del out[:done]
            if out and sent:
                out[0] = memoryview(out[0])[sent:]
        if not out:
            self._out_frames = self._out_bytes = 0
        if not out and self._out_reply > self._replies_done:
            self._replies_done = self._out_reply
            self._written.notify_all()

    def _on_writable(self) -> bool:
        """The writer loop's turn: write on; True when nothing is left (stop watching)."""
        with self._lock:
            if not self.closed:
                self._pump()
            if self.closed or not (self._out or self._replies or self._media):
                self._watched = False
                return True
            return False

    def _fail(self) -> None:
        self.closed = True
        self._replies.clear()
        self._media.clear()
        self._out.clear()
        self._out_bytes = 0
        self._written.notify_all()

    def close(self) -> None:
        with self._lock:
            self._fail()
            watched = self._watched
        if watched:
            done = _WRITER_LOOP.forget(self)
            if done is not None:
                done.wait(timeout=2)
        if self._out_sock is not self.sock:
            self._out_sock.close()


class InterleavedSink:
    """Packets of one session as ``$`` frames on its RTSP connection (RFC 2326 section 10.12)."""

    def __init__(self, writer: ConnectionWriter, rtp_channel: int, rtcp_channel: int) -> None:
        self.writer = writer
        self.rtp_channel, self.rtcp_channel = rtp_channel, rtcp_channel

    def send_rtp(self, headers: Sequence[bytes], share: FrameShare) -> int:
        # Prefix, header and payload as buffers of one sendmsg: nothing joined per session,
        # the list laid out by slice assignments (in C).
        count = share.count
        parts: list = [b""] * (3 * count)
        parts[0::3] = share.interleaved_prefixes(self.rtp_channel)
        parts[1::3] = headers
        parts[2::3] = share.payloads
        size = (4 + RTP_HEADER_SIZE) * count + share.octets
        return 0 if self.writer.send_media(parts, size) else count

    def send_rtcp(self, data: bytes) -> None:
        self.writer.send_media(format_interleaved(self.rtcp_channel, data))


# Frames an HTTP viewer may have waiting: a few, so a browser that reads a little late
# catches up, and one that stalls costs at most this many frames of memory.
HTTP_QUEUE_FRAMES = 4


class HttpSink:
    """One HTTP viewer's frames (PayloadFormat.JPEG: one whole JPEG per frame, the RTP
    headers ignored) on a small bounded queue that its request's handler thread drains into
    multipart parts. A full queue (a slow or stalled browser) drops the frame and counts it:
    the scheduler and the fan-out never wait for a browser."""

    def __init__(self, depth: int = HTTP_QUEUE_FRAMES) -> None:
        self.frames: queue.Queue[bytes] = queue.Queue(depth)
        self.frames_dropped = 0

    def send_rtp(self, headers: Sequence[bytes], share: FrameShare) -> int:
        try:
            self.frames.put_nowait(share.payloads[0])
            return 0
        except queue.Full:
            self.frames_dropped += 1
            return 1

    def send_rtcp(self, data: bytes) -> None:
        pass  # no RTCP over HTTP

    def next_frame(self, timeout: float) -> bytes | None:
        """The next JPEG to write, or None when none came within ``timeout`` seconds."""
        try:
            return self.frames.get(timeout=timeout)
        except queue.Empty:
            return None


def rtcp_sender_report(session: Session, wallclock: float, rtp_timestamp: int) -> bytes:
    """SR + SDES CNAME compound (RFC 3550 section 6.1, 6.4.1)."""
    return build_compound(
        SenderReport(
            ssrc=session.ssrc,
            ntp_timestamp=ntp_from_unix(wallclock),
            rtp_timestamp=rtp_timestamp,
            packet_count=session.packets_sent & 0xFFFFFFFF,
            octet_count=session.octets_sent & 0xFFFFFFFF,
        ),
        SourceDescription.cname(session.ssrc, CNAME),
    )


def rtcp_bye(session: Session, wallclock: float, rtp_timestamp: int, reason: str) -> bytes:
    """SR + SDES + BYE: tells standard players the stream has ended (RFC 3550 section 6.6)."""
    return rtcp_sender_report(session, wallclock, rtp_timestamp) + bytes(
        Bye((session.ssrc,), reason.encode()[:255])
    )


@functools.lru_cache(maxsize=256)
def _header_splitter(count: int) -> struct.Struct:
    return struct.Struct(f"{RTP_HEADER_SIZE}s" * count)


def split_headers(headers: bytes) -> tuple[bytes, ...]:
    """Back-to-back 12-byte RTP headers (rtp.pack_headers) as one ``bytes`` each (in C)."""
    return _header_splitter(len(headers) // RTP_HEADER_SIZE).unpack(headers)


def send_frame(session: Session, sink: Sink, share: FrameShare, timestamp: int,
               batch: UdpBatch | None = None) -> None:
    """One frame to one session: its own RTP headers over the shared payloads, and its
    counters (called inside the session's guard). With ``batch`` (a pass of the scheduler
    or of a live fan-out), a UDP sink's datagrams join the pass's one sendmmsg, and what
    did not go is counted when the batch is flushed."""
    seq = session.next_seq
    count = share.count
    headers = pack_headers(count, PT_JPEG, seq, timestamp, session.ssrc)
    session.next_seq = (seq + count) & 0xFFFF
    if batch is not None and type(sink) is UdpSink and batch.add(session, sink, headers, share):
        dropped = 0  # for now: UdpBatch.flush corrects it
    else:
        dropped = sink.send_rtp(split_headers(headers), share)
    session.packets_sent += count - dropped
    session.octets_sent += share.octets
    session.frames_sent += 1
    if dropped:
        session.packets_dropped += dropped
        if dropped == count:
            session.frames_dropped += 1  # none of it went: a full send buffer or queue


@dataclass
class _Pace:
    """Schedule of one PLAY: frame ``first_frame`` was due at ``start``."""

    session: Session
    sink: Sink
    generation: int
    start: float
    first_frame: int
    last_report: float = float("-inf")
    skipped: int = 0  # frames this session could not receive
    order: int = 0  # its place in every pass it shares (see _send_pass)
    reports: bool = field(init=False)  # sends RTCP sender reports

    def __post_init__(self) -> None:
        self.reports = self.session.uses_rtcp


# Sessions due within this long after the earliest go out in the same pass: one wake-up,
# one sendmmsg and one payload look-up per frame for all of them. Their deadlines stay those
# of their frame numbers (no drift); a session sent this much early is early by the same
# amount every frame while the phases stay put, which keeps pacing errors (intervals) far
# below the 1 ms target, and it is too short for any player's jitter buffer to notice.
PASS_QUANTUM = 0.001
# Frames' shares the scheduler keeps: several files' read-ahead windows for many sessions.
SHARES_KEPT = 512


class PacingScheduler:
    """One thread that sends every playing session's frames on time."""

    def __init__(
        self,
        max_payload: int,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.max_payload = max_payload
        self.clock, self.wallclock = clock, wallclock
        self._heap: list[tuple[float, int, _Pace]] = []  # (deadline, its pace's order, pace)
        self._counter = itertools.count()
        self._lock = threading.Lock()  # the heap and _running
        # Released to wake the thread before its next deadline (a new PLAY, stop): a bare
        # lock, cheaper to sleep on than a Condition (whose wait is Python code).
        self._alarm = threading.Lock()
        self._alarm.acquire()
        self._running = False
        self._thread: threading.Thread | None = None
        self._grids: dict[float, float] = {}  # frame rate -> one deadline on its grid
        # Frames' shares made ahead, by (media, frame, format), oldest first; used by the
        # pacing thread only, and emptied whenever nothing plays (no media kept open).
        self._shares: dict[tuple, FrameShare] = {}
        self._ahead: list[tuple[_Pace, int]] = []  # (pace, frame): shares to make after a pass
        self.late_frames = 0
        self.skipped_frames = 0
        self.batch: UdpBatch | None = None  # set by the Streamer where sendmmsg works
        self.passes = 0

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._run, name="pacing", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._running = False
        self._wake()
        # is_alive(): a Ctrl+C can land inside start(), before the thread has started.
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=5)

    def _wake(self) -> None:
        try:
            self._alarm.release()
        except RuntimeError:
            pass  # a wake-up is pending already

    def play(self, session: Session, sink: Sink) -> None:
        """Start sending ``session`` to ``sink`` from its current position now (called after
        the PLAY reply): its first frame at once, the next ones on its rate's grid."""
        with session.guard:
            pace = _Pace(session, sink, session.generation, self.clock(), session.position)
            fps = session.fps
        with self._lock:
            pace.order = next(self._counter)
            now = pace.start
            # One grid of deadlines per frame rate, anchored by the first session at it: the
            # second frame goes on its point nearest one interval from now (earlier or later
            # by at most half an interval), so every session at a rate shares every pass:
            # one wake-up and one sendmmsg per frame interval for all, as a shared media
            # pipeline has (each wake-up of a Python thread costs a few hundred
            # microseconds of CPU here, mostly caches refilled: bench/pass_micro.py --gap).
            # Only the first interval is off (0.5 to 1.5 intervals), well inside any
            # player's jitter buffer; deadlines stay those of frame numbers.
            anchor = self._grids.setdefault(fps, now)
            pace.start = anchor + round((now + 1 / fps - anchor) * fps) / fps
            pace.first_frame += 1
            heapq.heappush(self._heap, (now, pace.order, pace))
        self._wake()

    def _run(self) -> None:
        while True:
            due_now = self._next_pass()
            if due_now is None:
                return
            self._send_pass(due_now)

    def _next_pass(self) -> list[tuple[int, float, _Pace]] | None:
        """Wait for the earliest deadline; everything due by then and within PASS_QUANTUM
        after it, as (order, deadline, pace) (None once stopped)."""
        while True:
            with self._lock:
                if not self._running:
                    return None
                delay = self._heap[0][0] - self.clock() if self._heap else None
                if delay is not None and delay <= 0:
                    horizon = self.clock() + PASS_QUANTUM
                    due_now = []
                    while self._heap and self._heap[0][0] <= horizon:
                        deadline, order, pace = heapq.heappop(self._heap)
                        due_now.append((order, deadline, pace))
                    return due_now
            if delay is None:
                self._shares.clear()
            # Woken early (released) or at the deadline: look again either way.
            self._alarm.acquire(timeout=-1 if delay is None else delay)

    def _send_pass(self, due_now: list[tuple[int, float, _Pace]]) -> None:
        """One pass: sessions watching the same frame go together, in one sendmmsg."""
        self.passes += 1
        # The same order in every pass: each session's datagrams leave at the same point
        # of the pass's burst every frame (its deadlines differ from the others' by
        # rounding only, which must not reorder them and jitter the intervals).
        due_now.sort()
        now, wallclock = self.clock(), self.wallclock()  # one reading for the whole pass
        following = []
        for order, deadline, pace in due_now:
            try:
                due = self._send_frame(pace, deadline, now, wallclock)
            except Exception:  # one broken session must not stop everyone's stream
                log.exception("session %s: stream stopped by an error", pace.session.id)
                self._finish(pace.session, pace.generation)
                due = None
            if due is not None:
                following.append((due, order, pace))
        if self.batch is not None:
            try:
                self.batch.flush()  # the whole pass's UDP datagrams, one sendmmsg
            except Exception:  # a bug in the batch must not stop everyone's stream
                log.exception("batched send failed; sending datagram by datagram")
                self.batch = None
        if self._ahead:
            self._make_ahead()
        if following:
            with self._lock:
                for entry in following:
                    heapq.heappush(self._heap, entry)

    def _send_frame(self, pace: _Pace, deadline: float, now: float,
                    wallclock: float) -> float | None:
        """One session's frame of the pass; its next deadline, or None once it has stopped.
        The per-session path: the frame's share is made ahead (_look_up)."""
        session, sink = pace.session, pace.sink
        with session.guard:
            if session.generation != pace.generation or session.state is not SessionState.PLAYING:
                return None
            frame = session.position
            stop = session.stop_frame
            share = self._shares.get((session.media, frame, session.payload_format))
            if share is None or (stop is not None and frame >= stop):
                share = self._look_up(pace, deadline)
                if share is None:
                    return None
                frame = session.position  # a looping viewer may have started again
            fps = session.fps
            timestamp = session.rtp_timestamp(frame)
            if now - deadline > 1.0 / fps:
                self.late_frames += 1
            if pace.reports and now - pace.last_report >= SENDER_REPORT_INTERVAL:
                # The RTP time of "now" on this stream's clock, for the SR's NTP/RTP pair.
                now_rtp = (timestamp + round((now - deadline) * 90000)) & 0xFFFFFFFF
                sink.send_rtcp(rtcp_sender_report(session, wallclock, now_rtp))
                pace.last_report = now
            session.position = frame + 1
            next_due = pace.start + (frame + 1 - pace.first_frame) / fps
            if not share.count:  # a frame this session cannot receive
                if not pace.skipped and session.payload_format is PayloadFormat.RAW_JPEG:
                    log.warning("session %s: frame %d is larger than one datagram: skipped, "
                                "as are any others (the textbook client takes a whole JPEG "
                                "per datagram)", session.id, frame)
                pace.skipped += 1
                self.skipped_frames += 1
                return next_due
            send_frame(session, sink, share, timestamp, self.batch)
            if share.last:  # the next frames' shares, once this pass's datagrams are gone
                self._ahead.append((pace, frame + 1))
            return next_due

    def _look_up(self, pace: _Pace, deadline: float) -> FrameShare | None:
        """The session's frame when its share is not made yet (or at its end): a looping
        viewer starts again, a stream at its end or whose file changed ends (None), else
        the frame's share (called inside the session's guard)."""
        session = pace.session
        frame = session.position
        stop = session.stop_frame
        if session.loop and stop is None and frame > 0 and \
                not session.media.has_frame(frame):  # type: ignore[attr-defined]
            # A looping viewer (HTTP) starts again: frame 0 is due when the next one was.
            pace.start, pace.first_frame = deadline, 0
            session.position = frame = 0
        # has_frame: a large file is indexed ahead of the playing position as it plays.
        if (stop is not None and frame >= stop) or not session.media.has_frame(frame):  # type: ignore[attr-defined]
            # One frame interval after the last frame, so players that treat BYE as
            # end of stream have read that frame by then.
            self._end_stream(pace, frame, "end of stream")
            log.info("session %s: end of stream after frame %d%s", session.id, frame - 1,
                     f" ({pace.skipped} frames skipped)" if pace.skipped else "")
            return None
        share = self._shares.get((session.media, frame, session.payload_format))
        if share is None:
            try:
                share = self._make_shares(pace, frame, 1)  # the rest after the pass
            except MediaError as exc:  # the file changed under us: end the stream cleanly
                self._end_stream(pace, frame, "media file changed")
                log.warning("session %s: stream ended: %s", session.id, exc)
                return None
        return share

    def _make_shares(self, pace: _Pace, frame: int, count: int) -> FrameShare:
        """Shares of ``frame`` (indexed) and of the indexed frames after it, ``count`` in
        all, with their sendmmsg plans for the session's sink: made together while the
        caches are warm, and kept for every session reaching those frames."""
        session = pace.session
        media, payload_format = session.media, session.payload_format
        gso = getattr(pace.sink, "gso", None) if self.batch is not None else None
        shares = self._shares
        made = share = None
        for number in range(frame, min(frame + count,
                                       media.frame_count)):  # type: ignore[attr-defined]
            key = (media, number, payload_format)
            share = shares.get(key)
            if share is None:
                try:
                    share = FrameShare(self._payloads(session, number, count))
                except MediaError:
                    if number == frame:
                        raise
                    break  # the frame's own read ends the stream, in its turn
                if gso is not None:
                    share.plan(gso)
                shares[key] = share
            if made is None:
                made = share
        if share is not None:
            share.last = True
        while len(shares) > SHARES_KEPT:
            del shares[next(iter(shares))]  # the oldest
        return made  # type: ignore[return-value]

    def _make_ahead(self) -> None:
        """After a pass: the shares of the frames that follow the last ones made ahead."""
        wanted, self._ahead = self._ahead, []
        for pace, frame in wanted:
            session = pace.session
            if (session.media, frame, session.payload_format) in self._shares:
                continue  # another session's turn made them
            try:
                if session.media.has_frame(frame):  # type: ignore[attr-defined]
                    self._make_shares(pace, frame, READ_AHEAD_FRAMES)
            except MediaError:
                pass  # the frame's own turn ends the stream
            except Exception:  # never the pass's business: its frames have gone
                log.exception("session %s: reading ahead failed", session.id)

    def _end_stream(self, pace: _Pace, frame: int, reason: str) -> None:
        """Back to READY; standard clients get an RTCP BYE (called inside the session's guard)."""
        session = pace.session
        if session.uses_rtcp:
            timestamp = session.rtp_timestamp(frame)
            pace.sink.send_rtcp(rtcp_bye(session, self.wallclock(), timestamp, reason))
        if session.stream_ended(pace.generation):
            session.touch(self.clock())  # idle from the end of the stream, not from its PLAY

    def _payloads(self, session: Session, frame: int, ahead: int = 1) -> tuple[bytes, ...]:
        """The frame's payloads, empty when it cannot be sent in the session's format
        (RFC 2435 ones made with the next ``ahead - 1`` frames' when not cached)."""
        media = session.media
        if session.payload_format is PayloadFormat.RAW_JPEG:
            return media.raw_payload(frame)  # type: ignore[attr-defined]
        if session.payload_format is PayloadFormat.JPEG:
            return media.jpeg_payload(frame)  # type: ignore[attr-defined]
        return media.rtp_payloads(frame, self.max_payload, ahead)  # type: ignore[attr-defined]

    def _finish(self, session: Session, generation: int) -> None:
        with session.guard:
            if session.stream_ended(generation):
                session.touch(self.clock())


@dataclass(eq=False)
class _Viewer:
    """One playing session of a live channel, from one PLAY (``generation``)."""

    session: Session
    sink: Sink
    generation: int
    last_report: float = float("-inf")
    skipped: int = 0


class LiveFanout:
    """Live channels' frames to their viewers, sent on the thread that brought the frame.

    A viewer gets every frame pushed while it plays, from the first one after its PLAY (a
    viewer joining mid-stream starts at the next complete frame); PAUSE, a new PLAY or the
    end of the session make its entry stale (``generation``), and it is dropped at the next
    frame. Sinks never block, so one slow viewer loses its own frames only.
    """

    def __init__(
        self,
        max_payload: int,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.max_payload = max_payload
        self.clock, self.wallclock = clock, wallclock
        self._viewers: dict[object, list[_Viewer]] = {}  # channel -> its viewers
        self._lock = threading.Lock()
        self.skipped_frames = 0
        # Where sendmmsg works (set by the Streamer): a batch per sending thread (producers
        # and publishers each bring their channel's frames on a thread of their own).
        self.new_batch: Callable[[], UdpBatch | None] | None = None
        self._local = threading.local()

    def _batch(self) -> UdpBatch | None:
        if self.new_batch is None:
            return None
        if not hasattr(self._local, "batch"):
            self._local.batch = self.new_batch()
        return self._local.batch

    def add(self, session: Session, sink: Sink) -> None:
        """``session`` (just answered PLAY) receives its channel's frames from the next one."""
        with session.guard:
            viewer = _Viewer(session, sink, session.generation)
        with self._lock:
            viewers = self._viewers.setdefault(session.media, [])
            viewers[:] = [v for v in viewers if v.session is not session]
            viewers.append(viewer)

    def remove(self, session: Session) -> None:
        with self._lock:
            viewers = self._viewers.get(session.media)
            if viewers:
                viewers[:] = [v for v in viewers if v.session is not session]

    def viewer_count(self, channel: object) -> int:
        with self._lock:
            return len(self._viewers.get(channel, ()))

    def live_frame(self, channel: object, frame: object) -> None:
        """Send ``frame`` (a live.LiveFrame) of ``channel`` to everyone watching it."""
        with self._lock:
            viewers = list(self._viewers.get(channel, ()))
        stale = []
        now = self.clock()  # one reading per frame, for every viewer's report interval
        shares: dict[PayloadFormat, FrameShare] = {}  # the frame's payloads, by format
        for viewer in viewers:
            try:
                playing = self._send(viewer, frame, now, shares)
            except Exception:  # one broken session must not stop everyone's stream
                log.exception("session %s: live stream stopped by an error", viewer.session.id)
                self._finish(viewer)
                playing = False
            if not playing:
                stale.append(viewer)
        batch = self._batch()
        if batch is not None:
            try:
                batch.flush()  # one sendmmsg for every UDP viewer of the frame
            except Exception:  # a bug in the batch must not stop the channel
                log.exception("batched send failed; sending datagram by datagram")
                self.new_batch = None
                self._local.batch = None
        if stale:
            with self._lock:
                current = self._viewers.get(channel)
                if current is not None:
                    current[:] = [v for v in current if v not in stale]

    def _send(self, viewer: _Viewer, frame, now: float,
              shares: dict[PayloadFormat, FrameShare]) -> bool:
        session, sink = viewer.session, viewer.sink
        with session.guard:
            if session.generation != viewer.generation or session.state is not SessionState.PLAYING:
                return False
            timestamp = session.rtp_timestamp_at(frame.time)
            if session.uses_rtcp and now - viewer.last_report >= SENDER_REPORT_INTERVAL:
                # The frame's capture time and its RTP time: players measure latency from it.
                sink.send_rtcp(rtcp_sender_report(session, frame.capture_time, timestamp))
                viewer.last_report = now
            share = shares.get(session.payload_format)
            if share is None:
                if session.payload_format is PayloadFormat.RAW_JPEG:
                    payloads = frame.raw_payload()
                elif session.payload_format is PayloadFormat.JPEG:
                    payloads = (frame.jpeg,)  # a browser shows any JPEG as it came
                else:
                    payloads = frame.rtp_payloads(self.max_payload)
                share = shares[session.payload_format] = FrameShare(payloads)
            session.position = frame.number + 1
            if not share.count:
                if not viewer.skipped:
                    log.warning("session %s: live frame %d cannot be sent in its format "
                                "(%s): skipped, as are any others", session.id, frame.number,
                                "larger than one datagram"
                                if session.payload_format is PayloadFormat.RAW_JPEG
                                else "not carried by RFC 2435")
                viewer.skipped += 1
                self.skipped_frames += 1
                return True
            send_frame(session, sink, share, timestamp, self._batch())
            return True

    def live_ended(self, channel: object, reason: str) -> None:
        """The source of ``channel`` has gone: its viewers get an RTCP BYE (standard) or
        silence (textbook) and are back in READY; they may PLAY again once it is back."""
        with self._lock:
            viewers = self._viewers.pop(channel, [])
        for viewer in viewers:
            session = viewer.session
            with session.guard:
                if session.generation != viewer.generation:
                    continue
                # Even to a viewer whose PLAY came too late for a frame: without the BYE it
                # would wait for media forever (ffmpeg does). The compound opens with an SR,
                # so the server has sent RTCP to it (RFC 3550 section 6.3.7).
                if session.uses_rtcp:
                    timestamp = session.rtp_timestamp_at(channel.time_now(self.wallclock()))
                    viewer.sink.send_rtcp(rtcp_bye(session, self.wallclock(), timestamp, reason))
            self._finish(viewer)
            log.info("session %s: live source %s ended (%s)", session.id,
                     getattr(channel, "name", "?"), reason)

    def _finish(self, viewer: _Viewer) -> None:
        session = viewer.session
        with session.guard:
            if session.stream_ended(viewer.generation):
                session.touch(self.clock())


class UdpEndpoint:
    """The server's RTP/RTCP sockets and the thread that reads what clients send to them."""

    def __init__(
        self,
        host: str,
        family: int,
        on_rtcp: Callable[[tuple, bytes], None],
        gso: bool | None = None,
        on_rtp: Callable[[tuple, bytes], None] | None = None,
    ) -> None:
        self.rtp_socket, self.rtcp_socket = bind_rtp_pair(host, family)
        for sock in (self.rtp_socket, self.rtcp_socket):
            sock.setblocking(False)  # a full send buffer drops a packet, never stalls pacing
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            # Publishers' frames arrive in bursts of packets while a fan-out is being sent.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        # None: use segmentation offload when the kernel has it (detected once, here).
        self.gso = gso_supported(self.rtp_socket) if gso is None else gso
        self.rtp_port = self.rtp_socket.getsockname()[1]
        self.rtcp_port = self.rtcp_socket.getsockname()[1]
        self._on_rtcp = on_rtcp
        self._on_rtp = on_rtp
        self._running = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._run, name="rtcp-receiver", daemon=True)
        self._thread.start()

    def sink(self, session: Session) -> UdpSink:
        t = session.transport
        if t.lower is not LowerTransport.UDP:
            raise ValueError("not a UDP session")
        rtcp = (t.client_ip, t.rtcp_port) if t.rtcp_port is not None else None
        return UdpSink(self.rtp_socket, self.rtcp_socket, (t.client_ip, t.rtp_port), rtcp,
                       self.gso)

    def new_batch(self) -> UdpBatch | None:
        """A batch for one sending thread's passes, or None where sendmmsg does not work
        here (checked on this socket; the sinks' own sendmsg path then does it all)."""
        return UdpBatch(self.rtp_socket) if sendmmsg.available(self.rtp_socket) else None

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.rtp_socket, selectors.EVENT_READ)
            selector.register(self.rtcp_socket, selectors.EVENT_READ)
            while self._running:
                for key, _ in selector.select(timeout=0.5):
                    sock = key.fileobj
                    try:
                        data, address = sock.recvfrom(65536)  # type: ignore[union-attr]
                    except OSError:
                        continue  # e.g. ICMP port unreachable reported on a UDP socket
                    if sock is self.rtcp_socket:
                        self._on_rtcp(address, data)
                    elif self._on_rtp is not None:
                        # A publisher's media, or a NAT opener from a player (ignored).
                        self._on_rtp(address, data)

    def stop(self) -> None:
        self._running = False
        if self._thread is not None and self._thread.is_alive():  # see PacingScheduler.stop
            self._thread.join(timeout=2)
        self.rtp_socket.close()
        self.rtcp_socket.close()


def describe_receiver_reports(packets: list) -> str:
    """A short log line for the report blocks in an RTCP compound packet."""
    parts = []
    for packet in packets:
        if isinstance(packet, (ReceiverReport, SenderReport)):
            for block in packet.reports:
                parts.append(
                    f"lost {block.fraction_lost / 256:.1%} ({block.cumulative_lost} total), "
                    f"jitter {block.jitter / 90:.1f} ms"
                )
    return "; ".join(parts) or "no report blocks"


@dataclass(eq=False)
class Publisher:
    """A recording session's inbound stream, from one RECORD (``generation``)."""

    session: Session
    ingest: RtpJpegIngest
    generation: int
    source: tuple[str, int] | None = None  # UDP: where its RTP comes from


class Streamer:
    """Delivery, in one place: the pacing scheduler, the UDP endpoint, a sink for every
    session that plays (made for its transport, new when its transport changes), the end
    of sessions (removal from the registry, RTCP BYE) and the receiver reports clients
    send back. Workers hand it sessions to :meth:`start` and :meth:`end`."""

    def __init__(
        self,
        registry: SessionRegistry,
        host: str,
        family: int,
        max_payload: int,
        gso: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.clock, self.wallclock = clock, wallclock
        self.udp = UdpEndpoint(host, family, self._on_udp_rtcp, gso, self._on_udp_rtp)
        self.scheduler = PacingScheduler(max_payload, clock, wallclock)
        self.fanout = LiveFanout(max_payload, clock, wallclock)
        self.scheduler.batch = self.udp.new_batch()
        if self.scheduler.batch is not None:
            self.fanout.new_batch = self.udp.new_batch
        self._sinks: dict[str, tuple[TransportChoice, Sink]] = {}
        self._lock = threading.Lock()
        # Publishers' inbound streams: by session id, and by UDP source address for RTP.
        self._publishers: dict[str, Publisher] = {}
        self._publishers_by_source: dict[tuple[str, int], Publisher] = {}
        self.live_paths: LivePaths | None = None  # set by the server: publishers' paths
        self.totals = SessionTotals(threading.Lock())  # of ended sessions, for the figures

    @property
    def rtp_port(self) -> int:
        return self.udp.rtp_port

    @property
    def rtcp_port(self) -> int:
        return self.udp.rtcp_port

    def run(self) -> None:
        """Start the pacing and RTCP threads."""
        self.scheduler.start()
        self.udp.start()

    def stop(self) -> None:
        """End every session, stop the threads, close the UDP sockets."""
        for session in self.registry.all():
            self.end(session, "server shutting down")
        self.scheduler.stop()
        if self.scheduler.batch is not None:
            self.scheduler.batch.close()
        self.udp.stop()
        log.info("send paths: %s; %d scheduler passes", SEND_COUNTERS.summary(),
                 self.scheduler.passes)

    def record(self, session: Session) -> None:
        """Take in what the publisher of ``session`` sends (after its RECORD)."""
        with session.guard:
            transport, generation = session.transport, session.generation
        publisher = Publisher(session, RtpJpegIngest(session.announced), generation)
        with self._lock:
            old = self._publishers.get(session.id)
            if old is not None:
                self._forget_source(old)
            self._publishers[session.id] = publisher
            if transport.lower is LowerTransport.UDP:
                publisher.source = (transport.client_ip, transport.rtp_port)
                self._publishers_by_source[publisher.source] = publisher

    def _forget_source(self, publisher: Publisher) -> None:
        if publisher.source is not None and \
                self._publishers_by_source.get(publisher.source) is publisher:
            del self._publishers_by_source[publisher.source]

    def start(self, session: Session, writer: ConnectionWriter | None) -> Sink:
        """Stream ``session`` from its position now; ``writer`` is its RTSP connection's (for
        interleaved transport; None for HTTP). Returns its sink (an HTTP viewer's handler
        drains it)."""
        with session.guard:
            transport = session.transport
        with self._lock:
            known = self._sinks.get(session.id)
            if known is None or known[0] != transport:
                if transport.lower is LowerTransport.INTERLEAVED:
                    sink: Sink = InterleavedSink(writer, transport.rtp_channel,
                                                 transport.rtcp_channel)
                elif transport.lower is LowerTransport.HTTP:
                    sink = HttpSink()
                else:
                    sink = self.udp.sink(session)
                self._sinks[session.id] = (transport, sink)
            else:
                sink = known[1]
        if getattr(session.media, "live", False):
            self.fanout.add(session, sink)
        else:
            self.scheduler.play(session, sink)
        return sink

    def end(self, session: Session, reason: str) -> None:
        """End ``session`` (TEARDOWN, timeout, connection closed, server stopping): it leaves
        the registry, and a standard client that has had packets gets an RTCP BYE."""
        with self._lock:
            known = self._sinks.pop(session.id, None)
            publisher = self._publishers.pop(session.id, None)
            if publisher is not None:
                self._forget_source(publisher)
        if not self.registry.end(session):
            return
        self.fanout.remove(session)
        if session.record and self.live_paths is not None:
            self.live_paths.unpublish(session.media, f"publisher left ({reason})")  # type: ignore[arg-type]
        with session.guard:
            if known is not None and session.uses_rtcp and session.packets_sent:
                timestamp = self._timestamp_now(session)
                known[1].send_rtcp(rtcp_bye(session, self.wallclock(), timestamp, reason))
            self.totals.add(session)  # the figures keep what ended sessions sent
        log.info(
            "session %s ended (%s): %d frames, %d packets sent, %d dropped, %d receiver reports",
            session.id, reason, session.frames_sent, session.packets_sent,
            session.packets_dropped, session.receiver_reports,
        )

    def _timestamp_now(self, session: Session) -> int:
        media = session.media
        if getattr(media, "live", False):
            return session.rtp_timestamp_at(media.time_now(self.wallclock()))  # type: ignore[attr-defined]
        return session.rtp_timestamp(session.position)

    def sessions_of(self, connection_id: int) -> list[Session]:
        return self.registry.for_connection(connection_id)

    def interleaved(self, connection_id: int, channel: int, data: bytes) -> None:
        """A ``$`` frame from a client: a publisher's RTP, RTCP on one of its sessions'
        channels, or ignored."""
        for session in self.registry.for_connection(connection_id):
            t = session.transport
            if t.lower is not LowerTransport.INTERLEAVED:
                continue
            if channel == t.rtp_channel and session.record:
                with self._lock:
                    publisher = self._publishers.get(session.id)
                if publisher is not None:
                    self._ingest(publisher, data)
                return
            if channel == t.rtcp_channel:
                self._rtcp(session, data)
                return

    def _on_udp_rtp(self, address: tuple, data: bytes) -> None:
        with self._lock:
            publisher = self._publishers_by_source.get((address[0], address[1]))
        if publisher is not None:
            self._ingest(publisher, data)

    def _on_udp_rtcp(self, address: tuple, data: bytes) -> None:
        session = self.registry.find_by_rtcp_source(address[0], address[1])
        if session is None:
            log.debug("RTCP from unknown source %s", address)
            return
        self._rtcp(session, data)

    def _rtcp(self, session: Session, data: bytes) -> None:
        if session.record:
            with self._lock:
                publisher = self._publishers.get(session.id)
            if publisher is not None:
                publisher.ingest.receive_rtcp(data, self.wallclock())
                session.touch(self.clock())
            return
        try:
            packets = parse_compound(data)
        except RtcpError as exc:
            log.debug("session %s: bad RTCP: %s", session.id, exc)
            return
        self._receiver_report(session, packets)

    def _ingest(self, publisher: Publisher, data: bytes) -> None:
        """One RTP packet of a publisher: a complete frame goes out to the channel's viewers
        (on this thread; sinks never block)."""
        session = publisher.session
        if session.generation != publisher.generation:
            return  # PAUSE or TEARDOWN since its RECORD
        session.touch(self.clock())  # media keeps a publisher's session alive
        frame = publisher.ingest.receive_rtp(data, self.wallclock())
        if frame is None:
            return
        # Payloads that need tables sent in an earlier frame cannot go to a viewer who
        # joined since; LiveFrame decides whether the others can go as they came.
        payloads = frame.payloads if frame.payloads_standalone else ()
        try:
            session.media.push_jpeg(frame.jpeg, frame.capture_time, payloads)  # type: ignore[attr-defined]
        except Exception:  # a bug must not stop the receiving thread
            log.exception("session %s: a published frame could not be passed on", session.id)

    def _receiver_report(self, session: Session, packets: list) -> None:
        """Receiver reports keep a session alive, as requests do (RFC 2326 section 12.37)."""
        session.receiver_reports += 1
        session.touch(self.clock())
        log.debug("session %s: RTCP %s", session.id, describe_receiver_reports(packets))
