"""Start the player: the course's positional form or an rtsp:// URL; a window or --headless.

    python ClientLauncher.py 127.0.0.1 8554 25000 movie.Mjpeg      (textbook dialect)
    python ClientLauncher.py rtsp://[user:pass@]host[:port]/path   (standard dialect)

``--headless`` sets up, plays for ``--duration`` seconds (or to the end of the
stream), tears down and prints one JSON object with the statistics (``latency_ms``: the
end-to-end latency's median and p95 from the server's RTCP sender reports, null without
them; ``frames_recorded`` with ``--record``). ``--latency 0`` releases each frame as soon
as it is complete; ``--record FILE`` writes every complete frame received to FILE as raw
MJPEG (which our server serves and ffmpeg reads with ``-f mjpeg``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from mjpeg_rtsp.cli import port_number, positive_float
from mjpeg_rtsp.client import ClientError, PlayerState, parse_rtsp_url, textbook_target
from mjpeg_rtsp.player import Player, PlayerOptions
from mjpeg_rtsp.stats import rounded_summary


def latency_ms(text: str) -> float:
    """The jitter-buffer delay: milliseconds, 0 or more (0: no buffering)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Play a Motion-JPEG RTSP stream: from the course's server "
        "(HOST PORT RTP_PORT FILE) or from any standard server (rtsp:// URL).",
        usage="%(prog)s [options] HOST PORT RTP_PORT FILE\n"
        "       %(prog)s [options] rtsp://[user:pass@]host[:port]/path",
    )
    parser.add_argument("source", nargs="+", metavar="ARG",
                        help="HOST PORT RTP_PORT FILE (textbook dialect) or one rtsp:// URL")
    parser.add_argument("--transport", choices=("udp", "tcp"), default="udp",
                        help="RTP over UDP (default) or interleaved on the RTSP connection "
                        "(rtsp:// URLs only)")
    parser.add_argument("--headless", action="store_true",
                        help="no window: play, then print a JSON summary on stdout")
    parser.add_argument("--duration", type=positive_float,
                        help="headless: seconds to play (default: to the end of the stream)")
    parser.add_argument("--seek", type=float, default=None,
                        help="start playing at this many seconds (servers that give a range)")
    parser.add_argument("--save-frames", metavar="DIR",
                        help="write every displayed frame as a JPEG file into DIR")
    parser.add_argument("--latency", type=latency_ms, default=100, metavar="MS",
                        help="jitter buffer in milliseconds (default 100): how long frames "
                        "wait for late or reordered packets; 0 releases each frame as soon "
                        "as it is complete (lowest latency, no wait for reordering)")
    parser.add_argument("--record", metavar="FILE",
                        help="write every complete frame received to FILE as raw MJPEG "
                        "(concatenated JPEGs, as received, before decoding): our server "
                        "serves it back, ffmpeg reads it with -f mjpeg")
    parser.add_argument("--timeout", type=positive_float, default=10,
                        help="seconds to wait for the server's replies (default 10)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log protocol details")
    return parser


def parse_args(argv: list[str] | None = None):
    parser = build_parser()
    args = parser.parse_args(argv)
    source = args.source
    if len(source) == 1 and source[0].lower().startswith("rtsp://"):
        try:
            args.target = parse_rtsp_url(source[0])
        except ValueError as exc:
            parser.error(str(exc))
    elif len(source) == 4:
        host, port, rtp_port, file_name = source
        try:
            args.target = textbook_target(host, port_number(port), port_number(rtp_port),
                                          file_name)
        except argparse.ArgumentTypeError as exc:
            parser.error(str(exc))
        if args.transport == "tcp":
            parser.error("--transport tcp needs an rtsp:// URL (the course's dialect is UDP only)")
    else:
        parser.error("give HOST PORT RTP_PORT FILE, or one rtsp:// URL")
    if args.save_frames:
        os.makedirs(args.save_frames, exist_ok=True)
    return args


def player_options(args, display_size: tuple[int, int] | None = None,
                   record=None) -> PlayerOptions:
    return PlayerOptions(
        transport=args.transport,
        latency=args.latency / 1000,
        save_frames=args.save_frames,
        reply_timeout=args.timeout,
        display_size=display_size,
        record=record,
    )


def run_headless(args, record=None) -> int:
    player = Player(args.target, player_options(args, record=record))
    try:
        player.start()
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    started = time.monotonic()
    state_at_end = None  # the state when --duration ran out (None: the stream ended first)
    try:
        player.setup()
        player.play(args.seek)
        deadline = started + args.duration if args.duration else float("inf")
        while player.failed is None:
            if time.monotonic() >= deadline:
                state_at_end = player.state
                break
            if player.ended.wait(0.05) and player.state is not PlayerState.INIT:
                break
            if player.ended.is_set():
                break
    except KeyboardInterrupt:
        pass
    finally:
        player.close()
    summary = player.stats(whole_run=True)
    error = player.failed or duration_error(args.duration, state_at_end, summary["frames"])
    if error is not None:
        print(f"error: {error}", file=sys.stderr)
        return 1
    summary["elapsed"] = time.monotonic() - started
    summary["url"] = args.target.url
    summary["transport"] = args.transport
    print(json.dumps(rounded_summary(summary), sort_keys=True))
    return 0


def duration_error(duration: float | None, state: PlayerState | None, frames: int) -> str | None:
    """Why a run whose --duration ran out showed nothing, as the timeout would say it."""
    if state is None:
        return None
    if state is PlayerState.INIT:
        return f"--duration {duration:g} s ended before the stream was set up"
    if state is not PlayerState.PLAYING:
        return f"--duration {duration:g} s ended before the server answered PLAY"
    if frames == 0:
        return f"--duration {duration:g} s ended before any frame arrived"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    record = None
    if args.record:
        try:  # before connecting: a recording that cannot be written is a usage error
            record = open(args.record, "wb")  # noqa: SIM115 -- closed below, on every path
        except OSError as exc:
            print(f"error: cannot write the recording {args.record}: "
                  f"{exc.strerror or exc}", file=sys.stderr)
            return 2
    try:
        if args.headless:
            return run_headless(args, record)
        from Client import run_window  # Tk only when there is a window

        return run_window(args, player_options(args, record=record))
    finally:
        if record is not None:
            try:
                record.close()
            except OSError as exc:
                print(f"error: cannot write the recording {args.record}: "
                      f"{exc.strerror or exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
