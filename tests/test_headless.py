"""The headless player's verdict and numbers, on the real command line: a --duration that ends
before PLAY is answered, or before any frame arrives, is an error (exit 1, ``error: ...``, no
JSON), as a reply timeout is; the JSON summary's numbers are rounded for people."""

from __future__ import annotations

import json
import re

from conftest import SAMPLE, textbook_frames
from peers.player_cli import run_player
from peers.scripted_rtsp import Script, ScriptedRtspServer


def assert_error(run, message: str) -> None:
    assert run.returncode == 1, str(run)
    assert run.stdout == "", str(run)
    assert re.fullmatch(message, run.stderr.strip()), str(run)
    assert "Traceback" not in run.stderr


def test_duration_ends_before_play_is_answered():
    with ScriptedRtspServer(Script(answer_play=False), textbook_frames(SAMPLE)[:5]) as server:
        run = run_player(f"{server.url}/cam", "--duration", "0.5")
        methods = server.methods()
    assert_error(run, r"error: --duration 0\.5 s ended before the server answered PLAY")
    assert methods[:4] == ["OPTIONS", "DESCRIBE", "SETUP", "PLAY"], methods


def test_duration_ends_before_any_frame():
    with ScriptedRtspServer(Script(), []) as server:  # PLAY answered, nothing sent
        run = run_player(f"{server.url}/cam", "--duration", "0.5")
        methods = server.methods()
    assert_error(run, r"error: --duration 0\.5 s ended before any frame arrived")
    assert methods == ["OPTIONS", "DESCRIBE", "SETUP", "PLAY", "TEARDOWN"], methods


def test_tiny_duration_against_our_server(server):
    run = run_player(f"rtsp://127.0.0.1:{server.port}/movie.Mjpeg", "--duration", "0.01")
    assert_error(run, r"error: --duration 0\.01 s ended before (the stream was set up|the "
                      r"server answered PLAY|any frame arrived)")


# (key, decimals at most); the rest of the summary is whole numbers and strings.
# "median" and "p95" are latency_ms's (milliseconds, like jitter_ms).
ROUNDED = {"elapsed": 2, "jitter_ms": 2, "fps": 1, "kbps": 1, "loss_percent": 1,
           "median": 2, "p95": 2}


def test_summary_numbers_are_rounded(server):
    run = run_player(f"rtsp://127.0.0.1:{server.port}/movie.Mjpeg", "--duration", "1.5")
    assert run.returncode == 0, str(run)
    text = run.stdout.strip()
    numbers = dict(re.findall(r'"(\w+)": (-?[0-9][0-9.e+-]*)', text))
    assert set(ROUNDED) <= set(numbers), text
    for key, literal in numbers.items():
        decimals = len(literal.partition(".")[2])
        assert "e" not in literal, (key, literal)
        assert decimals <= ROUNDED.get(key, 0), (key, literal)
    summary = json.loads(text)
    assert summary["frames"] > 0 and summary["fps"] > 0 and summary["kbps"] > 0, summary
    assert 1.5 <= summary["elapsed"] < 10, summary
