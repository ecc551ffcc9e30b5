"""Tests for mjpeg_rtsp.sources: ``--live`` parsing and every live producer, each feeding a
collecting sink from real things (ffmpeg, pipes, files, Pillow, Xvfb), with nothing left
behind: threads, descriptors and child processes back to their counts before each test."""

from __future__ import annotations

import argparse
import gc
import io
import logging
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import make_clip, need_tool, open_fds, wait_for
from PIL import Image

from mjpeg_rtsp import sources
from mjpeg_rtsp.jpeg import scan_jpeg
from mjpeg_rtsp.media import MjpegFile
from mjpeg_rtsp.sources import (
    Backoff,
    ExecProducer,
    FileLoopProducer,
    LiveSpec,
    LiveSpecError,
    ScreenProducer,
    SourceKind,
    StdinProducer,
    TestPatternProducer,
    make_producer,
    parse_live_argument,
)

WAIT = 20.0  # seconds any condition below may take on a loaded machine
FFMPEG_LIVE = ("ffmpeg -hide_banner -loglevel error -re -f lavfi -i testsrc2=size=320x240:rate=25 "
               "-c:v mjpeg -huffman default -f mjpeg -")


class CollectingSink:
    """A live channel stand-in: records frames and on/off-air events."""

    def __init__(self, stall: float = 0.0) -> None:
        self.lock = threading.Lock()
        self.frames: list[tuple[bytes, float]] = []
        self.events: list[tuple[str, str]] = []
        self.stall = stall  # seconds the first push takes: a slow consumer

    def push_jpeg(self, jpeg: bytes, capture_time: float) -> None:
        assert isinstance(jpeg, bytes) and isinstance(capture_time, float)
        if self.stall and not self.frames:
            time.sleep(self.stall)
        with self.lock:
            self.frames.append((jpeg, capture_time))

    def source_started(self, description: str) -> None:
        with self.lock:
            self.events.append(("started", description))

    def source_ended(self, reason: str) -> None:
        with self.lock:
            self.events.append(("ended", reason))

    def count(self, kind: str) -> int:
        with self.lock:
            return sum(1 for k, _ in self.events if k == kind)

    def jpegs(self) -> list[bytes]:
        with self.lock:
            return [j for j, _ in self.frames]


def children() -> set[int]:
    """Live (or unreaped) child processes of this process."""
    me, found = os.getpid(), set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                found.add(int(entry))
    return found


@pytest.fixture(autouse=True)
def nothing_left_behind():
    """Threads, descriptors and child processes are back to their counts after the test."""
    gc.collect()
    threads, fds, kids = set(threading.enumerate()), open_fds(), children()
    yield

    def settled() -> bool:
        gc.collect()
        return set(threading.enumerate()) <= threads and open_fds() <= fds and \
            children() <= kids

    wait_for(settled, 10.0)
    assert set(threading.enumerate()) <= threads
    assert open_fds() == fds
    assert children() <= kids


@pytest.fixture
def producers():
    """Producers started by a test, stopped at its end whatever happened."""
    made: list[sources.LiveProducer] = []

    def track(producer: sources.LiveProducer) -> sources.LiveProducer:
        made.append(producer)
        producer.start()
        return producer

    yield track
    for producer in made:
        producer.stop()


