"""Benchmark: our server against GStreamer's RTSP server, measured in the same run.

    .venv/bin/python bench/run.py [--quick] [--sessions 1,10,50,100] [--seconds 15]
                                  [--out BENCHMARKS.md] [--drift-minutes M]

Theory of operation: generate the media with ffmpeg (a 384x288 20 fps and a
1280x720 30 fps raw MJPEG, standard Huffman tables, into a temporary folder;
for GStreamer the same JPEG frames remuxed into AVI without re-encoding, so its
demuxer timestamps them and its sinks pace them). Then, for every file, server
and number of sessions N, start that server alone as a subprocess, run
``bench/loadgen.py`` (N sessions received by one process) against it with the
server's pid, and stop it. The servers:

* ours: ``Server.py 0 --host 127.0.0.1 --root DIR --fps F --max-sessions 200``
  (with the 720p file also with ``--no-gso``, and with receivers that enable
  UDP GRO, to show what each contributes);
* gst-rtsp-server (``tools/gst_rtsp_server.py`` through /usr/bin/python3,
  ``filesrc ! avidemux ! rtpjpegpay mtu=1412``), a pipeline per client and
  shared media.

Then the player (``bench/player_bench.py``): decode and decode+display (Tk
under Xvfb) frames per second for 720p and 1080p, ffmpeg decoding the same file,
and latency from a frame's arrival to its picture being ready for the window.
Results go to ``--out`` (Markdown) and ``docs/bench-*.png`` next to it (plots
drawn with matplotlib's Agg backend, a bench-only dependency that the tests do not
need: ``.venv/bin/pip install -r requirements-bench.txt``). ``--quick``: N = 1, 10,
5 s, 384x288 only, a smoke test in under two minutes (written to a temporary folder
unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT / "tools"))

from plotting import pyplot, rgb  # noqa: E402
from xvfb import start_xvfb, stop_process  # noqa: E402

GST_PYTHON = "/usr/bin/python3"
STARTED = time.monotonic()


def note(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


# --- media ----------------------------------------------------------------------------------

@dataclass
class Media:
    key: str  # "288p", "720p"
    width: int
    height: int
    fps: int
    path: Path  # raw MJPEG
    avi: Path | None = None
    frame_bytes: float = 0.0
    frames: int = 0

    @property
    def label(self) -> str:
        return f"{self.width}x{self.height} {self.fps} fps"


def ffmpeg_mjpeg(path: Path, width: int, height: int, fps: int, seconds: float,
                 quality: int) -> None:
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         f"testsrc2=size={width}x{height}:rate={fps}", "-t", f"{seconds:g}",
         "-q:v", str(quality), "-huffman", "default", "-f", "mjpeg", str(path)],
        check=True,
    )


def make_media(folder: Path, key: str, width: int, height: int, fps: int, seconds: float,
               quality: int = 4, avi: bool = True) -> Media:
    folder.mkdir(parents=True, exist_ok=True)
    media = Media(key, width, height, fps, folder / f"{key}.mjpeg")
    ffmpeg_mjpeg(media.path, width, height, fps, seconds, quality)
    data = media.path.read_bytes()
    media.frames = data.count(b"\xff\xd9\xff\xd8") + 1
    media.frame_bytes = len(data) / media.frames
    if avi:
        media.avi = folder.parent / f"{key}.avi"
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-framerate", str(fps), "-f", "mjpeg",
             "-i", str(media.path), "-c", "copy", "-f", "avi", str(media.avi)],
            check=True,
        )
    return media


# --- servers --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Series:
    name: str
    kind: str  # "ours" or "gst"
    options: tuple = ()
    shared: bool = False
    gro: bool = False


OURS = Series("ours", "ours")
OURS_NO_GSO = Series("ours --no-gso", "ours", ("--no-gso",))
OURS_GRO = Series("ours, GRO receivers", "ours", gro=True)
GST_CLIENT = Series("gst, pipeline per client", "gst")
GST_SHARED = Series("gst, shared media", "gst", shared=True)
COLOURS = {OURS.name: (200, 40, 40), OURS_NO_GSO.name: (230, 150, 40),
           OURS_GRO.name: (150, 60, 160), GST_CLIENT.name: (40, 110, 200),
           GST_SHARED.name: (40, 150, 70)}
SERIES = (OURS, OURS_NO_GSO, OURS_GRO, GST_SHARED, GST_CLIENT)  # the plots' legend order


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise RuntimeError("server did not start in time")
    return proc.stdout.readline()


def start_server(series: Series, media: Media, logs: Path) -> tuple[subprocess.Popen, str]:
    log = open(logs / f"{series.kind}-{media.key}.log", "a")
    if series.kind == "ours":
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "Server.py"), "0", "--host", "127.0.0.1", "--root",
             str(media.path.parent), "--fps", str(media.fps), "--max-sessions", "200",
             *series.options],
            stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT,
        )
        line = read_line(proc, 20)  # "RTSP server listening on port N, media folder ..."
        port = int(line.split()[5].rstrip(","))
        return proc, f"rtsp://127.0.0.1:{port}/{media.path.name}"
    command = [GST_PYTHON, str(ROOT / "tools" / "gst_rtsp_server.py"), "--file", str(media.avi)]
    if series.shared:
        command.append("--shared")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
    line = read_line(proc, 20)
    if not line.startswith("READY"):
        raise RuntimeError(f"GStreamer server: {line!r}")
    return proc, f"rtsp://127.0.0.1:{line.split()[1]}/test"


SEND_PATHS = re.compile(
    r"send paths: UDP (\d+) frames, (\d+) sendmmsg \+ (\d+) sendmsg calls .*?; interleaved "
    r"(\d+) frames, (\d+) sendmsg calls .*?; (\d+) scheduler passes")


def send_counters(log_path: Path, offset: int) -> dict:
    """Our server's send-path counters, logged when it stops (Streamer.stop): system calls
    per frame sent to a session over the whole run (warm-up included), counted in the code,
    so without strace's cost on the CPU figures; the scheduler's passes per second."""
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return {}
    found = SEND_PATHS.findall(text)
    if not found:
        return {}  # a tree without the counters
    udp_frames, mmsg, msg, tcp_frames, tcp_msg, passes = (int(v) for v in found[-1])
    out = {"udp_frames_sent": udp_frames, "udp_sendmmsg": mmsg, "udp_sendmsg": msg,
           "tcp_frames_sent": tcp_frames, "tcp_sendmsg": tcp_msg, "passes": passes}
    if udp_frames:
        out["syscalls_per_frame"] = (mmsg + msg) / udp_frames
    elif tcp_frames:
        out["syscalls_per_frame"] = tcp_msg / tcp_frames
    return out


def run_case(series: Series, media: Media, sessions: int, seconds: float, warmup: float,
             transport: str, logs: Path) -> dict:
    log_path = logs / f"{series.kind}-{media.key}.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    proc, url = start_server(series, media, logs)
    try:
        command = [sys.executable, str(BENCH / "loadgen.py"), url, "--sessions", str(sessions),
                   "--fps", str(media.fps), "--seconds", str(seconds), "--warmup", str(warmup),
                   "--transport", transport, "--server-pid", str(proc.pid),
                   "--gro" if series.gro else "--no-gro"]
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=seconds + warmup + 180)
        try:
            result = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            result = {"error": f"loadgen: {done.stderr.strip()[-300:]}"}
    except subprocess.TimeoutExpired:
        result = {"error": "loadgen timed out"}
    finally:
        stop_process(proc)
    if series.kind == "ours":
        result.update(send_counters(log_path, offset))
        if result.get("passes"):
            sent = result["udp_frames_sent"] + result["tcp_frames_sent"]
            result["frames_per_pass"] = sent / result["passes"]
    result.update(series=series.name, file=media.key, n=sessions, transport=transport)
    return result


# --- the player -----------------------------------------------------------------------------

def player_json(args: list[str], env: dict | None = None, timeout: float = 300) -> dict:
    done = subprocess.run([sys.executable, str(BENCH / "player_bench.py"), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": done.stderr.strip()[-300:] or "no output"}


def bench_player(folder: Path, latency_media: Media, quick: bool) -> dict:
    seconds = 1 if quick else 3
    files = [make_media(folder, "720p", 1280, 720, 30, 4, avi=False)]
    if not quick:
        files.append(make_media(folder, "1080p", 1920, 1080, 30, 4, avi=False))
    out: dict = {"files": {}, "tk_note": None}
    xvfb = display = None
    if shutil.which("Xvfb") is not None:
        try:
            xvfb, display = start_xvfb("1920x1200x24")
        except RuntimeError as exc:
            note(f"player: {exc}")
    if display is None:
        out["tk_note"] = "Xvfb unavailable: Tk path not measured"
    try:
        for media in files:
            note(f"player: decode {media.key}")
            entry = {"frame_bytes": media.frame_bytes,
                     "decode": player_json(["decode", str(media.path), "--seconds",
                                            str(seconds)]),
                     "ffmpeg": player_json(["ffmpeg", str(media.path)])}
            if display:
                note(f"player: Tk under Xvfb {media.key}")
                env = dict(os.environ, DISPLAY=display)
                entry["tk"] = player_json(["tk", str(media.path), "--seconds", str(seconds)], env)
            out["files"][media.key] = entry
    finally:
        if xvfb is not None:
            stop_process(xvfb)
    note(f"player: latency ({latency_media.key})")
    out["latency"] = player_json(["latency", str(latency_media.path), "--seconds",
                                  "3" if quick else "6", "--fps", str(latency_media.fps)])
    out["latency_media"] = latency_media.label
    return out


# --- report ---------------------------------------------------------------------------------

def fmt(value, spec: str = ".2f", suffix: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:{spec}}{suffix}"


def find(rows: list[dict], series: str, key: str, n: int, transport: str = "udp") -> dict | None:
    for row in rows:
        if (row["series"], row["file"], row["n"], row["transport"]) == (series, key, n, transport):
            return row if "error" not in row else None
    return None


def ratio(a: dict | None, b: dict | None) -> str:
    if not a or not b or not a.get("cpu_ms_per_frame") or not b.get("cpu_ms_per_frame"):
        return "–"
    return f"**{a['cpu_ms_per_frame'] / b['cpu_ms_per_frame']:.2f}**"


def pct(row: dict | None, key: str, digits: int = 1) -> str:
    if not row or row.get(key) is None:
        return "–"
    return f"{min(row[key], 1.0) * 100:.{digits}f} %" if key == "delivered" else \
        f"{row[key] * 100:.{digits}f} %"


def machine() -> dict:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 1024 / 1024

    def version(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
        except (OSError, IndexError):
            return "?"

    def git(*args: str) -> str:  # read-only commands
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              cwd=ROOT).stdout.rstrip()

    from PIL import __version__ as pillow

    dirty = git("status", "--porcelain", "--untracked-files=no")
    changed = ", ".join(sorted(line[3:] for line in dirty.splitlines()))
    commit = git("rev-parse", "--short", "HEAD").strip()
    if changed:
        commit += f" + uncommitted changes in {changed}"
    return {
        "nproc": os.cpu_count(), "cpu": model, "mem_gib": mem, "kernel": platform.release(),
        "python": platform.python_version(), "pillow": pillow,
        "gstreamer": version(["gst-launch-1.0", "--version"]).split()[-1],
        "ffmpeg": " ".join(version(["ffmpeg", "-version"]).split()[:3]),
        "commit": commit,
    }


def report(args, command: str, info: dict, medias: list[Media], rows: list[dict],
           player: dict | None, drift: dict | None, png: dict[str, str]) -> str:
    out = ["# Benchmarks: our server against gst-rtsp-server, measured in the same run", ""]
    now = datetime.datetime.now(datetime.timezone.utc)
    out += [
        f"Produced by `{command}` on {now:%Y-%m-%d %H:%M} UTC "
        f"(run time {(time.monotonic() - STARTED) / 60:.1f} min).",
        "",
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), {info['mem_gib']:.0f} GiB, Linux "
        f"{info['kernel']}; Python {info['python']}, Pillow {info['pillow']}, GStreamer "
        f"{info['gstreamer']}, {info['ffmpeg']}. Code: {info['commit']}.",
        "",
        "Ratios between servers measured in this run are the result; absolute times depend on "
        "the machine (and the load generator shares its CPUs with the server).",
        "",
        "Media (ffmpeg `testsrc2`, `-q:v 4 -huffman default`, raw MJPEG): "
        + "; ".join(f"{m.label}, {m.frames} frames of {m.frame_bytes / 1000:.1f} KB on average"
                    for m in medias)
        + ". GStreamer serves the same JPEG frames remuxed into AVI (`ffmpeg -c copy -f avi`, "
          "no re-encoding) as `filesrc ! avidemux ! rtpjpegpay mtu=1412`: a raw MJPEG through "
          "`jpegparse` carries no timestamps and is sent as fast as it is read, while "
          "avidemux timestamps each frame and the server's sinks pace them at the real rate. "
          "mtu=1412 makes its packets the same as ours (1400-byte payload + 12-byte header).",
        "",
    ]
    out += targets(rows, player, drift)
    hd = [m for m in medias if m.key == "720p"]
    for media in hd + [m for m in medias if m.key != "720p"]:
        out += [f"## Server CPU per delivered frame, {media.label}, RTP over UDP", ""]
        out += ["| sessions | ours | gst shared media | gst pipeline per client | "
                "**ours / gst shared** | **ours / gst per client** | ours: frames delivered | "
                "ours: p99 pacing error |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for n in args.sessions:
            ours = find(rows, OURS.name, media.key, n)
            shared = find(rows, GST_SHARED.name, media.key, n)
            client = find(rows, GST_CLIENT.name, media.key, n)
            out.append(
                f"| {n} | {fmt(ours and ours.get('cpu_ms_per_frame'), '.3f', ' ms')} "
                f"| {fmt(shared and shared.get('cpu_ms_per_frame'), '.3f', ' ms')} "
                f"| {fmt(client and client.get('cpu_ms_per_frame'), '.3f', ' ms')} "
                f"| {ratio(ours, shared)} | {ratio(ours, client)} | {pct(ours, 'delivered', 2)} "
                f"| {fmt(ours and ours.get('pacing_p99_ms'), '.2f', ' ms')} |")
        out += ["", f"![CPU per frame vs sessions, {media.label}]({png[media.key]})", ""]
    out += ["## Every measurement", "",
            "CPU: the server process's utime+stime (/proc/PID/stat, 10 ms ticks) over the "
            "window, divided by the complete frames delivered (every packet arrived) or by the "
            "MB delivered. *Delivered*: complete frames / frames due (one per 1/fps from each "
            "session's first frame in the window to its end). *Loss*: packets missing by "
            "sequence number. *Pacing*: |interval between consecutive frames' arrivals "
            "(marker packets, kernel receive timestamps for UDP) − 1/fps|, pooled over the "
            "sessions. *Drift*: last arrival − (first arrival + k/fps), k from the RTP "
            "timestamps, the largest over the sessions. *Load gen.*: the load generator's own "
            "CPU over the window (100 % = one core).", "",
            "| file | server | transport | N | CPU/frame | CPU/MB | server CPU | threads | RSS "
            "| delivered | loss | pacing p50 / p99 / max | drift | setup | load gen. |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        if "error" in row:
            out.append(f"| {row['file']} | {row['series']} | {row['transport']} | {row['n']} "
                       f"| error: {row['error']} |||||||||||")
            continue
        out.append(
            f"| {row['file']} | {row['series']} | {row['transport']} | {row['n']} "
            f"| {fmt(row.get('cpu_ms_per_frame'), '.3f', ' ms')} "
            f"| {fmt(row.get('cpu_ms_per_mb'), '.2f', ' ms')} "
            f"| {fmt(row.get('server_cpu_share', 0) * 100, '.0f', ' %')} "
            f"| {row.get('threads', '–')} | {fmt(row.get('rss_mib'), '.0f', ' MiB')} "
            f"| {pct(row, 'delivered', 2)} | {pct(row, 'loss', 3)} "
            f"| {fmt(row.get('pacing_p50_ms'), '.2f')} / {fmt(row.get('pacing_p99_ms'), '.2f')} / "
            f"{fmt(row.get('pacing_max_ms'), '.1f', ' ms')} "
            f"| {fmt(row.get('drift_ms_max'), '+.2f', ' ms')} "
            f"| {fmt(row.get('setup_s'), '.1f', ' s')} "
            f"| {fmt(row.get('loadgen_cpu_share', 0) * 100, '.0f', ' %')} |")
    out.append("")
    out += send_path_report(rows)
    busiest = max((n for n in args.sessions if n <= 50), default=args.sessions[-1])
    picked = [r for r in rows if r["n"] == busiest and r["transport"] == "udp"
              and r.get("thread_cpu_share")]
    if picked:
        out += [f"Where the server's CPU goes at N = {busiest}, RTP over UDP (share of one core "
                "over the window: the busiest threads, name/tid, where Python threads all carry "
                "the interpreter's name; then totals by thread name, digits replaced by #):", ""]
        for row in picked:
            shares = row["thread_cpu_share"]
            if "busiest" not in shares:  # older format: totals by name only
                shares = {"busiest": {}, "by_name": shares}
            top = ", ".join(f"`{name}` {v * 100:.1f} %"
                            for name, v in shares["busiest"].items() if v > 0)
            names = ", ".join(f"`{name}` {v * 100:.1f} %"
                              for name, v in shares["by_name"].items() if v > 0)
            out.append(f"- {row['file']}, {row['series']}: busiest {top or '–'}; "
                       f"by name {names or '–'}")
        out.append("")
    if drift:
        out += ["## Long run: drift", "", "| server | file | N | minutes | delivered | drift "
                "(largest over sessions) | p99 pacing |", "|---|---|---:|---:|---:|---:|---:|"]
        for row in drift["rows"]:
            out.append(f"| {row['series']} | {row['file']} | {row['n']} | "
                       f"{row.get('window_s', 0) / 60:.1f} | {pct(row, 'delivered', 3)} | "
                       f"{fmt(row.get('drift_ms_max'), '+.2f', ' ms')} "
                       f"({fmt(row.get('drift_frames_max'), '.3f')} frames) | "
                       f"{fmt(row.get('pacing_p99_ms'), '.2f', ' ms')} |")
        out.append("")
    if player:
        out += player_report(player)
    out += ["## What limits these measurements", ""]
    worst = max((r.get("loadgen_cpu_share", 0) for r in rows if "error" not in r), default=0)
    out += [
        f"- The load generator is one Python process (epoll over N sockets, 8 MB receive "
        f"buffers). Its busiest window used {worst * 100:.0f} % of one core, so it kept up; "
        "it shares the machine's CPUs with the server, which matters most on a 2-CPU machine.",
        "- Loopback charges the *receive* path to the sender: the kernel delivers each "
        "datagram to the receiving socket inside the server's `sendmsg`. Both servers pay it "
        "alike when the receivers read datagram by datagram (every row but *GRO receivers*). "
        "With UDP GRO on the receiving sockets a GSO super-datagram is queued whole, which "
        "removes most of that cost from our server only: a loopback effect that a real network "
        "does not give, so the headline uses ordinary receivers.",
        "- CPU time comes in 10 ms ticks: at N = 1 over a short window the per-frame figure is "
        "good to a few per cent only.",
        "- Nothing else on the machine is stopped for the run: other processes' load shows "
        "in pacing and in the player's frame rates (less in CPU time, which is per process).",
        "- Pacing for UDP uses kernel receive timestamps; for interleaved TCP it is the time "
        "`recv` returned in the load generator, so it includes the loop's own delays.",
        "",
    ]
    return "\n".join(out)


def send_path_report(rows: list[dict]) -> list[str]:
    """System calls per frame of our server, from its own counters (see send_counters)."""
    ours = [r for r in rows if "error" not in r and r.get("syscalls_per_frame") is not None]
    if not ours:
        return []
    out = ["System calls per frame sent to a session (our server's counters over its whole "
           "run: UDP sendmmsg + sendmsg calls per frame, or interleaved sendmsg calls per "
           "frame; *frames per pass*: frames sent per scheduler wake-up). GStreamer's are not "
           "counted (strace would cost it more CPU than it measures).", "",
           "| file | server | transport | N | syscalls per frame | sendmmsg | sendmsg | "
           "frames per pass |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in ours:
        out.append(f"| {r['file']} | {r['series']} | {r['transport']} | {r['n']} "
                   f"| {r['syscalls_per_frame']:.3f} | {r.get('udp_sendmmsg', 0)} "
                   f"| {r.get('udp_sendmsg', 0) + r.get('tcp_sendmsg', 0)} "
                   f"| {fmt(r.get('frames_per_pass'), '.2f')} |")
    return out + [""]


def targets(rows: list[dict], player: dict | None, drift: dict | None = None) -> list[str]:
    """Issue 5's targets, checked against this run where it measured them."""
    lines = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    ours, shared = find(rows, OURS.name, "720p", 50), find(rows, GST_SHARED.name, "720p", 50)
    if ours and shared and ours.get("cpu_ms_per_frame") and shared.get("cpu_ms_per_frame"):
        r = ours["cpu_ms_per_frame"] / shared["cpu_ms_per_frame"]
        lines.append(f"- CPU per frame at N = 50, 720p, ours / gst shared media = {r:.2f} "
                     f"(target <= 1.0: {verdict(r <= 1.0)}; stretch 0.5: {verdict(r <= 0.5)}), "
                     f"{pct(ours, 'delivered', 2)} of frames delivered.")
        p99 = ours.get("pacing_p99_ms")
        lines.append(f"- Pacing p99 at N = 50, 720p: {fmt(p99, '.2f', ' ms')} (target <= 1 ms: "
                     f"{verdict(p99 is not None and p99 <= 1.0)}).")
    hundred = find(rows, OURS.name, "720p", 100)
    if hundred:
        lines.append(f"- N = 100, 720p: {pct(hundred, 'delivered', 2)} of frames delivered "
                     f"(target >= 99.9 %: {verdict(hundred['delivered'] >= 0.999)}).")
    if player:
        tk = player["files"].get("1080p", {}).get("tk", {}).get("tk", {})
        for size, label in (("full", "1920x1080 shown at full size"),
                            ("1280x720", "1920x1080 shown in a 1280x720 window")):
            if size in tk:
                fps = tk[size]["fps"]
                lines.append(f"- Player, {label}: decode + Tk {fps:.0f} fps, {fps / 30:.1f}x "
                             f"a 30 fps stream (target >= 2x: {verdict(fps >= 60)}).")
    if not lines:
        return []
    if drift and drift["rows"] and drift["rows"][0].get("drift_frames_max") is not None:
        row = drift["rows"][0]
        frames = abs(row["drift_frames_max"])
        lines.append(f"- Drift over {row.get('window_s', 0) / 60:.0f} minutes: "
                     f"{row['drift_ms_max']:+.2f} ms, {frames:.3f} frames "
                     f"(target 0 frames: {verdict(frames < 0.5)}).")
    else:
        lines.append("- Drift over 10 minutes: `--drift-minutes 10` (not part of the default "
                     "run).")
    return ["## Issue 5's targets in this run", "", *lines, ""]


