"""``--record FILE``: every complete frame the player receives, as raw concatenated JPEGs.

The recording must hold as many frames as the player received (RFC 2435 rebuilt or the
textbook dialect's whole JPEGs), be indexed by our own :class:`MjpegFile` with that count,
be read by ffprobe (``-f mjpeg``) with that count, and be served back by our server to the
player frame for frame. A recording that cannot be opened is a usage error before any
connection is made.
"""

from __future__ import annotations

import subprocess

import pytest
from conftest import need_tool
from peers.player_cli import frame_numbers, free_udp_port, run_player

from mjpeg_rtsp.media import MjpegFile

CLIP = list(range(40))  # short.Mjpeg's test-pattern counters


def ffprobe_frames(path) -> int:
    ffprobe = need_tool("ffprobe")
    done = subprocess.run(
        [ffprobe, "-v", "error", "-f", "mjpeg", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=nb_read_frames,width,height", "-of", "default=nw=1",
         str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    fields = dict(line.split("=", 1) for line in done.stdout.split())
    assert (fields["width"], fields["height"]) == ("384", "288"), fields
    return int(fields["nb_read_frames"])


def indexed_frames(path) -> int:
    media = MjpegFile(str(path))
    try:
        return media.frame_count
    finally:
        media.close()


def assert_recorded(run, path) -> None:
    assert run.returncode == 0, str(run)
    summary = run.summary
    assert summary["frames"] == 40 and summary["frames_lost"] == 0, summary
    assert summary["frames_recorded"] == summary["frames"], summary
    data = path.read_bytes()
    assert data.count(b"\xff\xd8\xff") >= 40 and data[-2:] == b"\xff\xd9"
    assert indexed_frames(path) == 40
    assert ffprobe_frames(path) == 40


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_record_standard_dialect_and_serve_it_back(server_factory, tmp_path, transport):
    server = server_factory(fps=50)
    recorded = tmp_path / "media" / "recorded.mjpeg"
    recorded.parent.mkdir()
    run = run_player(f"rtsp://127.0.0.1:{server.port}/short.Mjpeg", "--transport", transport,
                     "--record", str(recorded), timeout=20)
    assert_recorded(run, recorded)
    # Our server serves the recording; the player shows the same 40 frames again.
    again = server_factory(root=recorded.parent, fps=50)
    frames = tmp_path / "frames"
    run = run_player(f"rtsp://127.0.0.1:{again.port}/recorded.mjpeg", "--save-frames",
                     str(frames), timeout=20)
    assert run.returncode == 0, str(run)
    assert run.summary["frames"] == 40 and run.summary["frames_recorded"] == 0, run.summary
    assert frame_numbers(frames) == CLIP


def test_record_textbook_dialect(server_factory, media_root, tmp_path):
    server = server_factory(fps=50)
    recorded = tmp_path / "textbook.mjpeg"
    run = run_player("127.0.0.1", str(server.port), str(free_udp_port()), "short.Mjpeg",
                     "--record", str(recorded), timeout=20)
    assert_recorded(run, recorded)
    # As the textbook server sent them: the file's own JPEGs, byte for byte.
    media = MjpegFile(str(media_root / "short.Mjpeg"))
    try:
        assert recorded.read_bytes() == b"".join(media.frame(n) for n in CLIP)
    finally:
        media.close()


def test_ffmpeg_decodes_the_recording(server_factory, tmp_path):
    ffmpeg = need_tool("ffmpeg")
    server = server_factory(fps=50)
    recorded = tmp_path / "rec.mjpeg"
    run = run_player(f"rtsp://127.0.0.1:{server.port}/short.Mjpeg", "--latency", "0",
                     "--record", str(recorded), timeout=20)
    assert run.returncode == 0 and run.summary["frames_recorded"] == 40, str(run)
    done = subprocess.run([ffmpeg, "-v", "error", "-f", "mjpeg", "-i", str(recorded),
                           "-f", "null", "-"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stderr == "", done.stderr


@pytest.mark.parametrize("where", ["missing-dir/rec.mjpeg", "."])
def test_unwritable_recording_exits_2_before_connecting(tmp_path, where):
    # Nobody listens on port 1: a player that connected would say "connection refused".
    path = tmp_path / where
    run = run_player("rtsp://127.0.0.1:1/short.Mjpeg", "--record", str(path))
    assert run.returncode == 2, str(run)
    assert run.stderr.startswith(f"error: cannot write the recording {path}: "), str(run)
    assert "refused" not in run.stderr and "Traceback" not in run.stderr
    assert run.stdout == ""
