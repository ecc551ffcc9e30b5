"""Live sources: ``--live NAME=SOURCE`` parsing and the producers that feed a live channel.

Theory of operation
-------------------
A producer is a driver: one thread that gets JPEGs from somewhere and hands each to a
:class:`FrameSink` (the live channel) with the wall-clock time it was captured or arrived.
It says when the source goes on air (``source_started``) and off air (``source_ended``),
and a source that fails is retried with an exponential :class:`Backoff` (1 s doubling to
30 s, back to 1 s once a run lasted 30 s), so a camera unplugged for a while comes back on
its own. Nothing a source does ends in a traceback: every failure is one log line prefixed
``live NAME:`` and an off-air event.

* :class:`StdinProducer` (``-``) and :class:`ExecProducer` (``exec:COMMAND``) read a raw
  MJPEG byte stream and cut it into frames with :class:`~mjpeg_rtsp.mjpeg_stream.
  MjpegStreamSplitter`; frames are stamped with their arrival time.
* :class:`FileLoopProducer` (``file:PATH``), :class:`TestPatternProducer` (``testpattern``)
  and :class:`ScreenProducer` (``screen``) are paced: frame ``k`` is due at ``t0 + k / fps``
  on the monotonic clock, so the rate does not drift; a frame whose time has passed when the
  previous one is done is skipped and counted, never sent late.

``stop()`` joins the thread, and for a command terminates (then kills) its process group,
reaps it and closes the pipes. The test pattern and the screen are encoded as baseline 4:2:0
JPEGs with the standard Huffman tables, which RFC 2435 carries as they are.
"""

from __future__ import annotations

import argparse
import enum
import io
import logging
import math
import os
import re
import selectors
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import BinaryIO

from .live import FrameSink
from .mjpeg_stream import MjpegStreamSplitter

__all__ = [
    "Backoff",
    "ExecProducer",
    "FileLoopProducer",
    "LiveProducer",
    "LiveSpec",
    "LiveSpecError",
    "ScreenProducer",
    "SourceKind",
    "StdinProducer",
    "TestPatternProducer",
    "encode_rfc2435_jpeg",
    "make_producer",
    "parse_live_argument",
    "parse_live_name",
    "parse_live_source",
]

log = logging.getLogger(__name__)

MAX_NAME_LENGTH = 100
MIN_SIZE, MAX_SIZE = 16, 4096
MIN_FPS, MAX_FPS = 0.1, 120.0
DEFAULT_PATTERN_SIZE = (640, 480)
DEFAULT_PATTERN_FPS = 25.0
DEFAULT_SCREEN_FPS = 10.0
JPEG_QUALITY = 80
_READ_SIZE = 1 << 16
_MAX_LOG_LINE = 1000  # a child's stderr without newlines is logged in pieces of this size
_STOP_TIMEOUT = 5.0  # seconds a child gets after SIGTERM before SIGKILL


# --- parsing ------------------------------------------------------------------------------


class LiveSpecError(argparse.ArgumentTypeError, ValueError):
    """A ``--live`` argument that cannot be used; the message says why (argparse shows it)."""


class SourceKind(enum.Enum):
    STDIN = "stdin"
    EXEC = "exec"
    FILE = "file"
    TESTPATTERN = "testpattern"
    SCREEN = "screen"


@dataclass(frozen=True)
class LiveSpec:
    """A parsed SOURCE. Fields not used by ``kind`` keep their defaults.

    ``width``/``height``: the test pattern's size, or the screen's scaled size (0: the
    display's own); ``fps``: the test pattern's or the screen's rate (a file loops at the
    server's ``--fps``, given to :func:`make_producer`).
    """

    kind: SourceKind
    text: str  # SOURCE as written, for messages
    command: tuple[str, ...] = ()
    path: str = ""
    width: int = 0
    height: int = 0
    fps: float = 0.0
    display: str = ""


