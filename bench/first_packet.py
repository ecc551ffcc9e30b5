"""Time to the first packet: a fresh server, a 1 GB file nobody has asked for yet.

    .venv/bin/python bench/first_packet.py [--size-mb 1024] [--runs 5] [--keep DIR]

Theory of operation: build a raw MJPEG file of about ``--size-mb`` MB from a 1280x720 clip
(made once by tools/make_sample.py and repeated; kept in ``--keep`` or a temporary folder),
then for each run start ``Server.py`` afresh (so nothing is indexed or cached in the process;
the file stays in the page cache, as it would on a server that served it before) and time,
on one connection: the first request (DESCRIBE) sent -> its reply, SETUP, PLAY sent -> PLAY's
reply -> the first RTP packet at the UDP receiver. Prints the medians and every run, with the
time to index the whole file (media.build_index) for comparison: what the first request cost
before files were indexed as they play.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mjpeg_rtsp.ports import bind_rtp_pair  # noqa: E402
from mjpeg_rtsp.rtsp import NEED_DATA, Headers, Request, Response, RtspReader, format_request  # noqa: E402


def make_file(folder: Path, size_mb: int) -> Path:
    path = folder / f"big{size_mb}.mjpeg"
    if path.exists() and path.stat().st_size >= size_mb << 20:
        return path
    seed = folder / "seed720.mjpeg"
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_sample.py"), "-o", str(seed),
                    "--frames", "150", "--format", "raw", "--size", "1280x720"],
                   check=True, capture_output=True)
    data = seed.read_bytes()
    with open(path, "wb") as f:
        while f.tell() < size_mb << 20:
            f.write(data)
    return path


class Connection:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.reader = RtspReader()
        self.cseq = 0

    def request(self, method: str, url: str, **headers: str) -> Response:
        self.cseq += 1
        fields = [("CSeq", str(self.cseq))] + [(k.replace("_", "-"), v)
                                               for k, v in headers.items()]
        self.sock.sendall(format_request(Request(method, url, Headers(fields))))
        while True:
            event = self.reader.next_event()
            if isinstance(event, Response):
                return event
            if event is NEED_DATA:
                self.reader.receive_data(self.sock.recv(65536))


def one_run(path: Path) -> dict[str, float]:
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "Server.py"), "0", "--host", "127.0.0.1",
         "--root", str(path.parent)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True)
    try:
        line = server.stdout.readline()  # "RTSP server listening on port N, ..."
        port = int(line.split("port ")[1].split(",")[0])
        url = f"rtsp://127.0.0.1:{port}/{path.name}"
        rtp, rtcp = bind_rtp_pair("127.0.0.1", socket.AF_INET)
        rtp.settimeout(30)
        conn = Connection(port)
        try:
            t0 = time.perf_counter()
            reply = conn.request("DESCRIBE", url, Accept="application/sdp")
            t_describe = time.perf_counter()
            assert reply.status == 200, reply
            p = rtp.getsockname()[1]
            reply = conn.request("SETUP", url + "/stream=0",
                                 Transport=f"RTP/AVP;unicast;client_port={p}-{p + 1}")
            session = reply.headers.get("Session").split(";")[0]
            t_play = time.perf_counter()
            reply = conn.request("PLAY", url, Session=session)
            t_reply = time.perf_counter()
            rtp.recv(65536)
            t_packet = time.perf_counter()
            conn.request("TEARDOWN", url, Session=session)
        finally:
            conn.sock.close()
            rtp.close()
            rtcp.close()
        return {"describe_ms": (t_describe - t0) * 1e3,
                "first_request_to_packet_ms": (t_packet - t0) * 1e3,
                "play_to_reply_ms": (t_reply - t_play) * 1e3,
                "play_to_packet_ms": (t_packet - t_play) * 1e3}
    finally:
        server.terminate()
        server.wait(timeout=10)
        server.stdout.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", help="folder for the generated file (kept between runs)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = make_file(folder, args.size_mb)
        size = path.stat().st_size
        with open(path, "rb") as f:  # into the page cache, as a served file would be
            while f.read(16 << 20):
                pass
        runs = [one_run(path) for _ in range(args.runs)]
        from mjpeg_rtsp.media import build_index

        fd = os.open(path, os.O_RDONLY)
        try:
            t = time.perf_counter()
            frames = build_index(fd, size, path.name).frame_count
            full_index = time.perf_counter() - t
        finally:
            os.close(fd)
    print(f"file: {size / 1e9:.2f} GB, {frames} frames of 1280x720; {args.runs} fresh servers")
    for key in runs[0]:
        values = [r[key] for r in runs]
        print(f"  {key:28s} median {statistics.median(values):8.2f} ms   "
              f"runs {', '.join(f'{v:.1f}' for v in values)}")
    print(f"  indexing the whole file once: {full_index * 1e3:.0f} ms "
          "(what the first request waited for before lazy indexing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
