"""The GStreamer reference server for bench/run.py; run with Debian's python3 (it has the bindings).

    /usr/bin/python3 bench/gst_reference_server.py --file MOVIE.avi [--shared] [--mtu 1412]

Serves ``rtsp://127.0.0.1:PORT/movie`` with gst-rtsp-server as
``filesrc ! avidemux ! rtpjpegpay``: the same JPEG frames as the raw MJPEG file
our server reads, remuxed without re-encoding (``ffmpeg -f mjpeg -framerate F -i
movie.mjpeg -c copy -f avi``) so that every frame carries a timestamp and the
server's sinks pace them at the real rate (a raw-MJPEG ``filesrc ! jpegparse``
produces untimestamped buffers, which are sent as fast as they are read).

``--shared`` makes all clients share one pipeline (``set_shared(True)``);
otherwise each client gets a pipeline of its own. Prints ``READY <port>`` when it
listens and runs until killed (SIGTERM).
"""

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--file", required=True, help="AVI file holding the MJPEG frames")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--shared", action="store_true")
    parser.add_argument("--mtu", type=int, default=1412,
                        help="rtpjpegpay mtu: whole RTP packet size (1412 = our 1400-byte "
                        "payload + 12-byte header, so both servers send the same packets)")
    args = parser.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    location = args.file.replace("\\", "\\\\").replace('"', '\\"')
    factory.set_launch(
        f'( filesrc location="{location}" ! avidemux ! '
        f"rtpjpegpay name=pay0 pt=26 mtu={args.mtu} )"
    )
    factory.set_shared(args.shared)
    server.get_mount_points().add_factory("/movie", factory)
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
