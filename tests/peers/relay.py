"""An impairment relay for end-to-end tests: loss, reordering, duplication and jitter on
loopback, where the kernel has no netem.

Theory of operation
-------------------
The player talks to :class:`RtspRelay` as if it were the server; the relay is a TCP proxy
that understands just enough RTSP to put itself in the media path::

    player --RTSP/TCP--> RtspRelay.port --------------> server            (requests)
    player <------------ RtspRelay (delay line) <------- server            (replies, $ frames)
    player <--RTP/UDP--- UdpRelay R   <--impairment----- server RTP       (drop/reorder/dup/jitter)
    player <--RTCP------ UdpRelay R+1 <----------------- server RTCP      (as is)
    player --RTCP------> UdpRelay R+1 -----------------> server RTCP      (as is)

* A SETUP request's ``client_port=A[-B]`` (both dialects: ``client_port=A-B`` and the
  textbook's ``client_port= A``) is rewritten to the relay's own ports ``R[-R+1]``; the
  reply's ``client_port`` is rewritten back to ``A[-B]`` and its ``server_port=S-S+1`` to
  ``R-R+1``, so that the player's RTCP also goes through the relay and reaches the server
  from the port the server expects. Requests are buffered until a ``client_port`` value is
  known to be complete (the textbook dialect ends a request without a line end, so a request
  ending in the value is sent, whole, after 30 ms of quiet).
* Every RTP datagram the server sends to ``R`` gets one decision from
  ``random.Random(seed)``, drawn in arrival order with a fixed number of draws per packet,
  so the decisions for packet *k* depend on the seed and *k* only: **drop**; **reorder**
  (held back and released right after ``reorder_depth`` later packets have been forwarded,
  or after ``hold_timeout`` when the stream stops); **duplicate** (sent twice in a row);
  and a delay of ``delay + uniform(0, jitter)`` seconds on an order-preserving delay line
  (jitter changes spacing, never order: reordering is only what the log says).
* The server-to-player TCP stream can get the same delay line (``tcp_delay``,
  ``tcp_jitter``) and be cut into random pieces of 1..``tcp_chunk`` bytes, each delayed on
  its own: RTSP replies and interleaved ``$`` frames then arrive split anywhere.
* :class:`UdpRelay` logs every RTP packet: index, sequence number, timestamp, marker and the
  action taken, so a test knows the true loss, which frames arrived intact, and what was
  reordered or duplicated.

Everything runs in daemon threads stopped by :meth:`RtspRelay.stop`; no thread outlives it.
"""

from __future__ import annotations

import random
import re
import select
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from mjpeg_rtsp.ports import bind_rtp_pair

__all__ = ["Impairment", "PacketRecord", "RtspRelay", "UdpRelay"]

_CLIENT_PORT = re.compile(rb"(client_port\s*=\s*)(\d+)(?:-(\d+))?", re.IGNORECASE)
_SERVER_PORT = re.compile(rb"(server_port\s*=\s*)(\d+)(?:-(\d+))?", re.IGNORECASE)
_QUIET_FLUSH = 0.03


@dataclass(frozen=True)
class Impairment:
    """What the relay does to the RTP packets (UDP) and the server-to-player TCP stream."""

    loss: float = 0.0  #: probability of dropping a packet
    reorder: float = 0.0  #: probability of holding a packet back
    reorder_depth: int = 3  #: a held packet goes out right after this many later ones
    duplicate: float = 0.0  #: probability of sending a packet twice
    delay: float = 0.0  #: fixed delay, seconds
    jitter: float = 0.0  #: extra delay, uniform in [0, jitter] seconds, order-preserving
    hold_timeout: float = 0.25  #: a held packet goes out anyway after this long
    tcp_delay: float = 0.0  #: fixed delay on the server-to-player TCP stream
    tcp_jitter: float = 0.0  #: extra delay per TCP piece, order-preserving
    tcp_chunk: int = 0  #: cut the TCP stream into pieces of 1..tcp_chunk bytes (0: as read)
    seed: int = 0