def player_report(player: dict) -> list[str]:
    out = ["## The player", "",
           "Frames per second (more is better; 30 fps needs 30, the target is 2x headroom). "
           "*Decode*: the player's own decoder threads (`Player._decode_loop`, two: Pillow in "
           "memory, JPEG draft mode when the display is smaller, at 1/2 for large frames shown "
           "at 2/3 or less, RGB, resize to the display size) fed the file's frames through "
           "their queue as fast as they take them. *Decode + Tk*: the window's pipeline, those "
           "decoders and the Tk thread showing each new picture with `PhotoImage.paste` in "
           "place (as `Client._show`) and `update_idletasks`, under Xvfb. ffmpeg: "
           "`ffmpeg -benchmark -f mjpeg -i FILE -f null -` (decoding to YUV, no scaling), "
           "single-threaded and automatic.", ""]
    if player.get("tk_note"):
        out += [f"Note: {player['tk_note']}.", ""]
    out += ["| file | display | decode | decode + Tk (display part) | ffmpeg 1 thread | "
            "ffmpeg auto threads |", "|---|---|---:|---:|---:|---:|"]
    for key, entry in player["files"].items():
        decode = entry["decode"].get("decode", {})
        tk = entry.get("tk", {}).get("tk", {})
        ff = entry["ffmpeg"].get("ffmpeg", [{}, {}])
        for size in ("full", "1280x720", "640x360"):
            if size not in decode:
                continue
            shown = decode[size].get("shown_size") or ["?", "?"]
            tk_cell = "–"
            if size in tk:
                tk_cell = (f"{tk[size]['fps']:.0f} fps ({tk[size]['display_ms']:.1f} ms "
                           "per frame)")
            out.append(
                f"| {key} ({entry['frame_bytes'] / 1000:.0f} KB) | {size} → "
                f"{shown[0]}x{shown[1]} | {decode[size]['fps']:.0f} fps | {tk_cell} "
                f"| {fmt(ff[0].get('fps'), '.0f', ' fps')} "
                f"| {fmt(ff[1].get('fps'), '.0f', ' fps')} |")
    latency = player.get("latency", {}).get("latency")
    out += ["", f"Latency ({player.get('latency_media')}, our server and the Player library "
            "in one run over UDP on loopback, display size 1280x720): from the frame's last "
            "packet reaching the player's receiver thread to its decoded picture being ready "
            "for the window. It is mostly the jitter buffer, which holds frames for the "
            "configured latency (`--latency`, default 100 ms); not included: loopback transit "
            "(microseconds), the window's poll (`Client.POLL_MS` = 15 ms, 7.5 ms on average) "
            "and the paste above.", ""]
    if latency:
        out += ["| jitter buffer | frames | arrival → picture ready, median / p99 | of which "
                "waiting in the jitter buffer (median) | rebuild + decode, median / p99 |",
                "|---:|---:|---:|---:|---:|"]
        for setting, row in latency.items():
            out.append(f"| {setting} ms | {row['frames']} | {fmt(row['total_ms_median'], '.1f')}"
                       f" / {fmt(row['total_ms_p99'], '.1f', ' ms')} "
                       f"| {fmt(row['jitter_wait_ms_median'], '.1f', ' ms')} "
                       f"| {fmt(row['decode_ms_median'], '.1f')} / "
                       f"{fmt(row['decode_ms_p99'], '.1f', ' ms')} |")
    else:
        out.append(f"(latency not measured: {player.get('latency', {}).get('error')})")
    out.append("")
    return out