_NAME_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")
_SIZE = re.compile(r"(\d{1,5})x(\d{1,5})")
_DISPLAY = re.compile(r"[A-Za-z0-9._-]*:\d+(\.\d+)?")


def parse_live_name(name: str) -> str:
    """A live path: ``[A-Za-z0-9._~-]+`` segments joined by ``/``, none ``.`` or ``..``."""
    if not name:
        raise LiveSpecError("the live name is empty (expected NAME=SOURCE)")
    if len(name) > MAX_NAME_LENGTH:
        raise LiveSpecError(f"the live name is longer than {MAX_NAME_LENGTH} characters")
    for segment in name.split("/"):
        if segment in ("", ".", ".."):
            raise LiveSpecError(
                f"live name {name!r}: empty, '.' and '..' path segments are not allowed")
        if not _NAME_SEGMENT.fullmatch(segment):
            raise LiveSpecError(
                f"live name {name!r}: only letters, digits and . _ ~ - in segments "
                "separated by /")
    return name


def _parse_size(text: str, what: str) -> tuple[int, int]:
    match = _SIZE.fullmatch(text)
    if not match:
        raise LiveSpecError(f"{what}: expected WIDTHxHEIGHT (like 640x480), got {text!r}")
    width, height = int(match[1]), int(match[2])
    for value in (width, height):
        if not MIN_SIZE <= value <= MAX_SIZE:
            raise LiveSpecError(
                f"{what}: {width}x{height} is out of range ({MIN_SIZE}..{MAX_SIZE} pixels a side)")
    return width, height


def _parse_fps(text: str, what: str) -> float:
    try:
        fps = float(text)
    except ValueError:
        raise LiveSpecError(f"{what}: not a frame rate: {text!r}") from None
    if not (math.isfinite(fps) and MIN_FPS <= fps <= MAX_FPS):
        raise LiveSpecError(f"{what}: frame rate must be {MIN_FPS}..{MAX_FPS:g}, got {text}")
    return fps


def parse_live_source(text: str) -> LiveSpec:
    """SOURCE: ``-``, ``exec:COMMAND``, ``file:PATH``, ``testpattern[:WxH][@FPS]`` or
    ``screen[:DISPLAY][@FPS][,scale=WxH]``."""
    if text == "-":
        return LiveSpec(SourceKind.STDIN, text)
    kind, colon, rest = text.partition(":")
    if kind == "exec" and colon:
        try:
            argv = tuple(shlex.split(rest))
        except ValueError as exc:
            raise LiveSpecError(f"exec: cannot split the command {rest!r}: {exc}") from None
        if not argv:
            raise LiveSpecError("exec: the command is empty (exec:COMMAND ARGS...)")
        return LiveSpec(SourceKind.EXEC, text, command=argv)
    if kind == "file" and colon:
        if not rest:
            raise LiveSpecError("file: the path is empty (file:PATH)")
        if not os.path.isfile(rest):
            raise LiveSpecError(f"file:{rest}: no such file")
        return LiveSpec(SourceKind.FILE, text, path=rest)
    if text.startswith("testpattern"):
        return _parse_testpattern(text)
    if text.startswith("screen"):
        return _parse_screen(text)
    raise LiveSpecError(
        f"unknown live source {text!r}: expected -, exec:COMMAND, file:PATH, "
        "testpattern[:WxH[@FPS]] or screen[:DISPLAY][@FPS][,scale=WxH]")


def _parse_testpattern(text: str) -> LiveSpec:
    rest = text[len("testpattern"):]
    body, at, fps_text = rest.partition("@")
    width, height = DEFAULT_PATTERN_SIZE
    if body:
        if not body.startswith(":"):
            raise LiveSpecError(f"unknown live source {text!r} (testpattern[:WxH[@FPS]])")
        width, height = _parse_size(body[1:], "testpattern")
    fps = _parse_fps(fps_text, "testpattern") if at else DEFAULT_PATTERN_FPS
    return LiveSpec(SourceKind.TESTPATTERN, text, width=width, height=height, fps=fps)


