"""A GStreamer RTSP server (gst-rtsp-server) as a peer for tests and the reference for benchmarks.

Run it with Debian's python3, which has the GObject bindings:

    /usr/bin/python3 tools/gst_rtsp_server.py [--port 0] [--shared] [--mtu 1412]
        [--file MOVIE.avi | --frames 100 --width 640 --height 480 --fps 25]

Serves ``rtsp://127.0.0.1:PORT/test``. With ``--file``: ``filesrc ! avidemux !
rtpjpegpay``, the JPEG frames of an AVI (remux a raw MJPEG without re-encoding with
``ffmpeg -f mjpeg -framerate F -i movie.mjpeg -c copy -f avi``: avidemux timestamps every
frame, so the server paces them at the real rate, while ``filesrc ! jpegparse`` would send
them untimed, as fast as they are read). Without: a live ``videotestsrc ! jpegenc`` of
``--frames`` frames. ``--shared`` gives all clients one pipeline, otherwise each gets its
own. Prints ``READY <port>`` once it listens; runs until SIGTERM.
"""

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def pipeline(args: argparse.Namespace) -> str:
    pay = f"rtpjpegpay name=pay0 pt=26 mtu={args.mtu}"
    if args.file:
        location = args.file.replace("\\", "\\\\").replace('"', '\\"')
        return f'( filesrc location="{location}" ! avidemux ! {pay} )'
    return (
        f"( videotestsrc is-live=true num-buffers={args.frames} pattern=ball ! "
        f"video/x-raw,format=I420,width={args.width},height={args.height},"
        f"framerate={args.fps}/1 ! jpegenc quality=85 ! {pay} )"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--file", help="AVI file holding MJPEG frames (default: a test pattern)")
    parser.add_argument("--shared", action="store_true")
    parser.add_argument("--mtu", type=int, default=1412,
                        help="whole RTP packet size (1412 = a 1400-byte payload + 12-byte "
                        "header, the same packets as our server's)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--frames", type=int, default=100)
    args = parser.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(pipeline(args))
    factory.set_shared(args.shared)
    server.get_mount_points().add_factory("/test", factory)
    server.attach(None)
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    print(f"READY {server.get_bound_port()}", flush=True)
    try:
        loop.run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