def nice_step(value: float, down: bool) -> float:
    """The 1-2-5 step (..., 0.1, 0.2, 0.5, 1, 2, ...) next below (or above) ``value``."""
    exponent = math.floor(math.log10(value))
    steps = [m * 10.0 ** e for e in (exponent - 1, exponent, exponent + 1) for m in (1, 2, 5)]
    return max(x for x in steps if x <= value) if down else min(x for x in steps if x >= value)


def draw_plot(rows: list[dict], media: Media, sessions: list[int], path: Path) -> None:
    """Server CPU per delivered frame against sessions, one line per series (RTP over UDP).

    Log scales where the figures span a decade or more (sessions 1..100; CPU per frame falls
    with N as one packetized frame is shared), linear from zero otherwise.
    """
    plt = pyplot()
    from matplotlib import ticker

    series: dict[str, dict[int, float]] = {}
    for row in rows:
        if row["file"] == media.key and row["transport"] == "udp" and "error" not in row \
                and row.get("cpu_ms_per_frame") and row["n"] in sessions:
            series.setdefault(row["series"], {})[row["n"]] = row["cpu_ms_per_frame"]
    values = [v for s in series.values() for v in s.values()]
    fig, ax = plt.subplots(figsize=(9, 5.6), dpi=110, layout="constrained")
    for name in [s.name for s in SERIES if s.name in series] + sorted(
            set(series) - {s.name for s in SERIES}):
        points = sorted(series[name].items())
        ax.plot([n for n, _ in points], [v for _, v in points], label=name,
                color=rgb(COLOURS.get(name, (0, 0, 0))), marker="o", markersize=6,
                linewidth=2, linestyle="--" if name.startswith("gst") else "-")
    plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
    if max(sessions) >= 10 * min(sessions):
        ax.set_xscale("log")
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.xaxis.set_major_locator(ticker.FixedLocator(sessions))
    ax.xaxis.set_major_formatter(plain)
    log_y = bool(values) and max(values) >= 5 * min(values)
    if log_y:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_ylim(nice_step(min(values), down=True) / 1.08,
                    nice_step(max(values), down=False) * 1.08)
        ax.yaxis.set_major_formatter(plain)
    else:
        ax.set_ylim(0, max(values, default=1) * 1.15)
    if not values:
        ax.text(0.5, 0.5, "no results", transform=ax.transAxes, ha="center", va="center")
    ax.grid(True, which="major", color="0.85")
    ax.grid(True, which="minor", axis="y", color="0.93")
    ax.set_xlabel("sessions (RTP over UDP, one load generator)" +
                  (", log scale" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel("server CPU per delivered frame (ms)" + (", log scale" if log_y else ""))
    ax.set_title(f"Server CPU per delivered frame: {media.label}, "
                 f"{media.frame_bytes / 1000:.0f} KB frames (less is better)")
    if series:
        ax.legend(loc="best", frameon=True)
    fig.savefig(path)
    plt.close(fig)


# --- main -----------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="N = 1, 10 for 5 s, 384x288 only: a smoke test (< 2 minutes)")
    parser.add_argument("--sessions", help="comma-separated N (default 1,10,50,100)")
    parser.add_argument("--seconds", type=float, help="measuring window per case (default 15)")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--out", help="Markdown report (default BENCHMARKS.md; with --quick "
                        "a temporary folder)")
    parser.add_argument("--no-player", action="store_true", help="skip the player benchmarks")
    parser.add_argument("--no-tcp", action="store_true", help="skip the interleaved-TCP cases")
    parser.add_argument("--drift-minutes", type=float, default=0,
                        help="also play 10 sessions of the 384x288 file from our server for "
                        "this many minutes and report the drift")
    args = parser.parse_args()
    pyplot()  # matplotlib is installed (requirements-bench.txt), before any measuring
    command = "bench/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    command = (".venv/bin/python " + command).strip()
    args.sessions = [int(n) for n in args.sessions.split(",")] if args.sessions else (
        [1, 10] if args.quick else [1, 10, 50, 100])
    seconds = args.seconds or (5 if args.quick else 15)
    tmp = Path(tempfile.mkdtemp(prefix="mjpeg-bench-"))
    out = Path(args.out) if args.out else (tmp / "BENCHMARKS.md" if args.quick
                                           else ROOT / "BENCHMARKS.md")
    docs = out.parent / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    logs = tmp / "logs"
    logs.mkdir()
    for tool in ("ffmpeg", GST_PYTHON):
        if shutil.which(tool) is None:
            print(f"error: {tool} is needed", file=sys.stderr)
            return 2
    info = machine()  # the code as it was when the run started
    try:
        # Long enough for setup, warm-up and window (shared GStreamer media starts with the
        # first client and must not reach the end before the window closes).
        length = seconds + args.warmup + 25
        note(f"media in {tmp} ({length:g} s per file)")
        medias = [make_media(tmp / "media", "288p", 384, 288, 20, length)]
        if not args.quick:
            medias.append(make_media(tmp / "media", "720p", 1280, 720, 30, length))
        plan: list[tuple[Series, Media, int, str]] = []
        for media in medias:
            series = [OURS, GST_SHARED, GST_CLIENT]
            if media.key == "720p":
                series += [OURS_NO_GSO, OURS_GRO]
            for n in args.sessions:
                for s in series:
                    plan.append((s, media, n, "udp"))
        if not args.quick and not args.no_tcp:
            hd = medias[-1]
            for n in [n for n in args.sessions if n in (10, 50)]:
                for s in (OURS, GST_SHARED, GST_CLIENT):
                    plan.append((s, hd, n, "tcp"))
        rows = []
        for number, (s, media, n, transport) in enumerate(plan, 1):
            note(f"{number}/{len(plan)}: {s.name}, {media.key}, N={n}, {transport}")
            row = run_case(s, media, n, seconds, args.warmup, transport, logs)
            rows.append(row)
            note("   " + ("error: " + row["error"] if "error" in row else
                          f"{fmt(row.get('cpu_ms_per_frame'), '.3f')} ms/frame, delivered "
                          f"{row['delivered'] * 100:.2f} %, p99 {fmt(row['pacing_p99_ms'])} ms, "
                          f"loadgen {row['loadgen_cpu_share'] * 100:.0f} %"
                          + (f", {row['syscalls_per_frame']:.3f} syscalls/frame, "
                             f"{fmt(row.get('frames_per_pass'))} frames/pass"
                             if row.get("syscalls_per_frame") is not None else "")))
        drift = None
        if args.drift_minutes:
            long = make_media(tmp / "long", "288p", 384, 288, 20,
                              args.drift_minutes * 60 + args.warmup + 10, avi=False)
            note(f"drift: {args.drift_minutes:g} minutes")
            drift = {"rows": [run_case(OURS, long, 10, args.drift_minutes * 60, args.warmup,
                                       "udp", logs)]}
        player = None
        if not args.no_player:
            player = bench_player(tmp / "player", medias[-1], args.quick)
        png = {}
        for media in medias:
            path = docs / f"bench-{media.key}.png"
            draw_plot(rows, media, args.sessions, path)
            png[media.key] = os.path.relpath(path, out.parent)
        after = machine()["commit"]
        if after != info["commit"]:
            info["commit"] += f" (at the start; at the end: {after})"
        text = report(args, command, info, medias, rows, player, drift, png)
        out.write_text(text)
        (tmp / "results.json").write_text(json.dumps({"rows": rows, "player": player,
                                                      "drift": drift}, indent=1))
        print(text)
        note(f"wrote {out} and {', '.join(png.values())}; raw results in {tmp}/results.json")
    finally:
        shutil.rmtree(tmp / "media", ignore_errors=True)
        shutil.rmtree(tmp / "long", ignore_errors=True)
        shutil.rmtree(tmp / "player", ignore_errors=True)
        for avi in tmp.glob("*.avi"):
            avi.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
