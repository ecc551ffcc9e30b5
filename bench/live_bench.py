"""Live-stream benchmarks (issue 10): latency through a relay, and live fan-out CPU.

    .venv/bin/python bench/live_bench.py [--seconds 10] [--sessions 1,10,50,100]
        [--only latency|fanout] [--out FILE.md] [--json FILE]

Theory of operation. The frames: ffmpeg's ``testsrc2`` at 1280x720 30 fps, each frame
decoded by Pillow, its loop index (0..L-1) drawn on top as a row of 10 black/white
blocks of 128x96 pixels (one bit each), and saved again by Pillow (quality 85, standard
Huffman tables), into one raw MJPEG file: L = 300 frames, a 10 s loop. Encoded once, before
anything is timed.

1. **Latency, publisher -> server -> player display.** For each relay, the publisher is a
   subprocess of this script (``publish``): ANNOUNCE, SETUP ``mode=record`` (UDP, or
   interleaved TCP), RECORD, then each frame of the file on an absolute 30 fps schedule,
   RFC 2435 packetized by :func:`mjpeg_rtsp.rfc2435.packetize`, with an RTCP sender report
   every second mapping its RTP clock to the wall clock. It records the wall time at which
   it starts sending each frame (the *capture time*). The viewer is another subprocess
   (``view``): :class:`mjpeg_rtsp.player.Player` with ``latency=0`` (frames released as
   soon as complete) and display size 1280x720; the moment the decoder publishes a picture
   (``Player._latest``, what a window shows) is its *display time*, and the blocks read
   back from the decoded picture give the frame's loop index. Latency = display time -
   the capture time of the latest send of that index: nothing depends on what the relay
   does with RTP timestamps or sender reports. The player's own ``latency_ms`` (from the
   relay's sender reports) is printed as a cross-check where the relay sends them.
   Relays: ours (``Server.py --publish``, path ``/live/cam``), gst-rtsp-server in record
   mode relaying into a shared play media (``bench/gst_live_peer.py --record``: a
   ``GST_RTSP_TRANSPORT_MODE_RECORD`` factory ``rtpjpegdepay ! appsink`` feeding the play
   media's ``appsrc ! rtpjpegpay``), and Debian's ``rtsp-server-perl`` (a pure relay).
2. **Live fan-out CPU per delivered frame.** One live source of the same pre-encoded
   frames at 30 fps, N viewers received by ``bench/loadgen.py`` (UDP, no GRO) with the
   server's pid: ours ``Server.py --live cam=file:FRAMES.mjpeg --fps 30`` (a thread in the
   server reads the file's frames and paces them); gst-rtsp-server shared media
   ``appsrc ! rtpjpegpay`` fed the same frames from memory by a thread in the server
   process on the same schedule (``bench/gst_live_peer.py --frames``). Neither encodes
   anything while measured; both pay their source's pacing inside the measured process.

Output: Markdown on stdout (and ``--out``), the raw results as JSON (``--json``); progress
on stderr.
"""

from __future__ import annotations

import argparse
import bisect
import io
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from loadgen import RtspConnection  # noqa: E402

from mjpeg_rtsp.jpeg import scan_jpeg  # noqa: E402
from mjpeg_rtsp.mjpeg_stream import MjpegStreamSplitter  # noqa: E402
from mjpeg_rtsp.rfc2435 import packetize  # noqa: E402

GST_PYTHON = "/usr/bin/python3"
PERL_RELAY = "rtsp-server-perl"
WIDTH, HEIGHT, FPS = 1280, 720, 30
LOOP_FRAMES = 300
BITS = 10  # blocks across the top: 10 x 128 px = 1280
BLOCK_W, BLOCK_H = WIDTH // BITS, 96
STARTED = time.monotonic()


