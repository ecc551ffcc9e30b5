"""gst-rtsp-server serving a live stream, the peer of bench/live_bench.py.

Run it with Debian's python3, which has the GObject bindings:

    /usr/bin/python3 bench/gst_live_peer.py --frames FRAMES.mjpeg [--fps 30] [--mtu 1412]
    /usr/bin/python3 bench/gst_live_peer.py --record [--mtu 1412]

Both serve viewers one shared media at ``rtsp://127.0.0.1:PORT/test``:
``appsrc is-live=true do-timestamp=true ! rtpjpegpay``.

* ``--frames``: a thread here pushes the raw MJPEG file's frames (read once into memory,
  so nothing is encoded while it runs) into the appsrc at ``--fps`` on an absolute
  schedule, looping: a live source with the same frames our server's ``--live
  NAME=file:PATH`` sends.
* ``--record``: a publisher ANNOUNCEs and RECORDs to ``rtsp://127.0.0.1:PORT/publish``
  (a media factory in ``GST_RTSP_TRANSPORT_MODE_RECORD``: ``rtpjpegdepay name=depay0 !
  appsink``); each frame it depayloads is pushed into the viewers' appsrc as it comes:
  a relay.

Prints ``READY <port>`` once it listens; runs until SIGTERM.
"""

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def read_frames(path: str) -> list[bytes]:
    """The JPEGs of a raw MJPEG file (the server's own splitter: pure Python, so it loads in
    Debian's python3 too)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from mjpeg_rtsp.mjpeg_stream import MjpegStreamSplitter

    with open(path, "rb") as f:
        return MjpegStreamSplitter().feed(f.read())


class Relay:
    """The one appsrc of the viewers' shared media, once it exists."""

    def __init__(self) -> None:
        self.appsrc = None
        self.lock = threading.Lock()

    def media_configured(self, _factory, media) -> None:
        with self.lock:
            self.appsrc = media.get_element().get_by_name("src")

    def push(self, jpeg: bytes) -> None:
        with self.lock:
            appsrc = self.appsrc
        if appsrc is not None:
            appsrc.emit("push-buffer", Gst.Buffer.new_wrapped(jpeg))

    def from_sink(self, sink) -> Gst.FlowReturn:
        sample = sink.emit("pull-sample")
        if sample is not None:
            buffer = sample.get_buffer()
            ok, info = buffer.map(Gst.MapFlags.READ)
            if ok:
                data = bytes(info.data)
                buffer.unmap(info)
                self.push(data)
        return Gst.FlowReturn.OK


def pace(relay: Relay, frames: list[bytes], fps: float, stop: threading.Event) -> None:
    period = 1.0 / fps
    start = time.monotonic()
    k = 0
    while not stop.is_set():
        due = start + k * period
        now = time.monotonic()
        if due > now:
            stop.wait(due - now)
        elif now - due > period:  # late by more than a frame: skip to the present
            k = int((now - start) / period)
            continue
        relay.push(frames[k % len(frames)])
        k += 1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--frames", help="raw MJPEG file pushed as a live source")
    parser.add_argument("--record", action="store_true", help="relay a publisher instead")
    parser.add_argument("--fps", type=float, default=30)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--mtu", type=int, default=1412)
    args = parser.parse_args()
    if bool(args.frames) == args.record:
        parser.error("give --frames FILE or --record")
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    relay = Relay()
    fps = int(round(args.fps))
    caps = f"image/jpeg,width={args.width},height={args.height},framerate={fps}/1"
    play = GstRtspServer.RTSPMediaFactory()
    play.set_launch(
        f"( appsrc name=src is-live=true do-timestamp=true format=time max-buffers=3 "
        f'leaky-type=downstream caps="{caps}" '
        f"! rtpjpegpay name=pay0 pt=26 mtu={args.mtu} )"
    )
    play.set_shared(True)
    play.connect("media-configure", relay.media_configured)
    mounts = server.get_mount_points()
    mounts.add_factory("/test", play)
    if args.record:
        record = GstRtspServer.RTSPMediaFactory()
        record.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
        record.set_launch("( rtpjpegdepay name=depay0 ! appsink name=sink emit-signals=true "
                          "sync=false )")
        record.set_latency(0)

        def record_configured(_factory, media) -> None:
            media.get_element().get_by_name("sink").connect("new-sample", relay.from_sink)

        record.connect("media-configure", record_configured)
        mounts.add_factory("/publish", record)
    server.attach(None)
    stop = threading.Event()
    if args.frames:
        threading.Thread(target=pace, args=(relay, read_frames(args.frames), args.fps, stop),
                         daemon=True, name="pace").start()
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    print(f"READY {server.get_bound_port()}", flush=True)
    try:
        loop.run()
    except KeyboardInterrupt:
        pass
    stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