@dataclass
class PacketRecord:
    index: int  #: arrival order at the relay, from 0
    seq: int | None  #: RTP sequence number (None for a datagram too short to be RTP)
    timestamp: int | None
    marker: bool
    actions: list[str] = field(default_factory=list)  #: "drop", "reorder", "duplicate"

    @property
    def dropped(self) -> bool:
        return "drop" in self.actions


def _rtp_fields(data: bytes) -> tuple[int | None, int | None, bool]:
    if len(data) < 12:
        return None, None, False
    _, second, seq, timestamp, _ = struct.unpack_from("!BBHII", data)
    return seq, timestamp, bool(second & 0x80)


class _DelayLine:
    """Order-preserving delays: an item leaves at max(now + delay, previous item's time)."""

    def __init__(self) -> None:
        self._items: deque[tuple[float, object]] = deque()
        self._last = 0.0

    def put(self, item: object, now: float, delay: float) -> None:
        release = max(now + delay, self._last)
        self._last = release
        self._items.append((release, item))

    def due(self, now: float) -> list[object]:
        out = []
        while self._items and self._items[0][0] <= now:
            out.append(self._items.popleft()[1])
        return out

    def next_time(self) -> float | None:
        return self._items[0][0] if self._items else None

    def __len__(self) -> int:
        return len(self._items)


class UdpRelay:
    """RTP (impaired) and RTCP (as is) between the server and one player's ports."""

    def __init__(self, impairment: Impairment, player_rtp: tuple[str, int],
                 player_rtcp: tuple[str, int] | None, host: str = "127.0.0.1") -> None:
        self.impairment = impairment
        self.player_rtp = player_rtp
        self.player_rtcp = player_rtcp
        self.server_rtcp: tuple[str, int] | None = None  # learnt from the SETUP reply
        self.records: list[PacketRecord] = []
        self.rtcp_forwarded = 0
        self._random = random.Random(impairment.seed)
        self._lock = threading.Lock()
        self.rtp, self.rtcp = self._bind_pair(host, with_rtcp=player_rtcp is not None)
        self.port = self.rtp.getsockname()[1]
        self._line = _DelayLine()
        self._held: list[list] = []  # [later packets still to wait for, deadline, data]
        self._running = True
        self._thread = threading.Thread(target=self._run, name="udp-relay", daemon=True)
        self._thread.start()

    @staticmethod
    def _bind_pair(host: str, with_rtcp: bool) -> tuple[socket.socket, socket.socket | None]:
        if with_rtcp:
            return bind_rtp_pair(host)
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind((host, 0))
        return rtp, None

    # --- what happened ------------------------------------------------------------------

    def summary(self) -> dict:
        """Counts over every RTP packet the server sent to the relay so far."""
        with self._lock:
            records = list(self.records)
        frames: dict[int, list[PacketRecord]] = {}
        for record in records:
            if record.timestamp is not None:
                frames.setdefault(record.timestamp, []).append(record)
        intact = [ts for ts, packets in frames.items() if not any(p.dropped for p in packets)]
        sent = len(records)
        dropped = sum(r.dropped for r in records)
        return {
            "sent": sent,
            "dropped": dropped,
            "reordered": sum("reorder" in r.actions for r in records),
            "duplicated": sum("duplicate" in r.actions for r in records),
            "loss_percent": 100.0 * dropped / sent if sent else 0.0,
            "frames_sent": len(frames),
            "frames_intact": len(intact),
            "dropped_seqs": [r.seq for r in records if r.dropped],
        }

    # --- the forwarding thread ----------------------------------------------------------

    def _decide(self, data: bytes, now: float) -> None:
        imp = self.impairment
        # Always four draws per packet: decisions for packet k depend on (seed, k) only.
        r_loss, r_reorder, r_dup, r_jitter = (self._random.random() for _ in range(4))
        seq, timestamp, marker = _rtp_fields(data)
        record = PacketRecord(len(self.records), seq, timestamp, marker)
        if r_loss < imp.loss:
            record.actions.append("drop")
        else:
            if r_dup < imp.duplicate:
                record.actions.append("duplicate")
            if r_reorder < imp.reorder and imp.reorder_depth > 0:
                record.actions.append("reorder")
        with self._lock:
            self.records.append(record)
        if record.dropped:
            return
        copies = 2 if "duplicate" in record.actions else 1
        delay = imp.delay + r_jitter * imp.jitter
        if "reorder" in record.actions:
            self._held.append([imp.reorder_depth, now + imp.hold_timeout, data, copies, delay])
            return
        for _ in range(copies):
            self._line.put(data, now, delay)
        for held in self._held:
            held[0] -= 1
        self._release_held(now)

    def _release_held(self, now: float) -> None:
        """Send on the held packets whose later packets have passed, or that waited too long."""
        keep = []
        for held in self._held:
            if held[0] <= 0 or held[1] <= now:
                for _ in range(held[3]):
                    self._line.put(held[2], now, held[4])
            else:
                keep.append(held)
        self._held = keep

    def _run(self) -> None:
        sockets = [s for s in (self.rtp, self.rtcp) if s is not None]
        while self._running:
            now = time.monotonic()
            self._release_held(now)
            for data in self._line.due(now):
                try:
                    self.rtp.sendto(data, self.player_rtp)
                except OSError:
                    pass
            wake = [t for t in (self._line.next_time(),) if t is not None]
            wake += [h[1] for h in self._held]
            timeout = 0.05 if not wake else max(0.0, min(min(wake) - now, 0.05))
            try:
                readable, _, _ = select.select(sockets, [], [], timeout)
            except (OSError, ValueError):
                return
            for sock in readable:
                try:
                    data, address = sock.recvfrom(65536)
                except OSError:
                    continue
                if sock is self.rtp:
                    if address == self.player_rtp:
                        continue  # nothing of the player's goes upstream on RTP
                    self._decide(data, time.monotonic())
                else:
                    self._on_rtcp(data, address)

    def _on_rtcp(self, data: bytes, address: tuple) -> None:
        if self.server_rtcp is not None and address == self.server_rtcp:
            destination = self.player_rtcp
        elif address[1] == (self.player_rtcp[1] if self.player_rtcp else None):
            destination = self.server_rtcp
        else:
            destination = self.player_rtcp  # the server's RTCP before its port was known
        if destination is not None:
            try:
                self.rtcp.sendto(data, destination)
                self.rtcp_forwarded += 1
            except OSError:
                pass

    def stop(self) -> None:
        self._running = False
        self._thread.join(2)
        for sock in (self.rtp, self.rtcp):
            if sock is not None:
                sock.close()