def note(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


# --- the frames -----------------------------------------------------------------------------

def split_mjpeg(data: bytes) -> list[bytes]:
    """The JPEGs of a raw MJPEG byte string (the server's own splitter)."""
    return MjpegStreamSplitter().feed(data)


def make_frames(path: Path) -> dict:
    from PIL import Image, ImageDraw

    background = subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i",
         f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}", "-frames:v", str(LOOP_FRAMES),
         "-q:v", "2", "-f", "mjpeg", "-"], capture_output=True, check=True, timeout=120).stdout
    sizes = []
    with open(path, "wb") as out:
        for index, jpeg in enumerate(split_mjpeg(background)):
            image = Image.open(io.BytesIO(jpeg)).convert("RGB")
            draw = ImageDraw.Draw(image)
            for bit in range(BITS):
                white = (index >> (BITS - 1 - bit)) & 1
                x = bit * BLOCK_W
                draw.rectangle((x, 0, x + BLOCK_W - 1, BLOCK_H - 1),
                               fill=(255, 255, 255) if white else (0, 0, 0))
            encoded = io.BytesIO()
            image.save(encoded, "JPEG", quality=85)
            frame = encoded.getvalue()
            if scan_jpeg(frame).rfc2435_type is None:
                raise RuntimeError("Pillow wrote a JPEG that RFC 2435 cannot carry")
            sizes.append(len(frame))
            out.write(frame)
    return {"frames": len(sizes), "mean_bytes": sum(sizes) / len(sizes)}


