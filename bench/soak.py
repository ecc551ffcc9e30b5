"""Soak: clients joining and leaving a server for a long time; resources must stay flat.

    python bench/soak.py [--minutes 10] [--clients 20] [--out docs/soak]

Starts ``Server.py`` as a subprocess on the bundled movie, runs N client threads that
each loop: connect, SETUP (UDP or interleaved TCP, alternately), PLAY, receive for a random
2-15 s, then TEARDOWN or just drop the connection (a third of the time), and start again.
Every 5 s it samples the server's resident memory, threads and open file descriptors from
/proc. It writes ``<out>.md`` (a table and a verdict) and ``<out>.png`` (a plot drawn with
matplotlib, a bench-only dependency: ``.venv/bin/pip install -r requirements-bench.txt``),
and exits non-zero if the last quarter's resources exceed the first sample after warm-up by
more than the allowed margin.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from plotting import pyplot, rgb  # noqa: E402

from mjpeg_rtsp.ports import bind_rtp_pair  # noqa: E402
from mjpeg_rtsp.rtsp import (  # noqa: E402
    NEED_DATA,
    Headers,
    InterleavedFrame,
    Request,
    Response,
    RtspReader,
    format_request,
)

SAMPLE_EVERY = 5.0


def proc_sample(pid: int) -> tuple[float, int, int]:
    """(RSS in MiB, threads, open fds) of a process."""
    rss = threads = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss / 1024, threads, fds


class SoakClient(threading.Thread):
    def __init__(self, port: int, number: int, stop: threading.Event, rng: random.Random):
        super().__init__(daemon=True)
        self.port, self.number, self.stop, self.rng = port, number, stop, rng
        self.sessions = self.frames = self.errors = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.one_session()
            except (OSError, ValueError) as exc:
                self.errors += 1
                print(f"client {self.number}: {exc}", file=sys.stderr)
                time.sleep(1)

    def request(self, sock, reader, cseq: int, method: str, **headers: str) -> Response:
        fields = Headers([("CSeq", str(cseq))] + [(k, v) for k, v in headers.items()])
        sock.sendall(format_request(Request(method, f"rtsp://127.0.0.1:{self.port}/movie.Mjpeg",
                                            fields)))
        while True:
            event = reader.next_event()
            if isinstance(event, Response):
                return event
            if event is NEED_DATA:
                data = sock.recv(65536)
                if not data:
                    raise ValueError("server closed the connection")
                reader.receive_data(data)

    def one_session(self) -> None:
        tcp = self.number % 2 == 1
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        reader = RtspReader()
        rtp = rtcp = None
        try:
            if tcp:
                transport = "RTP/AVP/TCP;unicast;interleaved=0-1"
            else:
                rtp, rtcp = bind_rtp_pair("127.0.0.1")
                port = rtp.getsockname()[1]
                transport = f"RTP/AVP;unicast;client_port={port}-{port + 1}"
            reply = self.request(sock, reader, 1, "SETUP", Transport=transport)
            if reply.status != 200:
                raise ValueError(f"SETUP: {reply.status}")
            session = (reply.headers.get("Session") or "").split(";")[0]
            self.request(sock, reader, 2, "PLAY", Session=session)
            self.sessions += 1
            end = time.monotonic() + self.rng.uniform(2, 15)
            source = sock if tcp else rtp
            source.settimeout(0.5)
            while time.monotonic() < end and not self.stop.is_set():
                try:
                    data = source.recv(65536)
                except TimeoutError:
                    continue
                if tcp:
                    reader.receive_data(data)
                    while (event := reader.next_event()) is not NEED_DATA:
                        if isinstance(event, InterleavedFrame) and event.channel == 0:
                            self.frames += 1 if event.data[1] & 0x80 else 0
                elif data[1] & 0x80:
                    self.frames += 1
            if self.rng.random() < 2 / 3:  # else: just drop the connection
                teardown = Request("TEARDOWN", f"rtsp://127.0.0.1:{self.port}/movie.Mjpeg",
                                   Headers([("CSeq", "3"), ("Session", session)]))
                sock.sendall(format_request(teardown))
        finally:
            sock.close()
            for s in (rtp, rtcp):
                if s is not None:
                    s.close()


def draw_plot(samples: list[tuple[float, float, int, int]], path: Path) -> None:
    plt = pyplot()
    series = [("RSS (MiB)", 1, (200, 40, 40)), ("threads", 2, (40, 120, 200)),
              ("open fds", 3, (40, 160, 60))]
    fig, axes = plt.subplots(len(series), 1, sharex=True, figsize=(9, 5.4), dpi=110,
                             layout="constrained")
    times = [s[0] for s in samples]
    for ax, (name, index, colour) in zip(axes, series, strict=True):
        values = [s[index] for s in samples]
        ax.plot(times, values, color=rgb(colour), linewidth=2)
        ax.set_ylim(0, max(values) * 1.2 or 1)
        ax.set_ylabel(name)
        ax.set_title(f"{name}: min {min(values):.1f}, max {max(values):.1f}", loc="left",
                     fontsize="medium")
        ax.grid(True, color="0.88")
    axes[-1].set_xlabel("time (s)")
    fig.suptitle("Server resources under churn (bench/soak.py)")
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "docs" / "soak"))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    pyplot()  # matplotlib is installed (requirements-bench.txt), before the long run
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "Server.py"), "0", "--host", "127.0.0.1",
         "--root", str(ROOT), "--max-sessions", str(args.clients * 2)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        port = int(server.stdout.readline().split()[5].rstrip(","))
        stop = threading.Event()
        rng = random.Random(args.seed)
        clients = [SoakClient(port, i, stop, random.Random(rng.random()))
                   for i in range(args.clients)]
        for client in clients:
            client.start()
            time.sleep(0.1)
        samples: list[tuple[float, float, int, int]] = []
        started = time.monotonic()
        while time.monotonic() - started < args.minutes * 60:
            rss, threads, fds = proc_sample(server.pid)
            samples.append((time.monotonic() - started, rss, threads, fds))
            time.sleep(SAMPLE_EVERY)
        stop.set()
        for client in clients:
            client.join(20)
        time.sleep(2)
        after = proc_sample(server.pid)
    finally:
        server.terminate()
        server.wait(10)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    draw_plot(samples, out.with_suffix(".png"))
    warm = samples[min(len(samples) - 1, max(1, len(samples) // 10))]
    tail = samples[-max(1, len(samples) // 4):]
    rss_growth = statistics.mean(s[1] for s in tail) - warm[1]
    early_fds = max(s[3] for s in samples[: len(samples) // 2 + 1])
    flat = rss_growth < 10 and max(s[3] for s in tail) <= early_fds + 4
    sessions = sum(c.sessions for c in clients)
    frames = sum(c.frames for c in clients)
    errors = sum(c.errors for c in clients)
    lines = [
        "# Soak result",
        "",
        f"`python bench/soak.py --minutes {args.minutes:g} --clients {args.clients}`: "
        f"{sessions} sessions, {frames} frames received, {errors} client errors.",
        "",
        "| time (s) | RSS (MiB) | threads | open fds |",
        "|---:|---:|---:|---:|",
    ]
    step = max(1, len(samples) // 12)
    for t, rss, threads, fds in samples[::step] + [samples[-1]]:
        lines.append(f"| {t:.0f} | {rss:.1f} | {threads} | {fds} |")
    lines += [
        f"| after all clients left | {after[0]:.1f} | {after[1]} | {after[2]} |",
        "",
        f"RSS change from warm-up to the last quarter: {rss_growth:+.1f} MiB. "
        f"Verdict: {'flat' if flat else 'NOT flat'}.",
        "",
        f"![plot]({out.with_suffix('.png').name})",
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
