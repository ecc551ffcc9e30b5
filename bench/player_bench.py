"""Player benchmarks for bench/run.py: decode, decode+display (Tk under Xvfb), ffmpeg, latency.

    python bench/player_bench.py decode FILE.mjpeg [--seconds 3]
    python bench/player_bench.py tk FILE.mjpeg [--seconds 3]        (needs DISPLAY)
    python bench/player_bench.py latency [--seconds 5]             (see measure_latency)

Each prints one JSON object.

* ``decode``: the player's own decoder threads (``Player._decode_loop``, DECODER_THREADS
  of them: Pillow, in memory, JPEG draft mode when the display is smaller than the
  frame, RGB, resize to the display size) fed through their queue with the file's
  frames in a loop, as fast as they take them; frames per second for a few display sizes.
* ``tk``: the window's pipeline: those decoder threads, and the Tk thread showing each new
  picture with ``PhotoImage.paste`` in place (as ``Client._show``) and
  ``update_idletasks``; frames shown per second, and the display part alone.
* ``latency``: our server (a subprocess) and the Player library in this
  process over UDP on loopback. For each displayed frame: from the kernel
  handing the frame's last (marker) packet to the receiver thread (its
  ``recvfrom`` returning) to the decoder publishing the picture for the window
  (``latest_frame``), split into the jitter-buffer wait (set by
  ``PlayerOptions.latency``) and rebuild+decode. Not included: the server's
  send to the receiver's wake-up on loopback (microseconds) and the window's
  poll (``Client.POLL_MS``) plus the paste measured by ``tk``.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = {"full": None, "1280x720": (1280, 720), "640x360": (640, 360)}


def read_frames(path: str, limit: int = 120) -> list[bytes]:
    """The first ``limit`` JPEGs of a raw MJPEG file (the server's own splitter)."""
    from mjpeg_rtsp.mjpeg_stream import MjpegStreamSplitter

    return MjpegStreamSplitter().feed(Path(path).read_bytes())[:limit]


def decode_for_display(jpeg: bytes, size: tuple[int, int] | None):
    """The player's own decode step."""
    from mjpeg_rtsp.player import decode_for_display as player_decode

    return player_decode(jpeg, size)[0]


def _decoders(size: tuple[int, int] | None):
    """A Player whose decoder threads (all DECODER_THREADS of them) run without a
    connection, and a feeder thread that keeps their queue full with ``frames``."""
    from mjpeg_rtsp.client import parse_rtsp_url
    from mjpeg_rtsp.controller import ReleasedFrame
    from mjpeg_rtsp.player import DECODER_THREADS, Player, PlayerOptions

    player = Player(parse_rtsp_url("rtsp://127.0.0.1:1/none"), PlayerOptions(display_size=size))
    player._running = True
    threads = [threading.Thread(target=player._decode_loop, daemon=True)
               for _ in range(DECODER_THREADS)]

    def feed(frames: list[bytes]) -> None:
        order = 0
        while player._running:
            order += 1
            jpeg = frames[order % len(frames)]
            try:  # blocking, so that none is skipped: the decoders set the pace
                player._decode_queue.put((order, ReleasedFrame(jpeg, 0.0, order)), timeout=0.1)
            except Exception:  # noqa: BLE001 - queue.Full: try again (or stop)
                pass

    return player, threads, feed


def _stop(player, threads, feeder) -> None:
    player._running = False
    feeder.join(5)
    for thread in threads:
        thread.join(5)


def bench_decode(path: str, seconds: float) -> dict:
    """The player's decoder threads themselves, fed through their queue."""
    frames = read_frames(path)
    results = {}
    for name, size in SIZES.items():
        player, threads, feed = _decoders(size)
        feeder = threading.Thread(target=feed, args=(frames,), daemon=True)
        for thread in threads:
            thread.start()
        started = time.perf_counter()
        feeder.start()
        time.sleep(seconds)  # a benchmark window, not a synchronisation
        decoded = player.counters.frames_decoded
        elapsed = time.perf_counter() - started
        _stop(player, threads, feeder)
        latest = player.latest_frame()
        results[name] = {
            "fps": decoded / elapsed,
            "frames": decoded,
            "threads": len(threads),
            "shown_size": list(latest.image.size) if latest else None,
        }
    return {"file": path, "frame_size": _size(frames[0]), "decode": results}


def _size(jpeg: bytes) -> list[int]:
    from PIL import Image

    return list(Image.open(io.BytesIO(jpeg)).size)


def bench_tk(path: str, seconds: float) -> dict:
    """The window's pipeline: the player's decoder threads, and this (Tk) thread showing
    each new picture as ``Client._show`` does (``PhotoImage.paste`` in place, then
    ``update_idletasks``). Frames shown per second, and the display part alone."""
    import tkinter as tk

    from PIL import ImageTk

    frames = read_frames(path)
    root = tk.Tk()
    label = tk.Label(root)
    label.pack()
    results = {}
    for name, size in SIZES.items():
        if name == "640x360":
            continue
        player, threads, feed = _decoders(size)
        feeder = threading.Thread(target=feed, args=(frames,), daemon=True)
        for thread in threads:
            thread.start()
        feeder.start()
        photo = None
        shown = 0
        last = None
        display_time = 0.0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            frame = player.latest_frame()
            if frame is None or frame is last:
                time.sleep(0.0005)  # the window polls too (Client.POLL_MS)
                continue
            last = frame
            image = frame.image
            t = time.perf_counter()
            if photo is not None and photo.width() == image.width \
                    and photo.height() == image.height:
                photo.paste(image)  # in place, as Client._show
            else:
                photo = ImageTk.PhotoImage(image)
                label.config(image=photo)
            root.update_idletasks()
            display_time += time.perf_counter() - t
            shown += 1
        elapsed = time.perf_counter() - started
        _stop(player, threads, feeder)
        results[name] = {"fps": shown / elapsed, "frames": shown,
                         "display_ms": display_time * 1000 / max(shown, 1),
                         "decoded": player.counters.frames_decoded,
                         "shown_size": [photo.width(), photo.height()] if photo else None}
    root.destroy()
    return {"file": path, "frame_size": _size(frames[0]), "tk": results}


def bench_ffmpeg(path: str, threads: int | None) -> dict:
    cmd = ["ffmpeg", "-hide_banner", "-nostats", "-benchmark"]
    if threads:
        cmd += ["-threads", str(threads)]
    cmd += ["-f", "mjpeg", "-i", path, "-f", "null", "-"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stderr
    frames = rtime = utime = None
    for line in out.splitlines():
        if line.startswith("frame="):
            frames = int(line.split("frame=")[1].split()[0])
        if "bench: utime=" in line:
            parts = dict(p.split("=") for p in line.split()[1:] if "=" in p)
            utime = float(parts["utime"].rstrip("s"))
            rtime = float(parts["rtime"].rstrip("s"))
    if frames is None:
        # -nostats hides the progress line; count from the summary instead
        for line in out.splitlines():
            if "frame=" in line:
                frames = int(line.split("frame=")[1].split()[0])
    return {"threads": threads or "auto", "frames": frames, "rtime_s": rtime, "utime_s": utime,
            "fps": frames / rtime if frames and rtime else None}


def measure_latency(seconds: float, latencies: list[float], media: str, fps: float) -> dict:
    """Our server as a subprocess, the Player library here; see the module docstring."""
    from mjpeg_rtsp.client import parse_rtsp_url
    from mjpeg_rtsp.player import Player, PlayerOptions

    class TimedPlayer(Player):
        """Timestamps a frame's marker packet, its release to the decoder and its display, by
        wrapping the controller's receive step and the driver's hand-over to the decoder (the
        protocol logic runs as is). Frames are keyed by their RTP timestamp."""

        def __init__(self, *a, **k):
            self.marks: dict[int, float] = {}  # RTP timestamp -> marker packet arrival
            self.offered: dict[int, float] = {}  # RTP timestamp -> handed to the decoder
            self.shown: dict[int, float] = {}  # RTP timestamp -> picture ready
            self._bench_latest = None
            super().__init__(*a, **k)
            receive_rtp = self.controller.receive_rtp

            def timed_receive_rtp(data, source_ip, now):
                if len(data) >= 12 and data[1] & 0x80:
                    self.marks[int.from_bytes(data[4:8], "big")] = now
                receive_rtp(data, source_ip, now)

            self.controller.receive_rtp = timed_receive_rtp

        def _offer(self, frame):
            self.offered[frame.timestamp] = self.clock()
            super()._offer(frame)

        @property
        def _latest(self):
            return self._bench_latest

        @_latest.setter
        def _latest(self, frame):
            if frame is not None:
                self.shown[frame.timestamp] = self.clock()
            self._bench_latest = frame

    root = Path(media).parent
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "Server.py"), "0", "--host", "127.0.0.1", "--root",
         str(root), "--fps", str(fps)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    results = {}
    try:
        port = int(server.stdout.readline().split()[5].rstrip(","))
        url = f"rtsp://127.0.0.1:{port}/{Path(media).name}"
        for latency in latencies:
            player = TimedPlayer(parse_rtsp_url(url),
                                 PlayerOptions(latency=latency, display_size=(1280, 720)))
            player.start()
            player.setup()
            player.play()
            time.sleep(seconds)
            player.close()
            total, wait, decode = [], [], []
            for ts, shown in player.shown.items():
                offered = player.offered.get(ts)
                arrival = player.marks.get(ts)
                if offered is None or arrival is None:
                    continue
                total.append(shown - arrival)
                wait.append(offered - arrival)
                decode.append(shown - offered)
            total = total[int(fps):]  # the first second is warm-up
            wait = wait[int(fps):]
            decode = decode[int(fps):]
            results[f"{latency * 1000:g}"] = {
                "frames": len(total),
                "total_ms_median": _med(total),
                "total_ms_p99": _p99(total),
                "jitter_wait_ms_median": _med(wait),
                "decode_ms_median": _med(decode),
                "decode_ms_p99": _p99(decode),
                "failed": player.failed,
            }
    finally:
        server.terminate()
        server.wait(10)
    return {"file": media, "latency": results}


def _med(values: list[float]) -> float | None:
    return statistics.median(values) * 1000 if values else None


def _p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("decode", "tk", "ffmpeg", "latency"))
    parser.add_argument("file", nargs="?")
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--fps", type=float, default=30)
    parser.add_argument("--latency", type=float, action="append",
                        help="jitter-buffer latency in ms (repeatable; default 100 and 20)")
    args = parser.parse_args()
    if args.mode == "decode":
        result = bench_decode(args.file, args.seconds)
    elif args.mode == "tk":
        result = bench_tk(args.file, args.seconds)
    elif args.mode == "ffmpeg":
        result = {"file": args.file, "ffmpeg": [bench_ffmpeg(args.file, 1),
                                                bench_ffmpeg(args.file, None)]}
    else:
        latencies = [x / 1000 for x in (args.latency or [100, 20])]
        result = measure_latency(args.seconds, latencies, args.file, args.fps)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