# --- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize("text, name, expected", [
    ("cam=-", "cam", LiveSpec(SourceKind.STDIN, "-")),
    ("live/cam=exec:ffmpeg -i 'a b.mp4' -f mjpeg -", "live/cam",
     LiveSpec(SourceKind.EXEC, "exec:ffmpeg -i 'a b.mp4' -f mjpeg -",
              command=("ffmpeg", "-i", "a b.mp4", "-f", "mjpeg", "-"))),
    ("sh=exec:sh -c 'echo x | cat'", "sh",
     LiveSpec(SourceKind.EXEC, "exec:sh -c 'echo x | cat'", command=("sh", "-c", "echo x | cat"))),
    ("t=testpattern", "t",
     LiveSpec(SourceKind.TESTPATTERN, "testpattern", width=640, height=480, fps=25.0)),
    ("a.b_c~d-e/f=testpattern:1280x720@30", "a.b_c~d-e/f",
     LiveSpec(SourceKind.TESTPATTERN, "testpattern:1280x720@30", width=1280, height=720,
              fps=30.0)),
    ("t=testpattern:16x4096@0.1", "t",
     LiveSpec(SourceKind.TESTPATTERN, "testpattern:16x4096@0.1", width=16, height=4096,
              fps=0.1)),
    ("s=screen::99@10,scale=640x360", "s",
     LiveSpec(SourceKind.SCREEN, "screen::99@10,scale=640x360", width=640, height=360,
              fps=10.0, display=":99")),
    ("s=screen:host:1.0", "s",
     LiveSpec(SourceKind.SCREEN, "screen:host:1.0", fps=10.0, display="host:1.0")),
])
def test_parse_good(text: str, name: str, expected: LiveSpec) -> None:
    assert parse_live_argument(text) == (name, expected)


def test_parse_file_and_screen_default_display(tmp_path: Path, monkeypatch) -> None:
    clip = tmp_path / "clip.mjpeg"
    clip.write_bytes(b"x")
    assert parse_live_argument(f"f=file:{clip}") == (
        "f", LiveSpec(SourceKind.FILE, f"file:{clip}", path=str(clip)))
    monkeypatch.setenv("DISPLAY", ":7")
    assert parse_live_argument("s=screen@2.5")[1] == LiveSpec(
        SourceKind.SCREEN, "screen@2.5", fps=2.5, display=":7")
    monkeypatch.delenv("DISPLAY")
    with pytest.raises(LiveSpecError, match="DISPLAY is not set"):
        parse_live_argument("s=screen")


@pytest.mark.parametrize("text, message", [
    ("cam", "expected NAME=SOURCE"),
    ("=-", "the live name is empty"),
    ("a//b=-", "empty, '.' and '..'"),
    ("a/../b=-", "empty, '.' and '..'"),
    ("./b=-", "empty, '.' and '..'"),
    ("/cam=-", "empty, '.' and '..'"),
    ("cam/=-", "empty, '.' and '..'"),
    ("ca m=-", "only letters, digits"),
    ("cam?x=-", "only letters, digits"),
    ("x" * 101 + "=-", "longer than 100"),
    ("cam=", "unknown live source ''"),
    ("cam=rtsp://x", "unknown live source"),
    ("cam=exec:", "the command is empty"),
    ("cam=exec:ffmpeg 'unclosed", "cannot split the command"),
    ("cam=file:", "the path is empty"),
    ("cam=file:/no/such/file.mjpeg", "no such file"),
    ("cam=testpattern:640", "expected WIDTHxHEIGHT"),
    ("cam=testpattern:8x8", "out of range"),
    ("cam=testpattern:640x5000", "out of range"),
    ("cam=testpattern:640x480@0", "frame rate must be 0.1..120"),
    ("cam=testpattern:640x480@121", "frame rate must be 0.1..120"),
    ("cam=testpattern:640x480@nan", "frame rate must be"),
    ("cam=testpattern:640x480@fast", "not a frame rate"),
    ("cam=testpatternX", "unknown live source"),
    ("cam=screen::99,size=1x1", "unknown option"),
    ("cam=screen::99,scale=1x1", "out of range"),
    ("cam=screen:nodisplay", "not an X display"),
    ("cam=screenX", "unknown live source"),
])
def test_parse_bad_is_readable(text: str, message: str) -> None:
    with pytest.raises(LiveSpecError, match=re.escape(message)):
        parse_live_argument(text)


def test_parse_as_argparse_type(capsys) -> None:
    parser = argparse.ArgumentParser(prog="server")
    parser.add_argument("--live", type=parse_live_argument, action="append", default=[])
    args = parser.parse_args(["--live", "a=testpattern", "--live", "b/c=-"])
    assert [name for name, _ in args.live] == ["a", "b/c"]
    with pytest.raises(SystemExit):
        parser.parse_args(["--live", "a=testpattern:1x1"])
    err = capsys.readouterr().err
    assert "argument --live: testpattern: 1x1 is out of range (16..4096" in err
    assert issubclass(LiveSpecError, ValueError)


