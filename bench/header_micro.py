"""Micro-benchmark of the per-session send work (issue 11): RTP headers, and one frame to
N UDP sessions on loopback through each send path.

    .venv/bin/python bench/header_micro.py [--packets 9,41] [--sessions 1,10,50]

Headers: ``pack_header`` per packet (the old path) against ``pack_headers`` (one integer
sum per frame) and its split into per-packet ``bytes`` (what the plain sinks take).
Send paths, per session-frame, datagrams received and thrown away by receivers in the same
process outside the timed part: the plain path (``UdpSink.send_rtp``: one sendmsg per
segmentation-offload batch or per datagram) and the batched one (``UdpBatch``: one
sendmmsg per pass), each with and without segmentation offload. Loopback charges the
receivers' kernel work to the sender, as in bench/run.py.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pass_micro import drain as drain_all  # noqa: E402
from pass_micro import receivers as loopback_receivers  # noqa: E402

from mjpeg_rtsp import sendmmsg  # noqa: E402
from mjpeg_rtsp.rtp import PT_JPEG, pack_header, pack_headers  # noqa: E402
from mjpeg_rtsp.streaming import (  # noqa: E402
    FrameShare,
    UdpBatch,
    UdpSink,
    gso_supported,
    split_headers,
)


def per_call_us(function, number: int) -> float:
    return min(timeit.repeat(function, number=number, repeat=5)) / number * 1e6


def headers(packets: int) -> None:
    last = packets - 1

    def one_by_one() -> list[bytes]:
        return [pack_header(PT_JPEG, (1000 + i) & 0xFFFF, 12345, 0xDEADBEEF, i == last)
                for i in range(packets)]

    def block() -> bytes:
        return pack_headers(packets, PT_JPEG, 1000, 12345, 0xDEADBEEF)

    def block_split() -> list[bytes]:
        return split_headers(pack_headers(packets, PT_JPEG, 1000, 12345, 0xDEADBEEF))

    assert b"".join(one_by_one()) == block()
    for name, function in (("pack_header per packet", one_by_one),
                           ("pack_headers block", block),
                           ("pack_headers + split", block_split)):
        print(f"headers, {packets:3d} packets: {name:24s} {per_call_us(function, 20000):7.2f} us")


def send_paths(packets: int, sessions: int) -> None:
    payloads = tuple(os.urandom(1400) for _ in range(packets - 1)) + (os.urandom(600),)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    sender.setblocking(False)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    receivers = loopback_receivers(sessions)

    def drain() -> None:
        drain_all(receivers)

    batch = UdpBatch(sender) if sendmmsg.available(sender) else None
    try:
        for gso in (True, False) if gso_supported(sender) else (False,):
            sinks = [UdpSink(sender, sender, r.getsockname(), None, gso) for r in receivers]

            share = FrameShare(payloads)

            def plain(sinks: list = sinks, share: FrameShare = share) -> None:
                for sink in sinks:
                    h = pack_header  # the old path: a header object per packet
                    sink.send_rtp([h(PT_JPEG, i, 0, 1, i == packets - 1) for i in range(packets)],
                                  share)

            def plain_new_headers(sinks: list = sinks, share: FrameShare = share) -> None:
                for sink in sinks:
                    sink.send_rtp(split_headers(pack_headers(packets, PT_JPEG, 0, 0, 1)), share)

            def batched(sinks: list = sinks, share: FrameShare = share) -> None:
                for sink in sinks:
                    batch.add(None, sink, pack_headers(packets, PT_JPEG, 0, 0, 1), share)
                batch._send()  # the flush without the sessions' counters (no sessions here)
                batch._dropped.clear()

            paths = [("sendmsg, header per packet", plain),
                     ("sendmsg, pack_headers", plain_new_headers)]
            if batch is not None:
                paths.append(("sendmmsg batch", batched))
            for name, function in paths:
                best = float("inf")
                for _ in range(5):
                    drain()
                    best = min(best, timeit.timeit(function, number=20))
                drain()
                print(f"send, {packets:3d} packets x {sessions:3d} sessions, "
                      f"{'GSO' if gso else 'no GSO'}: {name:28s} "
                      f"{best / 20 / sessions * 1e6:7.2f} us per session-frame")
    finally:
        if batch is not None:
            batch.close()
        sender.close()
        for r in receivers:
            r.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", default="9,41", help="packets per frame (288p: 9, 720p: 41)")
    parser.add_argument("--sessions", default="1,10,50")
    args = parser.parse_args()
    packet_counts = [int(n) for n in args.packets.split(",")]
    for packets in packet_counts:
        headers(packets)
    for packets in packet_counts:
        for sessions in (int(n) for n in args.sessions.split(",")):
            send_paths(packets, sessions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
