"""Micro-benchmark of one scheduler pass (issue 11): the file scheduler's CPU per
session-frame, in process, with real sessions, sinks and loopback receivers.

    .venv/bin/python bench/pass_micro.py FILE.mjpeg [--sessions 1,10,50,100] [--frames 3]
                                         [--passes 400] [--no-gso] [--profile]

Theory of operation: N UDP sessions play FILE in the PLAYING state, spread over ``--frames``
neighbouring frame numbers (sessions that joined a little apart), all due in every pass, as
in a server whose sessions share one deadline grid. Each pass is ``PacingScheduler._send_pass``
itself (state checks, payload look-ups, headers, the sendmmsg batch, counters). The time is
the sending thread's CPU (``time.thread_time``, which includes the kernel's loopback delivery
to the receivers, as in the server); the receivers are drained outside it. The figures are
the best of five runs, per session-frame; with ``--profile`` one run goes through cProfile.
A 5 s benchmark cell at 384x288 is only a few dozen 10 ms CPU ticks: this measures the same
work to a microsecond.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mjpeg_rtsp.media import MediaLibrary  # noqa: E402
from mjpeg_rtsp.session import (  # noqa: E402
    Dialect,
    LowerTransport,
    PayloadFormat,
    Session,
    SessionState,
    TransportChoice,
)
from mjpeg_rtsp.streaming import PacingScheduler, UdpEndpoint, _Pace  # noqa: E402

MAX_PAYLOAD = 1400


def receivers(count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.setblocking(False)
        socks.append(sock)
    return socks


def drain(socks: list[socket.socket]) -> int:
    got = 0
    for sock in socks:
        try:
            while True:
                sock.recv(65536)
                got += 1
        except BlockingIOError:
            pass
    return got


class Rig:
    """N playing sessions of one file and the scheduler that sends them."""

    def __init__(self, path: Path, sessions: int, spread: int, gso: bool) -> None:
        self.media = MediaLibrary(path.parent).open(path.name)
        self.endpoint = UdpEndpoint("127.0.0.1", socket.AF_INET, lambda *_: None, gso)
        self.scheduler = PacingScheduler(MAX_PAYLOAD)
        self.scheduler.batch = self.endpoint.new_batch()
        self.receivers = receivers(sessions)
        self.paces = []
        for index, sock in enumerate(self.receivers):
            port = sock.getsockname()[1]
            session = Session(str(index), Dialect.STANDARD, self.media, "",
                              TransportChoice(LowerTransport.UDP, "127.0.0.1", port, port + 1),
                              PayloadFormat.RFC2435, 20.0, index, 60.0, 0.0)
            session.state = SessionState.PLAYING
            session.position = index % spread
            pace = _Pace(session, self.endpoint.sink(session), 0, time.monotonic(),
                         session.position, last_report=float("inf"), order=index)
            self.paces.append(pace)

    def run(self, passes: int, gap: float = 0.0) -> float:
        """CPU seconds of the sending thread over ``passes`` passes."""
        spent = 0.0
        frames = self.media.frame_count
        for _ in range(passes):
            for pace in self.paces:
                if pace.session.position >= frames - 1:
                    pace.session.position = 0
            due = [(pace.order, 0.0, pace) for pace in self.paces]
            start = time.thread_time()
            self.scheduler._send_pass(due)
            spent += time.thread_time() - start
            self.scheduler._heap.clear()  # the next deadlines: not used here
            drain(self.receivers)
            if gap:
                time.sleep(gap)
        return spent

    def close(self) -> None:
        if self.scheduler.batch is not None:
            self.scheduler.batch.close()
        self.endpoint.rtp_socket.close()
        self.endpoint.rtcp_socket.close()
        for sock in self.receivers:
            sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--sessions", default="1,10,50,100")
    parser.add_argument("--frames", type=int, default=3, help="distinct frames in a pass")
    parser.add_argument("--passes", type=int, default=400)
    parser.add_argument("--no-gso", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--gap", type=float, default=0.0,
                        help="seconds asleep between passes (caches go cold, as in a server)")
    args = parser.parse_args(argv)
    for count in (int(n) for n in args.sessions.split(",")):
        rig = Rig(args.file, count, max(1, min(args.frames, count)), not args.no_gso)
        try:
            rig.run(20)  # payloads cached, buffers warm
            best = min(rig.run(args.passes, args.gap) for _ in range(5))
            print(f"{args.file.name}, {count:3d} sessions, {args.frames} frames per pass, "
                  f"GSO {'off' if args.no_gso else 'on'}: "
                  f"{best / (args.passes * count) * 1e6:6.2f} us CPU per session-frame")
            if args.profile:
                profile = cProfile.Profile(time.thread_time)
                profile.runcall(rig.run, args.passes)
                pstats.Stats(profile).sort_stats("tottime").print_stats(18)
        finally:
            rig.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