def _parse_screen(text: str) -> LiveSpec:
    rest = text[len("screen"):]
    rest, comma, options = rest.partition(",")
    width = height = 0
    if comma:
        key, eq, value = options.partition("=")
        if key != "scale" or not eq:
            raise LiveSpecError(f"screen: unknown option {options!r} (only scale=WxH)")
        width, height = _parse_size(value, "screen scale")
    rest, at, fps_text = rest.partition("@")
    fps = _parse_fps(fps_text, "screen") if at else DEFAULT_SCREEN_FPS
    if rest:
        if not rest.startswith(":"):
            raise LiveSpecError(
                f"unknown live source {text!r} (screen[:DISPLAY][@FPS][,scale=WxH])")
        display = rest[1:]
        if not _DISPLAY.fullmatch(display):
            raise LiveSpecError(f"screen: {display!r} is not an X display (like :0 or :99)")
    else:
        display = os.environ.get("DISPLAY", "")
        if not display:
            raise LiveSpecError("screen: no display given (screen::0) and DISPLAY is not set")
    return LiveSpec(SourceKind.SCREEN, text, width=width, height=height, fps=fps,
                    display=display)


def parse_live_argument(text: str) -> tuple[str, LiveSpec]:
    """``--live NAME=SOURCE`` -> (NAME, spec). An argparse ``type``: errors are
    :class:`LiveSpecError` (both ``argparse.ArgumentTypeError`` and ``ValueError``)."""
    name, eq, source = text.partition("=")
    if not eq:
        raise LiveSpecError(f"expected NAME=SOURCE, got {text!r}")
    return parse_live_name(name), parse_live_source(source)


# --- helpers ------------------------------------------------------------------------------


class Backoff:
    """Delays between restarts: ``initial`` doubling up to ``maximum``; back to ``initial``
    after a run that lasted ``healthy_after`` seconds. Sans-I/O: durations are passed in."""

    def __init__(self, initial: float = 1.0, maximum: float = 30.0,
                 healthy_after: float = 30.0) -> None:
        self.initial, self.maximum, self.healthy_after = initial, maximum, healthy_after
        self._next = initial

    def next_delay(self, ran_for: float) -> float:
        """The wait before the next attempt, after one that ran ``ran_for`` seconds."""
        if ran_for >= self.healthy_after:
            self._next = self.initial
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay


def encode_rfc2435_jpeg(img, quality: int = JPEG_QUALITY) -> bytes:
    """A Pillow image as a JPEG that RFC 2435 carries as it is (transcode.encode_rfc2435)."""
    from .transcode import encode_rfc2435  # Pillow only where needed

    return encode_rfc2435(img, quality=quality)


class _UnavailableError(Exception):
    """The source cannot be opened or read now; the message says why (retried later)."""


# --- producers ----------------------------------------------------------------------------