class RtspRelay:
    """The TCP proxy in front of an RTSP server; one :class:`UdpRelay` per UDP SETUP."""

    def __init__(self, upstream_port: int, impairment: Impairment = Impairment(),
                 upstream_host: str = "127.0.0.1", host: str = "127.0.0.1") -> None:
        self.impairment = impairment
        self.upstream = (upstream_host, upstream_port)
        self.listener = socket.create_server((host, 0))
        self.port = self.listener.getsockname()[1]
        self.udp_relays: list[UdpRelay] = []
        self.tcp_pieces = 0  # server-to-player pieces sent (after cutting)
        self._by_relay_port: dict[int, tuple[UdpRelay, bytes]] = {}
        self._random = random.Random(impairment.seed ^ 0x5EED)
        self._running = True
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept_loop, "relay-accept")

    @property
    def udp(self) -> UdpRelay:
        """The one UDP relay of a single-session test."""
        assert len(self.udp_relays) == 1, f"{len(self.udp_relays)} UDP relays"
        return self.udp_relays[0]

    def _spawn(self, target, name: str, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while self._running:
            try:
                readable, _, _ = select.select([self.listener], [], [], 0.1)
                if not readable:
                    continue
                player, _ = self.listener.accept()
            except (OSError, ValueError):
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                player.close()
                continue
            for sock in (player, server):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [player, server]
            self._spawn(self._upstream_loop, "relay-up", player, server)
            self._spawn(self._downstream_loop, "relay-down", server, player)

    # --- player to server: rewrite client_port -------------------------------------------

    def _upstream_loop(self, player: socket.socket, server: socket.socket) -> None:
        buffer = b""
        try:
            while self._running:
                readable, _, _ = select.select([player], [], [], _QUIET_FLUSH)
                if readable:
                    data = player.recv(65536)
                    if not data:
                        break
                    buffer += data
                    cut = self._safe_cut(buffer)
                else:
                    cut = len(buffer)  # quiet: a value at the end is complete
                if cut:
                    server.sendall(self._rewrite_request(buffer[:cut]))
                    buffer = buffer[cut:]
        except (OSError, ValueError):
            pass
        finally:
            try:
                server.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    @staticmethod
    def _safe_cut(buffer: bytes) -> int:
        """How much of ``buffer`` can go now: nothing while it ends in a ``client_port`` value
        (or name) that may go on in the next read. The whole buffer waits, not just the
        tail, because a textbook server reads a request with one ``recv``: it must not be
        split."""
        last = None
        for match in _CLIENT_PORT.finditer(buffer):
            last = match
        if last is not None and last.end() == len(buffer):
            return 0
        for i in range(max(0, len(buffer) - 16), len(buffer)):
            word = buffer[i:].lower().rstrip(b" =")
            if word and b"client_port".startswith(word):
                return 0
        return len(buffer)

    def _rewrite_request(self, data: bytes) -> bytes:
        def replace(match: re.Match) -> bytes:
            rtp = int(match.group(2))
            rtcp = int(match.group(3)) if match.group(3) else None
            relay = UdpRelay(self.impairment, ("127.0.0.1", rtp),
                             ("127.0.0.1", rtcp) if rtcp is not None else None)
            self.udp_relays.append(relay)
            self._by_relay_port[relay.port] = (relay, match.group(0))
            ports = f"{relay.port}" if rtcp is None else f"{relay.port}-{relay.port + 1}"
            return match.group(1) + ports.encode()

        return _CLIENT_PORT.sub(replace, data)

    # --- server to player: rewrite the SETUP reply, delay and cut the stream -------------

    def _rewrite_reply(self, data: bytes) -> bytes:
        if not data.startswith(b"RTSP/") or not self._by_relay_port:
            return data
        match = _CLIENT_PORT.search(data)
        if match is None or int(match.group(2)) not in self._by_relay_port:
            return data
        relay, original = self._by_relay_port[int(match.group(2))]
        data = data[:match.start()] + original + data[match.end():]
        server = _SERVER_PORT.search(data)
        if server is not None and relay.rtcp is not None:
            rtp = int(server.group(2))
            rtcp = int(server.group(3)) if server.group(3) else rtp + 1
            relay.server_rtcp = (self.upstream[0], rtcp)
            ports = f"{relay.port}-{relay.port + 1}".encode()
            data = data[:server.start()] + server.group(1) + ports + data[server.end():]
        return data

    def _downstream_loop(self, server: socket.socket, player: socket.socket) -> None:
        imp = self.impairment
        line = _DelayLine()
        closing = False
        try:
            while self._running:
                now = time.monotonic()
                for piece in line.due(now):
                    player.sendall(piece)
                    self.tcp_pieces += 1
                if closing and not len(line):
                    break
                next_time = line.next_time()
                timeout = 0.05 if next_time is None else max(0.0, min(next_time - now, 0.05))
                if closing:
                    time.sleep(timeout)
                    continue
                readable, _, _ = select.select([server], [], [], timeout)
                if not readable:
                    continue
                data = server.recv(65536)
                if not data:
                    closing = True
                    continue
                data = self._rewrite_reply(data)
                now = time.monotonic()
                for piece in self._cut(data):
                    line.put(piece, now, imp.tcp_delay + self._random.random() * imp.tcp_jitter)
        except (OSError, ValueError):
            pass
        finally:
            try:
                player.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _cut(self, data: bytes) -> list[bytes]:
        if self.impairment.tcp_chunk <= 0:
            return [data]
        pieces = []
        offset = 0
        while offset < len(data):
            size = self._random.randint(1, self.impairment.tcp_chunk)
            pieces.append(data[offset:offset + size])
            offset += size
        return pieces

    # --- life cycle ----------------------------------------------------------------------

    def stop(self) -> None:
        self._running = False
        for thread in self._threads:
            thread.join(2)
        self.listener.close()
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass
        for relay in self.udp_relays:
            relay.stop()

    def __enter__(self) -> RtspRelay:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
