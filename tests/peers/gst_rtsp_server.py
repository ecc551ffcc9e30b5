"""A GStreamer RTSP server for interop tests; run with Debian's python3 (it has the bindings).

    /usr/bin/python3 tests/peers/gst_rtsp_server.py [--port 0] [--width 640 --height 480]
                                                    [--fps 25] [--frames 100]

Serves rtsp://127.0.0.1:PORT/test as videotestsrc ! jpegenc ! rtpjpegpay, prints
"READY <port>" on stdout when it listens, and runs until killed.
"""

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
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
    factory.set_launch(
        f"( videotestsrc is-live=true num-buffers={args.frames} pattern=ball ! "
        f"video/x-raw,format=I420,width={args.width},height={args.height},"
        f"framerate={args.fps}/1 ! "
        "jpegenc quality=85 ! rtpjpegpay name=pay0 pt=26 )"
    )
    factory.set_shared(False)
    server.get_mount_points().add_factory("/test", factory)
    server.attach(None)
    print(f"READY {server.get_bound_port()}", flush=True)
    try:
        GLib.MainLoop().run()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