class LiveProducer:
    """One live source's thread. ``start()`` once; ``stop()`` from any thread, idempotent:
    it returns when the thread has ended and everything the producer opened is closed."""

    kind = "live"

    def __init__(self, name: str, sink: FrameSink, backoff: Backoff | None = None) -> None:
        self.name = name
        self.sink = sink
        self.backoff = backoff or Backoff()
        self.description = self.kind
        self.frames_delivered = 0
        self.frames_skipped = 0
        self.starts = 0  # times the source went on air
        self.on_air = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                raise RuntimeError(f"live {self.name}: producer already started")
            self._thread = threading.Thread(target=self._main, name=f"live-{self.name}",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2 * _STOP_TIMEOUT + 5.0) -> None:
        self._stopping.set()
        self._interrupt()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("live %s: producer thread did not stop within %g s",
                            self.name, timeout)

    def stats(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "description": self.description,
            "on_air": self.on_air,
            "starts": self.starts,
            "frames_delivered": self.frames_delivered,
            "frames_skipped": self.frames_skipped,
        }

    # -- for subclasses --

    def _run(self) -> None:
        raise NotImplementedError

    def _interrupt(self) -> None:
        """Wake the thread from whatever it waits for (called by stop())."""

    def _push(self, jpeg: bytes, capture_time: float) -> None:
        self.sink.push_jpeg(jpeg, capture_time)
        self.frames_delivered += 1

    def _started(self, description: str) -> None:
        self.description = description
        self.on_air = True
        self.starts += 1
        self.sink.source_started(description)  # the channel logs it

    def _ended(self, reason: str) -> None:
        if self.on_air:
            self.on_air = False
            self.sink.source_ended(reason)  # the channel logs it

    def _wait_retry(self, ran_for: float, why: str) -> bool:
        """Back off before the next attempt; False when stop() came meanwhile."""
        delay = self.backoff.next_delay(ran_for)
        if self._stopping.is_set():
            return False
        log.warning("live %s: %s; retrying in %g s", self.name, why, delay)
        return not self._stopping.wait(delay)

    def _main(self) -> None:
        try:
            self._run()
        except Exception:  # a bug, not a source failure: say so once, go off air
            log.exception("live %s: producer failed", self.name)
        finally:
            self._ended("stopped" if self._stopping.is_set() else "producer failed")


class _SplittingProducer(LiveProducer):
    """A raw MJPEG byte stream cut into frames stamped with their arrival time."""

    def __init__(self, name: str, sink: FrameSink, backoff: Backoff | None = None) -> None:
        super().__init__(name, sink, backoff)
        self.splitter = MjpegStreamSplitter()

    def _feed(self, data: bytes) -> None:
        arrival = time.time()
        for jpeg in self.splitter.feed(data):
            self._push(jpeg, arrival)

    def _end_of_stream(self) -> None:
        self.splitter.end()

    def stats(self) -> dict[str, object]:
        split = self.splitter.stats()
        self.frames_skipped = (split["frames_oversized"] + split["frames_truncated"]
                               + split["frames_corrupt"])
        out = super().stats()
        out.update((k, v) for k, v in split.items() if k != "frames")
        return out


class StdinProducer(_SplittingProducer):
    """Raw MJPEG from a binary stream (the server's standard input). The stream's
    descriptor is read directly (it stays open: it belongs to the caller); end of input ends
    the source for good."""

    kind = "stdin"

    def __init__(self, name: str, sink: FrameSink, stream: BinaryIO) -> None:
        super().__init__(name, sink)
        self.stream = stream
        self.description = "standard input"

    def _run(self) -> None:
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            fd = -1
        self._started(self.description)
        with selectors.DefaultSelector() as selector:
            read = self._reader(fd, selector)
            while not self._stopping.is_set():
                data = read()
                if data is None:
                    continue  # nothing within the poll interval
                if not data:
                    self._end_of_stream()
                    self._ended("end of input")
                    return
                self._feed(data)
        self._end_of_stream()

    def _reader(self, fd: int, selector: selectors.BaseSelector):
        if fd < 0:  # an in-memory stream: reads never block
            return lambda: self.stream.read(_READ_SIZE)
        try:
            selector.register(fd, selectors.EVENT_READ)
        except (OSError, ValueError):  # a regular file cannot be polled, nor needs to be
            return lambda: os.read(fd, _READ_SIZE)

        def read() -> bytes | None:
            if not selector.select(0.2):  # the poll interval is how fast stop() is noticed
                return None
            return os.read(fd, _READ_SIZE)

        return read