def read_index(image) -> int:
    """The loop index drawn by make_frames, read from a decoded picture of any size."""
    sx, sy = image.width / WIDTH, image.height / HEIGHT
    index = 0
    for bit in range(BITS):
        r, g, b = image.getpixel((int((bit * BLOCK_W + BLOCK_W // 2) * sx),
                                  int(BLOCK_H // 2 * sy)))[:3]
        index = (index << 1) | (r + g + b > 384)
    return index


# --- the publisher (a subprocess: python bench/live_bench.py publish ...) --------------------

class PublishConnection(RtspConnection):
    """loadgen's blocking RTSP connection, with a body for ANNOUNCE."""

    body: bytes = b""

    def send(self, method: str, url: str, **headers: str) -> None:
        if not self.body:
            return super().send(method, url, **headers)
        self.cseq += 1
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self.cseq}", "User-Agent: mjpeg-bench",
                 "Content-Type: application/sdp", f"Content-Length: {len(self.body)}"]
        lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + self.body)
        self.body = b""


def publish(url: str, frames_path: str, seconds: float, transport: str) -> dict:
    """ANNOUNCE, SETUP record, RECORD, then the frames at FPS; the send times per index."""
    import urllib.parse

    from mjpeg_rtsp.ports import bind_rtp_pair
    from mjpeg_rtsp.rtcp import SenderReport, SourceDescription, build_compound, ntp_from_unix
    from mjpeg_rtsp.rtp import pack_header
    from mjpeg_rtsp.sdp import VideoDescription, build_sdp

    frames = split_mjpeg(Path(frames_path).read_bytes())
    payloads = [packetize(f, scan_jpeg(f)) for f in frames]  # before anything is timed
    parts = urllib.parse.urlsplit(url)
    conn = PublishConnection(parts.hostname, parts.port)
    # ffmpeg's control naming, which rtsp-server-perl requires
    sdp = build_sdp(VideoDescription("bench", WIDTH, HEIGHT, FPS, None, "streamid=0"),
                    "127.0.0.1", 1)
    conn.body = sdp.encode()
    status, _, _ = conn.request("ANNOUNCE", url)
    if status != 200:
        return {"error": f"ANNOUNCE: {status}"}
    rtp = rtcp = None
    if transport == "udp":
        rtp, rtcp = bind_rtp_pair("127.0.0.1")
        port = rtp.getsockname()[1]
        spec = f"RTP/AVP/UDP;unicast;client_port={port}-{port + 1};mode=record"
    else:
        spec = "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"
    status, fields, _ = conn.request("SETUP", url.rstrip("/") + "/streamid=0", Transport=spec)
    if status != 200:
        return {"error": f"SETUP: {status}"}
    session = fields.get("session", "").split(";")[0]
    server_rtp = None
    if transport == "udp":
        reply = fields.get("transport", "")
        ports = [p.split("=")[1] for p in reply.split(";") if p.startswith("server_port=")]
        if not ports:
            return {"error": f"SETUP reply without server_port: {reply!r}"}
        server_rtp = int(ports[0].split("-")[0])
    status, _, _ = conn.request("RECORD", url, Session=session, Range="npt=0.000-")
    if status != 200:
        return {"error": f"RECORD: {status}"}

    ssrc = int.from_bytes(os.urandom(4), "big")
    seq = int.from_bytes(os.urandom(2), "big")
    ts0 = int.from_bytes(os.urandom(4), "big")
    wall0 = time.time()
    mono0 = time.monotonic()
    packets = octets = 0
    sends: list[tuple[int, float]] = []

    def send(channel: int, data: bytes) -> None:
        if transport == "udp":
            sock = rtp if channel == 0 else rtcp
            sock.sendto(data, ("127.0.0.1", server_rtp + channel))
        else:
            conn.sock.sendall(b"$" + bytes([channel]) + len(data).to_bytes(2, "big") + data)

    next_report = 0.0
    k = 0
    try:
        while True:
            due = mono0 + k / FPS
            now = time.monotonic()
            if now - mono0 >= seconds:
                break
            if due > now:
                time.sleep(due - now)
            capture = time.time()
            timestamp = (ts0 + round((capture - wall0) * 90000)) & 0xFFFFFFFF
            if time.monotonic() >= next_report:  # with the first frame, then every second
                report = SenderReport(ssrc, ntp_from_unix(capture), timestamp, packets, octets)
                send(1, build_compound(report, SourceDescription.cname(ssrc, "bench")))
                next_report = time.monotonic() + 1.0
            chunks = payloads[k % len(frames)]
            for i, payload in enumerate(chunks):
                send(0, pack_header(26, seq, timestamp, ssrc, i == len(chunks) - 1) + payload)
                seq = (seq + 1) & 0xFFFF
                packets += 1
                octets += len(payload)
            sends.append((k % len(frames), capture))
            k += 1
        try:
            conn.request("TEARDOWN", url, Session=session)
        except OSError:
            pass
    finally:
        for sock in (rtp, rtcp, conn.sock):
            if sock is not None:
                sock.close()
    return {"sends": sends, "frames_sent": k}


# --- the viewer (a subprocess: python bench/live_bench.py view ...) ---------------------------

def view(url: str, seconds: float) -> dict:
    from mjpeg_rtsp.client import parse_rtsp_url
    from mjpeg_rtsp.player import Player, PlayerOptions

    shown: list[tuple[int, float]] = []

    class TimedPlayer(Player):
        """Notes each picture's display time (when the decoder publishes it) and index."""

        _bench_latest = None

        @property
        def _latest(self):
            return self._bench_latest

        @_latest.setter
        def _latest(self, frame):
            if frame is not None:
                at = self.wallclock()
                shown.append((read_index(frame.image), at))
            self._bench_latest = frame

    deadline = time.monotonic() + 15
    while True:  # the path exists once the publisher has announced it
        player = TimedPlayer(parse_rtsp_url(url),
                             PlayerOptions(latency=0.0, display_size=(WIDTH, HEIGHT)))
        player.start()
        player.setup()
        player.play()
        started = time.monotonic()
        while time.monotonic() - started < 2 and not shown and not player.failed:
            time.sleep(0.05)
        if shown or time.monotonic() > deadline:
            break
        player.close()
        time.sleep(0.2)
    end = time.monotonic() + seconds
    while time.monotonic() < end and not player.failed:
        time.sleep(0.1)
    stats = player.stats(whole_run=True)
    failed = player.failed
    player.close()
    return {"shown": shown, "latency_ms": stats.get("latency_ms"), "failed": failed,
            "frames_skipped": stats.get("frames_skipped"),
            "packets_lost": stats.get("packets_lost")}


# --- running the relays -----------------------------------------------------------------------

def read_line(proc: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise RuntimeError("server did not start in time")
    return proc.stdout.readline()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    if proc.stdout:
        proc.stdout.close()


def start_relay(kind: str, folder: Path, log) -> tuple[subprocess.Popen, str, str]:
    """(process, publisher URL, viewer URL)."""
    if kind == "ours":
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "Server.py"), "0", "--host", "127.0.0.1", "--root",
             str(folder), "--publish"], stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT)
        port = int(read_line(proc, 20).split()[5].rstrip(","))
        url = f"rtsp://127.0.0.1:{port}/live/cam"
        return proc, url, url
    if kind == "gst":
        proc = subprocess.Popen([GST_PYTHON, str(BENCH / "gst_live_peer.py"), "--record"],
                                stdout=subprocess.PIPE, stderr=log, text=True)
        line = read_line(proc, 20)
        if not line.startswith("READY"):
            raise RuntimeError(f"gst_live_peer: {line!r}")
        port = line.split()[1]
        return proc, f"rtsp://127.0.0.1:{port}/publish", f"rtsp://127.0.0.1:{port}/test"
    client, source = free_port(), free_port()
    proc = subprocess.Popen(
        [PERL_RELAY, "--clientport", str(client), "--serverport", str(source),
         "--client_listen_address", "127.0.0.1", "--source_listen_address", "127.0.0.1",
         "--rtp_start_port", str(20000 + os.getpid() % 20000)],
        stdout=subprocess.PIPE, stderr=log, text=True)
    deadline = time.monotonic() + 20
    while True:  # it prints nothing when ready: wait for both ports
        try:
            for port in (client, source):
                socket.create_connection(("127.0.0.1", port), 0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("rtsp-server-perl did not start") from None
            time.sleep(0.1)
    return (proc, f"rtsp://127.0.0.1:{source}/live/cam",
            f"rtsp://127.0.0.1:{client}/live/cam")


def json_child(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)


def child_result(proc: subprocess.Popen, timeout: float) -> dict:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return {"error": "timed out"}
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": err.strip()[-400:] or "no output"}


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure_latency(kind: str, folder: Path, frames: Path, seconds: float,
                    transport: str) -> dict:
    with open(folder / f"latency-{kind}.log", "a") as log:
        relay, publish_url, view_url = start_relay(kind, folder, log)
        try:
            publisher = json_child(["publish", publish_url, str(frames), "--seconds",
                                    str(seconds + 6), "--transport", transport])
            viewer = json_child(["view", view_url, "--seconds", str(seconds)])
            seen = child_result(viewer, seconds + 60)
            sent = child_result(publisher, seconds + 60)
        finally:
            stop(relay)
    if "error" in seen or "error" in sent:
        return {"relay": kind, "error": seen.get("error") or sent.get("error")}
    by_index: dict[int, list[float]] = {}
    for index, at in sent["sends"]:
        by_index.setdefault(index, []).append(at)
    latencies, unmatched = [], 0
    for index, at in seen["shown"][FPS:]:  # the first second is warm-up
        times = by_index.get(index, [])
        i = bisect.bisect_right(times, at)
        if i == 0:
            unmatched += 1
            continue
        latencies.append((at - times[i - 1]) * 1000)
    shown = len(seen["shown"])
    return {
        "relay": kind, "transport": transport, "frames_sent": sent["frames_sent"],
        "frames_shown": shown, "unmatched": unmatched, "frames_measured": len(latencies),
        "median_ms": statistics.median(latencies) if latencies else None,
        "p95_ms": percentile(latencies, 0.95), "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies) if latencies else None,
        "player_latency_ms": seen.get("latency_ms"), "failed": seen.get("failed"),
        "frames_skipped": seen.get("frames_skipped"), "packets_lost": seen.get("packets_lost"),
    }


def start_fanout_server(kind: str, folder: Path, frames: Path, log) -> tuple:
    if kind == "ours":
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "Server.py"), "0", "--host", "127.0.0.1", "--root",
             str(folder), "--fps", str(FPS), "--max-sessions", "200",
             "--live", f"cam=file:{frames}"],
            stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT)
        port = int(read_line(proc, 20).split()[5].rstrip(","))
        return proc, f"rtsp://127.0.0.1:{port}/cam"
    proc = subprocess.Popen([GST_PYTHON, str(BENCH / "gst_live_peer.py"), "--frames",
                             str(frames), "--fps", str(FPS)],
                            stdout=subprocess.PIPE, stderr=log, text=True)
    line = read_line(proc, 20)
    if not line.startswith("READY"):
        raise RuntimeError(f"gst_live_peer: {line!r}")
    return proc, f"rtsp://127.0.0.1:{line.split()[1]}/test"