def test_backoff_doubles_caps_and_resets() -> None:
    b = Backoff()
    assert [b.next_delay(0.5) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert b.next_delay(29.9) == 30
    assert b.next_delay(30.0) == 1  # a run that lasted: start again from 1 s
    assert b.next_delay(1.0) == 2


# --- exec ---------------------------------------------------------------------------------


def _pid(description: str) -> int:
    return int(re.fullmatch(r"command \S+ \(pid (\d+)\)", description)[1])


def test_exec_ffmpeg_frames_then_killed_and_restarted(producers) -> None:
    need_tool("ffmpeg")
    sink = CollectingSink()
    name, spec = parse_live_argument("cam=exec:" + FFMPEG_LIVE)
    producer = producers(ExecProducer(name, sink, spec.command, Backoff(0.05, 0.2)))
    assert wait_for(lambda: len(sink.frames) >= 10, WAIT)
    for jpeg in sink.jpegs()[:10]:
        info = scan_jpeg(jpeg)
        assert (info.width, info.height) == (320, 240) and info.rfc2435_type is not None
    times = [t for _, t in sink.frames[:10]]
    assert times == sorted(times) and abs(times[-1] - time.time()) < WAIT
    first = sink.events[0]
    assert first[0] == "started" and first[1] == producer.description
    os.kill(_pid(first[1]), signal.SIGKILL)
    assert wait_for(lambda: sink.count("started") == 2, WAIT)
    assert sink.events[1] == ("ended", "command killed by signal SIGKILL")
    assert _pid(sink.events[2][1]) != _pid(first[1])
    seen = len(sink.frames)
    assert wait_for(lambda: len(sink.frames) >= seen + 5, WAIT)  # frames again
    producer.stop()
    assert sink.events[-1] == ("ended", "stopped") and len(sink.events) == 4
    stats = producer.stats()
    assert stats["starts"] == 2 and stats["frames_delivered"] == len(sink.frames)
    assert stats["frames_corrupt"] == 0 and not stats["on_air"]
    producer.stop()  # idempotent
    assert len(sink.events) == 4


def test_exec_exits_at_once_backs_off(producers, caplog) -> None:
    caplog.set_level(logging.INFO, logger="mjpeg_rtsp.sources")
    sink = CollectingSink()
    command = (sys.executable, "-c", "import sys; print('bad\\rcamera', file=sys.stderr); "
               "sys.exit(3)")
    producer = producers(ExecProducer("cam", sink, command, Backoff(0.01, 0.08)))
    assert wait_for(lambda: sink.count("ended") >= 6, WAIT)
    producer.stop()
    kinds = [kind for kind, _ in sink.events]
    assert kinds == ["started", "ended"] * (len(kinds) // 2)
    assert set(r for k, r in sink.events if k == "ended") == {"command exited with status 3"}
    retries = [float(m[1]) for m in (re.search(r"retrying in (\S+) s$", r.getMessage())
                                     for r in caplog.records) if m]
    assert retries[:5] == [0.01, 0.02, 0.04, 0.08, 0.08]
    messages = [r.getMessage() for r in caplog.records]
    assert any(re.fullmatch(r"live cam: \S+: bad", m) for m in messages)  # stderr, by line
    assert any(re.fullmatch(r"live cam: \S+: camera", m) for m in messages)  # CR ends one too
    assert any(re.fullmatch(r"live cam: command \S+ exited with status 3; retrying in 0.01 s", m)
               for m in messages)


def test_exec_missing_command_logs_and_retries(producers, caplog) -> None:
    sink = CollectingSink()
    producer = producers(ExecProducer("cam", sink, ["no-such-command-here", "-x"],
                                      Backoff(0.01, 0.04)))
    line = "live cam: cannot run 'no-such-command-here': No such file or directory; retrying in"
    assert wait_for(lambda: sum(line in r.getMessage() for r in caplog.records) >= 3, WAIT)
    producer.stop()
    assert sink.events == [] and producer.stats()["starts"] == 0
    assert all(r.exc_info is None for r in caplog.records)  # no traceback


def test_exec_stop_kills_the_whole_group(producers, monkeypatch) -> None:
    """A shell that ignores SIGTERM, with a child of its own holding stdout."""
    monkeypatch.setattr(sources, "_STOP_TIMEOUT", 0.3)
    sink = CollectingSink()
    _, spec = parse_live_argument("g=exec:sh -c 'trap \"\" TERM; sleep 60 & sleep 60'")
    producer = producers(make_producer(spec, sink, name="g"))
    assert wait_for(lambda: sink.count("started") == 1, WAIT)
    pgid = _pid(sink.events[0][1])
    assert wait_for(lambda: len([p for p in _group(pgid)]) >= 2, WAIT)
    producer.stop()
    assert _group(pgid) == []
    assert sink.events[-1] == ("ended", "stopped")


def _group(pgid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry))
    return found


# --- stdin --------------------------------------------------------------------------------


def test_stdin_pipe_delivers_every_frame_then_ends(producers, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mjpeg", 30, fmt="raw", size="160x120")
    data = clip.read_bytes()
    with _opened(clip) as media:
        expected = [media.frame(i) for i in range(media.frame_count)]
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as stream:
        sink = CollectingSink()
        producer = producers(make_producer(LiveSpec(SourceKind.STDIN, "-"), sink,
                                           stdin=stream, name="pipe"))
        writer = threading.Thread(target=_write_all, args=(write_fd, b"junk" + data))
        writer.start()
        writer.join(WAIT)
        assert wait_for(lambda: sink.count("ended") == 1, WAIT)
        assert sink.events == [("started", "standard input"), ("ended", "end of input")]
        assert sink.jpegs() == expected
        assert producer.stats()["bytes_skipped"] == 4
        assert wait_for(lambda: producer._thread is not None and not producer._thread.is_alive(),
                        WAIT)  # no restart after the end of input
        producer.stop()
        assert len(sink.events) == 2


def test_stdin_stop_while_waiting_for_input(producers) -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as stream, os.fdopen(write_fd, "wb") as writer:
        sink = CollectingSink()
        producer = producers(StdinProducer("pipe", sink, stream))
        writer.write(sample_jpeg()[:50])  # half a frame, then silence
        writer.flush()
        assert wait_for(lambda: producer.stats()["bytes_in"] == 50, WAIT)
        producer.stop()
        assert sink.events == [("started", "standard input"), ("ended", "stopped")]
        assert producer.stats()["frames_truncated"] == 1


def test_stdin_in_memory_stream(producers) -> None:
    sink = CollectingSink()
    jpeg = sample_jpeg()
    producers(StdinProducer("mem", sink, io.BytesIO(jpeg * 3)))
    assert wait_for(lambda: sink.count("ended") == 1, WAIT)
    assert sink.jpegs() == [jpeg] * 3


def _write_all(fd: int, data: bytes) -> None:
    with os.fdopen(fd, "wb") as out:
        for pos in range(0, len(data), 1000):  # pipe-sized and smaller pieces
            out.write(data[pos : pos + 1000])
            out.flush()


class _opened:  # noqa: N801 - a context manager for MjpegFile, which closes with close()
    def __init__(self, path: Path) -> None:
        self.file = MjpegFile(str(path))

    def __enter__(self) -> MjpegFile:
        return self.file

    def __exit__(self, *exc: object) -> None:
        self.file.close()


def sample_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(out, "JPEG")
    return out.getvalue()


# --- file loop ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["raw", "textbook"])
def test_file_loop_wraps_around(producers, tmp_path: Path, fmt: str) -> None:
    clip = make_clip(tmp_path / "loop.mjpeg", 8, fmt=fmt, size="160x120")
    with _opened(clip) as media:
        frames = [media.frame(i) for i in range(media.frame_count)]
    assert len(set(frames)) == 8
    sink = CollectingSink()
    name, spec = parse_live_argument(f"loop=file:{clip}")
    producer = producers(make_producer(spec, sink, fps=50.0, name=name))
    assert wait_for(lambda: len(sink.frames) >= 20, WAIT)
    producer.stop()
    indices = [frames.index(j) for j in sink.jpegs()]
    assert indices[0] == 0
    skipped = producer.stats()["frames_skipped"]
    steps = [(b - a) % 8 for a, b in zip(indices, indices[1:], strict=False)]
    assert sum(s - 1 for s in steps) <= skipped  # consecutive but for frames skipped when late
    assert any(b < a for a, b in zip(indices, indices[1:], strict=False))  # it wrapped around
    assert sink.events[0] == ("started", "file loop.mjpeg (8 frames looped at 50 fps)")
    assert sink.events[-1] == ("ended", "stopped")


def test_file_missing_is_retried(producers, tmp_path: Path, caplog) -> None:
    sink = CollectingSink()
    producer = producers(FileLoopProducer("gone", sink, str(tmp_path / "gone.mjpeg"), 20.0,
                                          Backoff(0.01, 0.02)))
    assert wait_for(lambda: sum("cannot open" in r.getMessage() for r in caplog.records) >= 2,
                    WAIT)
    made = make_clip(tmp_path / "made.mjpeg", 3, fmt="raw", size="160x120")
    made.rename(tmp_path / "gone.mjpeg")  # it appears, whole: on air
    assert wait_for(lambda: len(sink.frames) >= 3, WAIT)
    producer.stop()
    assert [k for k, _ in sink.events] == ["started", "ended"]


# --- test pattern -------------------------------------------------------------------------


def test_testpattern_frames_decode_and_differ(producers) -> None:
    sink = CollectingSink()
    name, spec = parse_live_argument("tp=testpattern:320x240@20")
    producer = producers(make_producer(spec, sink, name=name))
    assert wait_for(lambda: len(sink.frames) >= 5, WAIT)
    producer.stop()
    jpegs = sink.jpegs()
    assert len(set(jpegs)) == len(jpegs)
    for jpeg in jpegs[:5]:
        assert scan_jpeg(jpeg).rfc2435_type == 1  # baseline 4:2:0, RFC 2435 as it is
        with Image.open(io.BytesIO(jpeg)) as img:
            img.load()
            assert img.size == (320, 240)
    times = [t for _, t in sink.frames]
    assert times == sorted(times)
    assert sink.events == [("started", "test pattern 320x240 at 20 fps"), ("ended", "stopped")]


def test_testpattern_late_frames_are_skipped(producers) -> None:
    sink = CollectingSink(stall=0.3)  # the first push takes 0.3 s: 6 frame times at 20 fps
    producer = producers(TestPatternProducer("tp", sink, 64, 48, 20.0))
    assert wait_for(lambda: len(sink.frames) >= 3, WAIT)
    producer.stop()
    assert producer.stats()["frames_skipped"] >= 5


# --- screen -------------------------------------------------------------------------------


def test_screen_under_xvfb(producers, xvfb_display: str) -> None:
    sink = CollectingSink()
    producer = producers(ScreenProducer("scr", sink, xvfb_display, 10.0))
    _, spec = parse_live_argument(f"small=screen:{xvfb_display}@10,scale=320x240")
    small_sink = CollectingSink()
    small = producers(make_producer(spec, small_sink, name="small"))
    assert wait_for(lambda: len(sink.frames) >= 2 and len(small_sink.frames) >= 2, WAIT)
    producer.stop()
    small.stop()
    for collected, size in ((sink, (1024, 768)), (small_sink, (320, 240))):
        jpeg = collected.jpegs()[0]
        assert scan_jpeg(jpeg).rfc2435_type == 1
        with Image.open(io.BytesIO(jpeg)) as img:
            assert img.size == size
    assert sink.events[0] == ("started", f"screen {xvfb_display} (1024x768 at 10 fps)")
    assert small_sink.events[0] == ("started", f"screen {xvfb_display} (320x240 at 10 fps)")


def test_screen_without_display_logs_and_retries(producers, caplog) -> None:
    sink = CollectingSink()
    producer = producers(ScreenProducer("scr", sink, ":4321", 10.0, backoff=Backoff(0.01, 0.02)))
    line = "live scr: cannot grab X display :4321"
    assert wait_for(lambda: sum(line in r.getMessage() for r in caplog.records) >= 2, WAIT)
    producer.stop()
    assert sink.events == []
    assert all(r.exc_info is None for r in caplog.records)