class ExecProducer(_SplittingProducer):
    """Raw MJPEG from a command's standard output (no shell); its standard error goes to
    the log line by line. The command runs in its own process group (so a shell's children
    go with it) and is restarted with back-off whenever it exits."""

    kind = "exec"

    def __init__(self, name: str, sink: FrameSink, command: tuple[str, ...] | list[str],
                 backoff: Backoff | None = None) -> None:
        super().__init__(name, sink, backoff)
        self.command = tuple(command)
        self.description = f"command {os.path.basename(self.command[0])}"
        self.exit_statuses: list[int] = []
        self._proc: subprocess.Popen | None = None

    def _interrupt(self) -> None:
        with self._lock:
            if self._proc is not None:
                _signal_group(self._proc, signal.SIGTERM)

    def _run(self) -> None:
        program = os.path.basename(self.command[0])
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                proc = subprocess.Popen(
                    self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, bufsize=0, start_new_session=True)
            except OSError as exc:
                why = f"cannot run {self.command[0]!r}: {exc.strerror or exc}"
            else:
                with self._lock:
                    self._proc = proc
                if self._stopping.is_set():  # stop() came before _proc was visible to it
                    _signal_group(proc, signal.SIGTERM)
                try:
                    self._started(f"command {program} (pid {proc.pid})")
                    self._pump(proc)
                finally:
                    status = self._finish(proc)
                    self._end_of_stream()
                    self._ended("stopped" if self._stopping.is_set() else _exit_reason(status))
                why = f"command {program} {_exit_reason(status).removeprefix('command ')}"
            if not self._wait_retry(time.monotonic() - began, why):
                return

    def _pump(self, proc: subprocess.Popen) -> None:
        """Frames from stdout, lines from stderr, until stdout ends, the command exits (a
        child it left may hold the pipe) or stop()."""
        assert proc.stdout is not None and proc.stderr is not None
        out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
        pending = bytearray()  # a stderr line not ended yet
        with selectors.DefaultSelector() as selector:
            selector.register(out_fd, selectors.EVENT_READ)
            selector.register(err_fd, selectors.EVENT_READ)
            while not self._stopping.is_set():
                ready = selector.select(0.5)
                if not ready and _exited(proc):
                    return
                for key, _ in ready:
                    data = os.read(key.fd, _READ_SIZE)
                    if key.fd == out_fd:
                        if not data:
                            return
                        self._feed(data)
                    elif data:
                        pending += data
                        self._log_lines(pending)
                    else:
                        selector.unregister(err_fd)
                        self._log_lines(pending, final=True)
            self._log_lines(pending, final=True)

    def _log_lines(self, pending: bytearray, final: bool = False) -> None:
        # ffmpeg ends its progress lines with CR: both end a line.
        lines = pending.replace(b"\r", b"\n").split(b"\n")
        rest = b"" if final else lines.pop()
        del pending[:]
        for line in lines:
            text = line.decode(errors="replace").strip()
            if text:
                log.info("live %s: %s: %s", self.name, os.path.basename(self.command[0]), text)
        if len(rest) > _MAX_LOG_LINE:  # no line end in sight: log what there is, cut short
            rest = rest[:_MAX_LOG_LINE].decode(errors="replace")
            log.info("live %s: %s: %s...", self.name, os.path.basename(self.command[0]), rest)
        else:
            pending += rest

    def _finish(self, proc: subprocess.Popen) -> int:
        """Make sure the command and its group are gone; close the pipes; the exit status.

        The command is reaped last: until then its pid (the group's id) cannot be reused,
        so signalling the group never reaches an unrelated process."""
        if not _exited(proc):
            _signal_group(proc, signal.SIGTERM)
            # Closing our ends first: a child blocked writing to a full pipe gets EPIPE.
            proc.stdout.close()  # type: ignore[union-attr]
            proc.stderr.close()  # type: ignore[union-attr]
            deadline = time.monotonic() + _STOP_TIMEOUT
            while not _exited(proc) and time.monotonic() < deadline:
                time.sleep(0.02)
            if not _exited(proc):
                log.warning("live %s: command %d did not stop on SIGTERM; killing it",
                            self.name, proc.pid)
        _signal_group(proc, signal.SIGKILL)  # what is left of it, and what it left behind
        with self._lock:
            self._proc = None
        with proc:  # reaps it and closes the pipes
            pass
        self.exit_statuses.append(proc.returncode)
        return proc.returncode


