"""Load generator: N RTSP sessions received by one process, for bench/run.py.

    python bench/loadgen.py rtsp://127.0.0.1:PORT/PATH --sessions N --fps F
        [--seconds 15] [--warmup 2] [--transport udp|tcp] [--gro|--no-gro]
        [--server-pid PID]

Theory of operation: each session has its own RTSP connection (DESCRIBE,
SETUP, PLAY), opened one after another by a setup thread while the main thread
already receives: one epoll loop over every session's RTP socket (8 MB receive
buffers) or, for interleaved TCP, over the RTSP connections themselves. After
the last PLAY and a warm-up, a measuring window of ``--seconds`` starts. In it,
per session, it counts packets, bytes, sequence gaps and frames (the RTP marker
bit; a frame is *complete* when no sequence number went missing since the
previous marker) and records each marker packet's arrival time and RTP
timestamp. UDP arrival times are the kernel's receive timestamps (the
``SIOCGSTAMPNS`` ioctl, asked only after a marker packet), so the loop's own
scheduling does not show up as pacing error; TCP arrival times are taken at
``recv``.

UDP generic receive offload (``--gro``, the default): with ``UDP_GRO`` set, a
sender using UDP segmentation offload on loopback hands over whole
super-datagrams (up to 64 packets in one ``recvmsg``), which the loop splits by
the segment size the kernel reports; senders without it are received datagram
by datagram as usual. Note that on loopback this also saves the *sender* the
kernel's segmentation work (the receive path runs in the sending thread), so
``--no-gro`` is the fairer setting for comparing senders' CPU.

If ``--server-pid`` is given, the server's CPU time (utime+stime from
``/proc/PID/stat``) is read at the window's start and end, and its threads and
resident memory sampled every second. The loop's own CPU time over the window
is reported too: near 100 % of a core, the load generator is the bottleneck.
The result is one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import queue
import re
import resource
import selectors
import socket
import struct
import sys
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mjpeg_rtsp.client import resolve_control  # noqa: E402
from mjpeg_rtsp.ports import bind_rtp_pair  # noqa: E402
from mjpeg_rtsp.sdp import parse_sdp  # noqa: E402

SIOCGSTAMPNS = 0x8907
UDP_GRO = 104
RCVBUF = 8 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- /proc ----------------------------------------------------------------------------------

def proc_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu(pid: int) -> dict[tuple[str, int], float]:
    """CPU seconds per thread: (name, tid) -> utime + stime."""
    totals: dict[tuple[str, int], float] = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return totals
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        totals[(name, int(task))] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return totals


def thread_shares(before: dict, after: dict, elapsed: float) -> dict:
    """CPU share of one core over the window: the busiest threads (name/tid; Python threads
    all show as the interpreter's name) and totals by name with digits replaced by #.
    Threads that ended in the window are missing; new ones count from their start."""
    deltas = {key: (value - before.get(key, 0.0)) / elapsed for key, value in after.items()}
    busiest = sorted(deltas.items(), key=lambda item: -item[1])[:4]
    grouped: dict[str, float] = {}
    for (name, _), share in deltas.items():
        key = re.sub(r"\d+", "#", name)
        grouped[key] = grouped.get(key, 0.0) + share
    return {
        "busiest": {f"{name}/{tid}": round(share, 4) for (name, tid), share in busiest},
        "by_name": dict(sorted(((k, round(v, 4)) for k, v in grouped.items()),
                               key=lambda item: -item[1])[:5]),
        "count": len(after),
    }


def proc_status(pid: int) -> tuple[int, float]:
    """(threads, RSS in MiB)."""
    threads, rss = 0, 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                threads = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    return threads, rss


# --- a minimal RTSP client ------------------------------------------------------------------

class RtspConnection:
    """Blocking request/response on one connection (enough for DESCRIBE, SETUP, PLAY)."""

    def __init__(self, host: str, port: int, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            set_rcvbuf(self.sock, rcvbuf)
        self.sock.settimeout(20)
        self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.cseq = 0
        self.buffer = bytearray()

    def request(self, method: str, url: str, **headers: str) -> tuple[int, dict, bytes]:
        self.send(method, url, **headers)
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if self.buffer[:1] == b"$":  # media before the reply (interleaved): skip it
                if len(self.buffer) >= 4:
                    size = 4 + struct.unpack_from("!H", self.buffer, 2)[0]
                    if len(self.buffer) >= size:
                        del self.buffer[:size]
                        continue
            elif head_end >= 0:
                head = bytes(self.buffer[:head_end]).decode("latin-1")
                lines = head.split("\r\n")
                fields = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    fields[name.strip().lower()] = value.strip()
                length = int(fields.get("content-length", "0"))
                if len(self.buffer) >= head_end + 4 + length:
                    body = bytes(self.buffer[head_end + 4:head_end + 4 + length])
                    del self.buffer[:head_end + 4 + length]
                    status = int(lines[0].split()[1])
                    if fields.get("cseq") != str(self.cseq):
                        continue  # a late reply to an earlier request
                    return status, fields, body
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"server closed the connection during {method}")
            self.buffer += data

    def send(self, method: str, url: str, **headers: str) -> None:
        self.cseq += 1
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self.cseq}", "User-Agent: mjpeg-bench"]
        lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())


def set_rcvbuf(sock: socket.socket, size: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, 33, size)  # SO_RCVBUFFORCE (root: above rmem_max)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def control_url(base: str, sdp: str, content_base: str | None) -> str:
    """The first media section's a=control, resolved as the player resolves it (RFC 2326 C.1.1)."""
    media = parse_sdp(sdp).media
    control = (media[0].attribute("control") if media else None) or ""
    return resolve_control(content_base or base, control)


# --- sessions -------------------------------------------------------------------------------

class Session:
    __slots__ = (
        "index", "conn", "session_id", "rtp", "rtcp", "tcp_buffer",
        "packets", "bytes", "frames", "complete", "gaps", "frame_ok",
        "first_seq", "last_ext_seq", "markers", "started", "first_mark",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.conn: RtspConnection | None = None
        self.session_id = ""
        self.rtp = self.rtcp = None
        self.tcp_buffer = bytearray()
        self.reset()

    def reset(self) -> None:
        self.packets = self.bytes = self.frames = self.complete = self.gaps = 0
        self.frame_ok = False  # the frame now arriving had no gap (and we saw its start)
        self.first_seq = -1
        self.last_ext_seq = -1
        self.markers: list[tuple[int, int]] = []  # (arrival ns, RTP timestamp)
        self.started = False
        self.first_mark = 0  # arrival (ns) of the marker that started the count


def open_session(index: int, url: str, transport: str) -> Session:
    parsed = urllib.parse.urlsplit(url)
    session = Session(index)
    conn = RtspConnection(parsed.hostname, parsed.port or 554,
                          RCVBUF if transport == "tcp" else None)
    session.conn = conn
    status, fields, body = conn.request("DESCRIBE", url, Accept="application/sdp")
    if status != 200:
        raise ConnectionError(f"DESCRIBE {url}: {status}")
    setup_url = control_url(url, body.decode("latin-1"), fields.get("content-base"))
    if transport == "udp":
        session.rtp, session.rtcp = bind_rtp_pair("127.0.0.1")
        for sock in (session.rtp, session.rtcp):
            set_rcvbuf(sock, RCVBUF if sock is session.rtp else 1 << 16)
            sock.setblocking(False)
        port = session.rtp.getsockname()[1]
        spec = f"RTP/AVP;unicast;client_port={port}-{port + 1}"
    else:
        spec = "RTP/AVP/TCP;unicast;interleaved=0-1"
    status, fields, _ = conn.request("SETUP", setup_url, Transport=spec)
    if status != 200:
        raise ConnectionError(f"SETUP {setup_url}: {status}")
    session.session_id = fields.get("session", "").split(";")[0]
    status, _, _ = conn.request("PLAY", url, Session=session.session_id, Range="npt=0.000-")
    if status != 200:
        raise ConnectionError(f"PLAY {url}: {status}")
    if transport == "tcp":
        session.tcp_buffer = conn.buffer  # media that came with the PLAY reply
        conn.sock.setblocking(False)
    else:
        conn.sock.setblocking(False)
    return session


# --- the receive loop -----------------------------------------------------------------------

class Receiver:
    def __init__(self, transport: str, gro: bool) -> None:
        self.transport = transport
        self.gro = gro and transport == "udp"
        self.selector = selectors.EpollSelector()
        self.buffer = bytearray(1 << 17)
        self.view = memoryview(self.buffer)
        self.measuring = False
        self.gro_datagrams = 0  # super-datagrams that held more than one packet

    def add(self, session: Session) -> None:
        if self.transport == "udp":
            if self.gro:
                try:
                    session.rtp.setsockopt(socket.SOL_UDP, UDP_GRO, 1)
                except OSError:
                    self.gro = False
            self.selector.register(session.rtp, selectors.EVENT_READ, (session, 0))
            self.selector.register(session.rtcp, selectors.EVENT_READ, (session, 1))
        self.selector.register(session.conn.sock, selectors.EVENT_READ, (session, 2))
        if self.transport == "tcp" and session.tcp_buffer:
            self._tcp_parse(session, time.time_ns())

    def poll(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            session, kind = key.data
            if kind == 0:
                if self.gro:
                    self._drain_gro(session)
                else:
                    self._drain_udp(session)
            elif kind == 1:
                self._discard(session.rtcp)
            elif self.transport == "tcp":
                self._drain_tcp(session)
            else:
                self._discard(session.conn.sock)  # keep-alive replies

    def _discard(self, sock: socket.socket) -> None:
        try:
            while sock.recv_into(self.buffer):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            pass

    def _packet(self, s: Session, buf, off: int, size: int, arrival: int) -> None:
        """One RTP packet at ``buf[off:off+size]``; ``arrival`` is None when not yet known."""
        seq = (buf[off + 2] << 8) | buf[off + 3]
        marker = buf[off + 1] & 0x80
        if s.last_ext_seq < 0:
            s.first_seq = s.last_ext_seq = seq
        else:
            delta = (seq - s.last_ext_seq) & 0xFFFF
            if delta >= 0x8000 or delta == 0:
                return  # duplicate or late (reordered): ignored
            if delta != 1:
                s.gaps += 1
                s.frame_ok = False
            s.last_ext_seq += delta
        s.packets += 1
        s.bytes += size
        if marker:
            if s.started:
                s.frames += 1
                if s.frame_ok:
                    s.complete += 1
                s.markers.append((arrival, int.from_bytes(buf[off + 4:off + 8], "big")))
            else:
                s.first_mark = arrival
            s.started = True
            s.frame_ok = True

    def _arrival(self, sock: socket.socket) -> int:
        stamp = fcntl.ioctl(sock.fileno(), SIOCGSTAMPNS, b"\0" * 16)
        sec, nsec = struct.unpack("@qq", stamp)
        return sec * 1_000_000_000 + nsec

    def _drain_udp(self, s: Session) -> None:
        sock, buf = s.rtp, self.buffer
        packet = self._packet
        while True:
            try:
                n = sock.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            if n < 12:
                continue
            packet(s, buf, 0, n, self._arrival(sock) if buf[1] & 0x80 else 0)

    def _drain_gro(self, s: Session) -> None:
        sock, buf = s.rtp, self.buffer
        bufs = [buf]
        packet = self._packet
        while True:
            try:
                n, ancdata, _, _ = sock.recvmsg_into(bufs, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            segment = n
            for level, kind, data in ancdata:
                if level == socket.SOL_UDP and kind == UDP_GRO:
                    segment = struct.unpack("@i", data[:4])[0] or n
            if segment >= n:
                if n >= 12:
                    packet(s, buf, 0, n, self._arrival(sock) if buf[1] & 0x80 else 0)
                continue
            self.gro_datagrams += 1
            arrival = self._arrival(sock)
            for off in range(0, n, segment):
                size = min(segment, n - off)
                if size >= 12:
                    packet(s, buf, off, size, arrival)

    def _drain_tcp(self, s: Session) -> None:
        sock = s.conn.sock
        got = False
        try:
            while True:
                n = sock.recv_into(self.buffer)
                if n == 0:
                    break
                s.tcp_buffer += self.view[:n]
                got = True
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            pass
        if got:
            self._tcp_parse(s, time.time_ns())

    def _tcp_parse(self, s: Session, arrival: int) -> None:
        data = s.tcp_buffer
        off, end = 0, len(data)
        packet = self._packet
        while end - off >= 4:
            if data[off] == 0x24:
                size = (data[off + 2] << 8) | data[off + 3]
                if end - off < 4 + size:
                    break
                if data[off + 1] == 0 and size >= 12:
                    packet(s, data, off + 4, size, arrival)
                off += 4 + size
            else:  # an RTSP reply (to a keep-alive)
                head_end = data.find(b"\r\n\r\n", off)
                if head_end < 0:
                    break
                match = re.search(rb"(?i)content-length:\s*(\d+)", data[off:head_end])
                total = head_end + 4 + (int(match.group(1)) if match else 0)
                if total > end:
                    break
                off = total
        del data[:off]


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def analyse(sessions: list[Session], fps: float, window: float, end_ns: int) -> dict:
    """Frames are counted from each session's first marker in the window; a session is
    expected to deliver one frame per 1/fps after that marker until the window's end."""
    period = 1.0 / fps
    tick = 90000.0 / fps
    deviations: list[float] = []
    drifts: list[float] = []
    for s in sessions:
        marks = s.markers
        for (t0, ts0), (t1, ts1) in zip(marks, marks[1:], strict=False):
            k = round(((ts1 - ts0) & 0xFFFFFFFF) / tick)
            if k == 1:
                deviations.append(abs((t1 - t0) / 1e9 - period))
        if len(marks) >= 2:
            (t0, ts0), (t1, ts1) = marks[0], marks[-1]
            k = round(((ts1 - ts0) & 0xFFFFFFFF) / tick)
            drifts.append((t1 - t0) / 1e9 - k * period)
    packets = sum(s.packets for s in sessions)
    expected_packets = sum(
        s.last_ext_seq - s.first_seq + 1 for s in sessions if s.first_seq >= 0
    )
    expected_frames = sum(
        int((end_ns - s.first_mark) / 1e9 * fps) if s.started else fps * window
        for s in sessions
    )
    complete = sum(s.complete for s in sessions)
    return {
        "frames": sum(s.frames for s in sessions),
        "frames_complete": complete,
        "frames_expected": round(expected_frames),
        "delivered": complete / expected_frames if expected_frames else 0.0,
        "packets": packets,
        "packets_lost": max(0, expected_packets - packets),
        "loss": max(0, expected_packets - packets) / expected_packets if expected_packets else 0,
        "bytes": sum(s.bytes for s in sessions),
        "sessions_silent": sum(1 for s in sessions if s.packets == 0),
        "pacing_p50_ms": _ms(percentile(deviations, 0.50)),
        "pacing_p99_ms": _ms(percentile(deviations, 0.99)),
        "pacing_max_ms": _ms(max(deviations) if deviations else None),
        "drift_ms_mean": _ms(sum(drifts) / len(drifts) if drifts else None),
        "drift_ms_max": _ms(max(drifts, key=abs) if drifts else None),
        "drift_frames_max": (max(abs(d) for d in drifts) * fps) if drifts else None,
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000


def run(args: argparse.Namespace) -> dict:
    receiver = Receiver(args.transport, args.gro)
    ready: queue.Queue = queue.Queue()
    sessions: list[Session] = []

    def setup() -> None:
        try:
            for i in range(args.sessions):
                ready.put(open_session(i, args.url, args.transport))
        except Exception as exc:  # reported by the main thread
            ready.put(exc)
        ready.put(None)

    setup_started = time.monotonic()
    threading.Thread(target=setup, daemon=True, name="setup").start()
    setup_done = None
    error = None
    while setup_done is None:
        receiver.poll(0.02)
        while True:
            try:
                item = ready.get_nowait()
            except queue.Empty:
                break
            if item is None:
                setup_done = time.monotonic()
            elif isinstance(item, Exception):
                error = f"{type(item).__name__}: {item}"
            else:
                sessions.append(item)
                receiver.add(item)
    setup_seconds = setup_done - setup_started
    if error is not None and not sessions:
        return {"error": error}

    # Warm-up, then the window.
    warm_end = time.monotonic() + args.warmup
    while time.monotonic() < warm_end:
        receiver.poll(0.05)
    for s in sessions:
        s.reset()
        s.started = False
    pid = args.server_pid
    cpu0 = proc_cpu(pid) if pid else None
    threads0 = thread_cpu(pid) if pid else {}
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    window_end = t0 + args.seconds
    next_sample = t0
    next_keepalive = t0 + 20
    threads_max, rss_max = 0, 0.0
    while True:
        now = time.monotonic()
        if now >= window_end:
            break
        if pid and now >= next_sample:
            threads, rss = proc_status(pid)
            threads_max, rss_max = max(threads_max, threads), max(rss_max, rss)
            next_sample = now + 1.0
        if now >= next_keepalive:
            for s in sessions:
                try:
                    s.conn.send("OPTIONS", args.url, Session=s.session_id)
                except OSError:
                    pass
            next_keepalive = now + 20
        receiver.poll(min(0.05, window_end - now))
    elapsed = time.monotonic() - t0
    end_ns = time.time_ns()
    cpu1 = proc_cpu(pid) if pid else None
    threads1 = thread_cpu(pid) if pid else {}
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    threads_end, rss_end = proc_status(pid) if pid else (0, 0.0)
    result = analyse(sessions, args.fps, elapsed, end_ns)
    loadgen_cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    result.update(
        sessions=args.sessions,
        sessions_open=len(sessions),
        setup_error=error,
        transport=args.transport,
        gro=receiver.gro,
        gro_datagrams=receiver.gro_datagrams,
        fps=args.fps,
        window_s=elapsed,
        setup_s=setup_seconds,
        loadgen_cpu_share=loadgen_cpu / elapsed,
    )
    if pid:
        cpu = cpu1 - cpu0
        frames = result["frames_complete"]
        result.update(
            server_cpu_s=cpu,
            server_cpu_share=cpu / elapsed,
            cpu_ms_per_frame=(cpu * 1000 / frames) if frames else None,
            cpu_ms_per_mb=(cpu * 1000 / (result["bytes"] / 1e6)) if result["bytes"] else None,
            threads=max(threads_max, threads_end),
            thread_cpu_share=thread_shares(threads0, threads1, elapsed),
            rss_mib=max(rss_max, rss_end),
        )
    for s in sessions:
        try:
            s.conn.sock.setblocking(True)
            s.conn.sock.settimeout(0.5)
            s.conn.send("TEARDOWN", args.url, Session=s.session_id)
        except OSError:
            pass
    for s in sessions:
        for sock in (s.rtp, s.rtcp, s.conn.sock):
            if sock is not None:
                sock.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--fps", type=float, required=True)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    parser.add_argument("--gro", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--server-pid", type=int)
    args = parser.parse_args(argv)
    result = run(args)
    json.dump(result, sys.stdout)
    print()
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
