"""Benchmark: N browsers (HTTP multipart MJPEG viewers) of one 1280x720 30 fps file.

    .venv/bin/python bench/http_bench.py [--sessions 100] [--seconds 10] [--warmup 2]
                                         [--fps 30] [--size 1280x720] [--out FILE.json]

Theory of operation: ffmpeg makes a raw MJPEG clip (testsrc2, standard Huffman tables, as
bench/run.py's media), ``Server.py --http 0`` serves it as a subprocess, and this process
opens N ``GET /stream/NAME`` connections and reads them all in one epoll loop, parsing the
multipart parts by their ``Content-Length``. After the last viewer's first frame and a
warm-up, it counts parts per viewer over ``--seconds``, and reads the server's CPU time
(utime+stime from /proc/PID/stat) at the window's ends. *Delivered*: parts received / parts
due (N x fps x window). *CPU per delivered frame*: server CPU seconds / parts received. The
RTSP figures for the same N and size (BENCHMARKS.md, from bench/run.py) are printed next to
it when that file has them. One JSON object on stdout, a summary on stderr.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from loadgen import proc_cpu  # noqa: E402

HEADER_END = b"\r\n\r\n"
LENGTH = re.compile(rb"Content-Length: (\d+)", re.I)


class Viewer:
    """One HTTP viewer: its socket and a small multipart parser (counting parts)."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        self.sock.setblocking(False)
        self.buffer = bytearray()
        self.header_done = False
        self.skip = 0  # bytes of the current JPEG still to come
        self.parts = 0

    def feed(self, data: bytes) -> None:
        if self.skip >= len(data):
            self.skip -= len(data)
            return
        self.buffer += data[self.skip:]
        self.skip = 0
        while True:
            end = self.buffer.find(HEADER_END)
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            del self.buffer[:end + 4]
            if not self.header_done:
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"refused: {head[:80]!r}")
                self.header_done = True
                continue
            match = LENGTH.search(head)
            if match is None:
                raise RuntimeError(f"a part without Content-Length: {head[:80]!r}")
            need = int(match.group(1)) + 2  # the JPEG and its CRLF
            self.parts += 1
            if need > len(self.buffer):
                self.skip = need - len(self.buffer)
                self.buffer.clear()
                return
            del self.buffer[:need]


def make_clip(folder: Path, size: str, fps: float, seconds: float) -> Path:
    path = folder / "bench.mjpeg"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         f"testsrc2=size={size}:rate={fps:g}", "-t", f"{seconds:g}", "-q:v", "5",
         "-huffman", "default", "-f", "mjpeg", str(path)],
        check=True,
    )
    return path


def start_server(folder: Path, fps: float, sessions: int) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "Server.py"), "0", "--host", "127.0.0.1", "--root",
         str(folder), "--fps", f"{fps:g}", "--max-sessions", str(sessions + 10), "--http", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    for line in proc.stdout:  # type: ignore[union-attr]
        match = re.search(r"browsers: http://127\.0\.0\.1:(\d+)/", line)
        if match:
            return proc, int(match.group(1))
    raise RuntimeError("the server did not start")


def rtsp_figure(sessions: int) -> str | None:
    """Our RTSP row for ``sessions`` at 720p from BENCHMARKS.md, if there is one."""
    try:
        text = (ROOT / "BENCHMARKS.md").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("| 720p | ours | udp |") and f"| {sessions} |" in line:
            cells = [c.strip() for c in line.strip("|").split("|")]
            return f"RTSP/UDP, N={sessions}, 720p (BENCHMARKS.md): {cells[4]} CPU per frame, " \
                   f"{cells[9]} delivered"
    return None


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        clip = make_clip(folder, args.size, args.fps, max(args.seconds + args.warmup + 5, 12))
        server, port = start_server(folder, args.fps, args.sessions)
        viewers: list[Viewer] = []
        try:
            selector = selectors.DefaultSelector()
            for _ in range(args.sessions):
                viewer = Viewer(port, f"/stream/{clip.name}")
                viewers.append(viewer)
                selector.register(viewer.sock, selectors.EVENT_READ, viewer)

            def pump(until: float) -> None:
                while time.monotonic() < until:
                    for key, _ in selector.select(timeout=0.05):
                        data = key.fileobj.recv(1 << 20)  # type: ignore[union-attr]
                        if not data:
                            raise RuntimeError("the server closed a stream")
                        key.data.feed(data)

            deadline = time.monotonic() + 30
            while any(v.parts == 0 for v in viewers):
                if time.monotonic() > deadline:
                    raise RuntimeError("not every viewer got a frame within 30 s")
                pump(time.monotonic() + 0.1)
            pump(time.monotonic() + args.warmup)
            before = [v.parts for v in viewers]
            cpu0, own0 = proc_cpu(server.pid), resource.getrusage(resource.RUSAGE_SELF)
            start = time.monotonic()
            pump(start + args.seconds)
            window = time.monotonic() - start
            cpu1, own1 = proc_cpu(server.pid), resource.getrusage(resource.RUSAGE_SELF)
            received = sum(v.parts - b for v, b in zip(viewers, before, strict=True))
        finally:
            for viewer in viewers:
                viewer.sock.close()
            server.terminate()
            server.wait(timeout=10)
            server.stdout.close()  # type: ignore[union-attr]
    due = args.sessions * args.fps * window
    server_cpu = cpu1 - cpu0
    own = (own1.ru_utime + own1.ru_stime) - (own0.ru_utime + own0.ru_stime)
    return {
        "sessions": args.sessions, "size": args.size, "fps": args.fps,
        "window_s": round(window, 2), "frames_received": received, "frames_due": round(due),
        "delivered_pct": round(100 * received / due, 2) if due else None,
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_pct": round(100 * server_cpu / window, 1),
        "cpu_per_frame_ms": round(1000 * server_cpu / received, 3) if received else None,
        "loadgen_cpu_pct": round(100 * own / window, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--fps", type=float, default=30)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    result = run(args)
    print(json.dumps(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"HTTP, N={result['sessions']}, {result['size']}@{result['fps']:g}: "
          f"{result['cpu_per_frame_ms']} ms CPU per delivered frame, "
          f"{result['delivered_pct']} % delivered (server {result['server_cpu_pct']} % of a "
          f"core, load generator {result['loadgen_cpu_pct']} %)", file=sys.stderr)
    rtsp = rtsp_figure(result["sessions"])
    if rtsp:
        print(rtsp, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