def _exited(proc: subprocess.Popen) -> bool:
    """The command has exited; unlike Popen.poll() it is not reaped (WNOWAIT)."""
    if proc.returncode is not None:
        return True
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _exit_reason(status: int) -> str:
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = str(-status)
        return f"command killed by signal {name}"
    return f"command exited with status {status}"


class _PacedProducer(LiveProducer):
    """Frame ``k`` is made at ``t0 + k / fps``: no drift; frames already late are skipped."""

    def __init__(self, name: str, sink: FrameSink, fps: float,
                 backoff: Backoff | None = None) -> None:
        super().__init__(name, sink, backoff)
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.fps = fps

    def _open(self) -> str:
        """Open the source (raise _UnavailableError); its description."""
        return self.description

    def _frame(self, k: int) -> tuple[bytes, float]:
        """Frame ``k``'s JPEG and capture time (raise _UnavailableError)."""
        raise NotImplementedError

    def _close(self) -> None:
        pass

    def _run(self) -> None:
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                self._started(self._open())
                why = self._pace()
            except _UnavailableError as exc:
                why = str(exc)
            finally:
                self._close()
            if why is None:
                return
            self._ended(why)
            if not self._wait_retry(time.monotonic() - began, why):
                return

    def _pace(self) -> str | None:
        """Deliver frames until stop() (None) or a failure (_UnavailableError propagates)."""
        t0 = time.monotonic()
        k = 0
        while True:
            if self._stopping.wait(max(0.0, t0 + k / self.fps - time.monotonic())):
                return None
            due = int((time.monotonic() - t0) * self.fps)
            if due > k:  # frames whose time has passed: skipped, not sent late
                self.frames_skipped += due - k
                k = due
            jpeg, capture_time = self._frame(k)
            self._push(jpeg, capture_time)
            k += 1