def measure_fanout(kind: str, sessions: int, folder: Path, frames: Path, seconds: float,
                   warmup: float) -> dict:
    with open(folder / f"fanout-{kind}.log", "a") as log:
        proc, url = start_fanout_server(kind, folder, frames, log)
        try:
            done = subprocess.run(
                [sys.executable, str(BENCH / "loadgen.py"), url, "--sessions", str(sessions),
                 "--fps", str(FPS), "--seconds", str(seconds), "--warmup", str(warmup),
                 "--server-pid", str(proc.pid), "--no-gro"],
                capture_output=True, text=True, timeout=seconds + warmup + 180)
            try:
                result = json.loads(done.stdout.strip().splitlines()[-1])
            except (IndexError, json.JSONDecodeError):
                result = {"error": f"loadgen: {done.stderr.strip()[-300:]}"}
        finally:
            stop(proc)
    result.update(server=kind, n=sessions)
    return result


# --- the report -------------------------------------------------------------------------------

def fmt(value, spec: str = ".1f", suffix: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{suffix}"


RELAY_NAMES = {"ours": "ours (`Server.py --publish`)",
               "gst": "gst-rtsp-server, record -> shared play media",
               "perl": "rtsp-server-perl"}


def report(results: dict) -> str:
    lines = ["# Live streams (issue 10)", ""]
    info = results["info"]
    lines += [f"Frames: {info['frames']['frames']} Pillow JPEGs {WIDTH}x{HEIGHT} (testsrc2 with "
              f"the index in blocks), {info['frames']['mean_bytes'] / 1000:.1f} KB on average, "
              f"{FPS} fps. Load average before: {info['load_before']}.", ""]
    if results.get("latency"):
        lines += ["## End-to-end latency, publisher -> server -> player display "
                  f"({WIDTH}x{HEIGHT} {FPS} fps, player `--latency 0`)", "",
                  "| relay | publisher transport | frames measured | median | p95 | p99 | max "
                  "| player's own latency_ms (SR), median / p95 | skipped | lost |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in results["latency"]:
            if "error" in row:
                lines.append(f"| {RELAY_NAMES[row['relay']]} | {row.get('transport', '')} | "
                             f"error: {row['error'][:120]} |||||||")
                continue
            own = row.get("player_latency_ms") or {}
            lines.append(
                f"| {RELAY_NAMES[row['relay']]} | {row['transport']} | {row['frames_measured']} "
                f"| {fmt(row['median_ms'], '.1f', ' ms')} | {fmt(row['p95_ms'], '.1f', ' ms')} "
                f"| {fmt(row['p99_ms'], '.1f', ' ms')} | {fmt(row['max_ms'], '.1f', ' ms')} "
                f"| {fmt(own.get('median'), '.1f')} / {fmt(own.get('p95'), '.1f')} ms "
                f"| {row['frames_skipped']} | {row['packets_lost']} |")
        lines.append("")
    if results.get("fanout"):
        lines += ["## Live fan-out: server CPU per delivered frame "
                  f"(1 live source {WIDTH}x{HEIGHT} {FPS} fps, RTP over UDP)", "",
                  "| viewers | ours | gst shared media | **ours / gst** | ours delivered "
                  "| gst delivered | ours server CPU | gst server CPU "
                  "| load gen. CPU (ours / gst) |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        by = {(r["server"], r["n"]): r for r in results["fanout"]}
        for n in sorted({r["n"] for r in results["fanout"]}):
            a, b = by.get(("ours", n), {}), by.get(("gst", n), {})
            ratio = (a["cpu_ms_per_frame"] / b["cpu_ms_per_frame"]
                     if a.get("cpu_ms_per_frame") and b.get("cpu_ms_per_frame") else None)
            lines.append(
                f"| {n} | {fmt(a.get('cpu_ms_per_frame'), '.3f', ' ms')} "
                f"| {fmt(b.get('cpu_ms_per_frame'), '.3f', ' ms')} | **{fmt(ratio, '.2f')}** "
                f"| {fmt(_pct(a.get('delivered')), '.2f', ' %')} "
                f"| {fmt(_pct(b.get('delivered')), '.2f', ' %')} "
                f"| {fmt(_pct(a.get('server_cpu_share')), '.0f', ' %')} "
                f"| {fmt(_pct(b.get('server_cpu_share')), '.0f', ' %')} "
                f"| {fmt(_pct(a.get('loadgen_cpu_share')), '.0f', ' %')} / "
                f"{fmt(_pct(b.get('loadgen_cpu_share')), '.0f', ' %')} |")
        lines.append("")
    return "\n".join(lines)


def _pct(value: float | None) -> float | None:
    return None if value is None else value * 100


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    pub = sub.add_parser("publish")
    pub.add_argument("url")
    pub.add_argument("frames")
    pub.add_argument("--seconds", type=float, default=10)
    pub.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    vw = sub.add_parser("view")
    vw.add_argument("url")
    vw.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--sessions", default="1,10,50,100")
    parser.add_argument("--relays", default="ours,gst,perl")
    parser.add_argument("--only", choices=("latency", "fanout"))
    parser.add_argument("--out")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.mode == "publish":
        print(json.dumps(publish(args.url, args.frames, args.seconds, args.transport)))
        return 0
    if args.mode == "view":
        print(json.dumps(view(args.url, args.seconds)))
        return 0

    folder = Path(tempfile.mkdtemp(prefix="live-bench-"))
    frames = folder / "frames.mjpeg"
    note(f"encoding {LOOP_FRAMES} frames into {frames}")
    results: dict = {"info": {"frames": make_frames(frames),
                              "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg())}}
    if args.only != "fanout":
        results["latency"] = []
        for kind in args.relays.split(","):
            for transport in (("udp", "tcp") if kind == "ours" else ("udp",)):
                note(f"latency through {kind}, publisher over {transport}")
                try:
                    row = measure_latency(kind, folder, frames, args.seconds, transport)
                except RuntimeError as exc:
                    row = {"relay": kind, "transport": transport, "error": str(exc)}
                note(f"  {row}" if "error" in row else
                     f"  median {fmt(row['median_ms'])} ms, p95 {fmt(row['p95_ms'])} ms")
                results["latency"].append(row)
    if args.only != "latency":
        results["fanout"] = []
        for n in (int(x) for x in args.sessions.split(",")):
            for kind in ("ours", "gst"):
                note(f"fan-out {kind}, {n} viewers")
                row = measure_fanout(kind, n, folder, frames, args.seconds, args.warmup)
                note(f"  {row.get('error') or fmt(row.get('cpu_ms_per_frame'), '.3f')} ms/frame")
                results["fanout"].append(row)
    results["info"]["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = report(results)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    note(f"logs in {folder}")
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "live-bench"
    sys.exit(main())