class FileLoopProducer(_PacedProducer):
    """A media file's frames (media.MjpegFile) in a loop at ``fps``, stamped when sent."""

    kind = "file"

    def __init__(self, name: str, sink: FrameSink, path: str, fps: float,
                 backoff: Backoff | None = None) -> None:
        super().__init__(name, sink, fps, backoff)
        self.path = path
        self.description = f"file {os.path.basename(path)}"
        self.loops = 0
        self._file = None

    def _open(self) -> str:
        from .media import MediaError, MjpegFile

        try:
            # MjpegFile cannot be made for a file that os.open refuses (its __del__ then
            # trips over the missing descriptor): look first, the common failure is that one.
            os.stat(self.path)
            self._file = MjpegFile(self.path)
        except OSError as exc:
            raise _UnavailableError(f"cannot open {self.path}: {exc.strerror or exc}") from None
        except MediaError as exc:
            raise _UnavailableError(f"cannot play {self.path}: {exc}") from None
        return (f"file {self._file.name} ({self._file.total_frames()} frames looped at "
                f"{self.fps:g} fps)")

    def _frame(self, k: int) -> tuple[bytes, float]:
        from .media import MediaError

        count = self._file.total_frames()
        self.loops = k // count
        try:
            jpeg = self._file.frame(k % count)
        except (MediaError, OSError) as exc:
            raise _UnavailableError(str(exc)) from None
        return jpeg, time.time()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class TestPatternProducer(_PacedProducer):
    """A generated picture: colour bars, a big frame counter, the wall-clock time with
    milliseconds (the capture time, for latency checks by eye) and a bar sweeping across."""

    kind = "testpattern"
    __test__ = False  # not a pytest class, whatever its name

    def __init__(self, name: str, sink: FrameSink, width: int, height: int, fps: float) -> None:
        super().__init__(name, sink, fps)
        self.width, self.height = width, height
        self.description = f"test pattern {width}x{height} at {fps:g} fps"
        self._background = None
        self._fonts: tuple = ()

    def _open(self) -> str:
        from PIL import Image, ImageDraw

        w, h = self.width, self.height
        bg = Image.new("RGB", (w, h), (16, 16, 16))
        draw = ImageDraw.Draw(bg)
        colours = [(192, 192, 192), (192, 192, 0), (0, 192, 192), (0, 192, 0),
                   (192, 0, 192), (192, 0, 0), (0, 0, 192)]
        for i, colour in enumerate(colours):
            draw.rectangle([i * w // 7, 0, (i + 1) * w // 7, h // 6], fill=colour)
        self._background = bg
        self._fonts = (_font(max(8, h // 4)), _font(max(8, h // 10)))
        return self.description

    def _frame(self, k: int) -> tuple[bytes, float]:
        from PIL import ImageDraw

        now = time.time()
        w, h = self.width, self.height
        img = self._background.copy()
        draw = ImageDraw.Draw(img)
        period = max(1, round(2 * self.fps))  # the bar crosses the picture in 2 s
        x = (k % period) * w // period
        draw.rectangle([x, h - h // 8, x + max(2, w // 20), h - 1], fill=(255, 255, 255))
        big, small = self._fonts
        draw.text((w // 2, h * 5 // 12), str(k), fill=(255, 255, 255), font=big, anchor="mm")
        clock = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
        draw.text((w // 2, h * 3 // 4), clock, fill=(255, 255, 0), font=small, anchor="mm")
        return encode_rfc2435_jpeg(img), now


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 (FreeType): scalable
    except TypeError:
        return ImageFont.load_default()


class ScreenProducer(_PacedProducer):
    """An X11 display grabbed with Pillow (ImageGrab), scaled to ``width`` x ``height``
    when given (0: the display's size). A display that cannot be opened is retried."""

    kind = "screen"

    def __init__(self, name: str, sink: FrameSink, display: str, fps: float,
                 width: int = 0, height: int = 0, backoff: Backoff | None = None) -> None:
        super().__init__(name, sink, fps, backoff)
        self.display, self.width, self.height = display, width, height
        self.description = f"screen {display}"

    def _grab(self):
        from PIL import ImageGrab

        try:
            img = ImageGrab.grab(xdisplay=self.display)
        except OSError as exc:
            raise _UnavailableError(f"cannot grab X display {self.display}: {exc}") from None
        if self.width and img.size != (self.width, self.height):
            img = img.resize((self.width, self.height))
        return img

    def _open(self) -> str:
        img = self._grab()  # fails here, before going on air, if the display cannot be opened
        size = "x".join(map(str, img.size))
        return f"screen {self.display} ({size} at {self.fps:g} fps)"

    def _frame(self, k: int) -> tuple[bytes, float]:
        now = time.time()
        return encode_rfc2435_jpeg(self._grab()), now


def make_producer(spec: LiveSpec, sink: FrameSink, *, stdin: BinaryIO | None = None,
                  fps: float = 20.0, name: str = "") -> LiveProducer:
    """The producer for ``spec`` feeding ``sink`` (not started). ``stdin``: the stream for
    ``-`` (default: the process's standard input); ``fps``: the rate a file loops at;
    ``name``: the live name, for log lines."""
    name = name or spec.text
    if spec.kind is SourceKind.STDIN:
        return StdinProducer(name, sink, stdin if stdin is not None else sys.stdin.buffer)
    if spec.kind is SourceKind.EXEC:
        return ExecProducer(name, sink, spec.command)
    if spec.kind is SourceKind.FILE:
        return FileLoopProducer(name, sink, spec.path, fps)
    if spec.kind is SourceKind.TESTPATTERN:
        return TestPatternProducer(name, sink, spec.width, spec.height, spec.fps)
    if spec.kind is SourceKind.SCREEN:
        return ScreenProducer(name, sink, spec.display, spec.fps, spec.width, spec.height)
    raise ValueError(f"unknown source kind {spec.kind!r}")
