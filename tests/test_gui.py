"""The Tk player driven as a user would: a real X server (Xvfb), real clicks and keys (xdotool),
real screenshots (ImageMagick ``import``), against the in-process server.

Each test launches ``ClientLauncher.py`` as a subprocess on a private Xvfb display, finds the
window, locates the buttons in a screenshot, and reads the frame number back from the picture
on screen with the test pattern's own bit strip (:func:`make_sample.read_frame_number`), checked
against :func:`make_sample.render_frame` of that number. Nothing inside the player is patched
or inspected; the server's session registry and log tell what happened on the wire.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import stop_process, wait_for
from make_sample import BASE_SIZE, counter_box, read_frame_number, render_frame
from PIL import Image, ImageChops, ImageStat

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("Xvfb", "xdotool", "import")
pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in TOOLS),
    reason="needs Xvfb, xdotool and ImageMagick's import",
)

BUTTONS = ("Setup", "Play", "Pause", "Teardown")
FPS = 20.0
#: Mean absolute difference (0..255, per channel) allowed between the counter box on screen
#: and the reference rendering of the number read from it; a neighbouring frame differs by far
#: more (the box's background colour changes with every frame).
MATCH_TOLERANCE = 20.0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- screenshots ----------------------------------------------------------------------------


class Shot:
    """One screenshot of the player window, with the layout found in its pixels."""

    def __init__(self, image: Image.Image, path: Path) -> None:
        self.image = image
        self.path = path
        width, height = image.size
        # The controls' background: the commonest colour of the window's bottom rows.
        bottom = image.crop((0, height - 60, width, height))
        self.control_bg = max(bottom.getcolors(width * 60))[1]
        # 0 where a pixel has the controls' background colour, 255 elsewhere.
        plain = Image.new("RGB", image.size, self.control_bg)
        red, green, blue = ImageChops.difference(image, plain).split()
        mask = ImageChops.lighter(ImageChops.lighter(red, green), blue)
        self.mask = mask.point(lambda v: 255 if v else 0).tobytes()
        self.video_box = (0, 0, width, self._video_bottom())

    def _row(self, y: int) -> bytes:
        width = self.image.width
        return self.mask[y * width:(y + 1) * width]

    def _video_bottom(self) -> int:
        """The video Label fills the window down to the seek row, the first row made mostly
        of the controls' background colour."""
        for y in range(self.image.height):
            if self._row(y).count(0) >= 0.6 * self.image.width:
                return y
        raise AssertionError(f"no controls found in {self.path}")

    def video(self) -> Image.Image:
        return self.image.crop(self.video_box)

    def buttons(self) -> dict[str, tuple[int, int, int, int]]:
        """The four buttons, left to right: the rows below the video where exactly four
        equally long runs of border pixels cross the controls' background."""
        width = self.image.width
        rows = []
        for y in range(self.video_box[3], self.image.height):
            runs, start = [], None
            for x, pixel in enumerate(self._row(y) + b"\0"):
                if pixel and start is None:
                    start = x
                elif not pixel and start is not None:
                    if x - start >= 40:
                        runs.append((start, x))
                    start = None
            lengths = [end - begin for begin, end in runs]
            if len(runs) == 4 and max(lengths) - min(lengths) <= 2 and max(lengths) < width / 4:
                rows.append((y, runs))
        assert len(rows) >= 2, f"buttons not found in {self.path}"
        top, runs = rows[0]
        bottom = max(y for y, r in rows if r == runs)
        return {name: (begin, top, end, bottom + 1)
                for name, (begin, end) in zip(BUTTONS, runs, strict=True)}

    def enabled(self, name: str) -> bool:
        """An enabled button's label is black, a disabled one's grey."""
        left, top, right, bottom = self.buttons()[name]
        face = self.image.crop((left + 3, top + 3, right - 3, bottom - 3)).convert("L")
        return face.getextrema()[0] < 90

    def picture(self) -> Image.Image | None:
        """The frame inside the video area: the bounding box of its non-black pixels, when
        that box has the movie's 4:3 shape (else: no picture, e.g. the "Press Setup" text)."""
        video = self.video()
        box = video.convert("L").point(lambda v: 255 if v > 12 else 0).getbbox()
        if box is None:
            return None
        width, height = box[2] - box[0], box[3] - box[1]
        if height < 50 or abs(width * BASE_SIZE[1] - height * BASE_SIZE[0]) > 2 * BASE_SIZE[0]:
            return None
        return video.crop(box)


def counter_difference(picture: Image.Image, number: int) -> float:
    """Mean difference between the counter box on screen and that of ``render_frame(number)``
    scaled the way the player scales frames (fit, bilinear)."""
    reference = render_frame(number).resize(picture.size, Image.BILINEAR)
    box = counter_box(picture.size)
    diff = ImageChops.difference(picture.crop(box), reference.crop(box))
    return sum(ImageStat.Stat(diff).mean) / 3


def frame_number(picture: Image.Image) -> int | None:
    """The number of the frame on screen, if the picture is that frame of the test pattern."""
    number = read_frame_number(picture.resize(BASE_SIZE, Image.BILINEAR))
    if number >= 400:
        return None
    difference = counter_difference(picture, number)
    neighbours = [counter_difference(picture, n) for n in (number - 1, number + 1) if n >= 0]
    if difference > MATCH_TOLERANCE or any(d <= difference for d in neighbours):
        return None
    return number


# --- the player -----------------------------------------------------------------------------


class PlayerProcess:
    """``ClientLauncher.py`` in its own process, driven through X like a user would."""

    def __init__(self, args: list[str], display: str, folder: Path) -> None:
        self.display = display
        self.folder = folder
        self.env = dict(os.environ, DISPLAY=display, PYTHONUNBUFFERED="1")
        self.log_path = folder / f"player-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "ClientLauncher.py"), *args],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.shots = 0
        self.window = ""
        self.geometry = (0, 0, 0, 0)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def xdotool(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(["xdotool", *args], env=self.env, capture_output=True,
                                text=True, timeout=10)
        if check and result.returncode != 0:
            raise AssertionError(f"xdotool {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def find_windows(self, pattern: str) -> list[str]:
        return self.xdotool("search", "--name", pattern, check=False).split()

    def wait_window(self, timeout: float = 15.0) -> str:
        def found():
            assert self.proc.poll() is None, f"player exited early:\n{self.output()}"
            return self.find_windows("^RTSP player - ")

        windows = wait_for(found, timeout, 0.1)
        assert windows, f"no player window within {timeout} s:\n{self.output()}"
        self.window = windows[0]

        def drawn():
            # Mapped is not yet drawn: wait for the geometry and the buttons on screen.
            shell = dict(line.split("=", 1) for line in
                         self.xdotool("getwindowgeometry", "--shell", self.window).split())
            self.geometry = (int(shell["X"]), int(shell["Y"]), int(shell["WIDTH"]),
                             int(shell["HEIGHT"]))
            try:
                return self.geometry[2] > 100 and self.screenshot("window").buttons()
            except AssertionError:
                return None

        assert wait_for(drawn, 5, 0.1), f"player window not drawn:\n{self.output()}"
        return self.window

    def title(self) -> str:
        return self.xdotool("getwindowname", self.window).strip()

    def key(self, *keys: str) -> None:
        self.xdotool("key", "--window", self.window, *keys)

    def click(self, name: str) -> None:
        """A real pointer click in the middle of the named button, as found on screen."""
        left, top, right, bottom = self.screenshot().buttons()[name]
        self.xdotool("mousemove", "--window", self.window, str((left + right) // 2),
                     str((top + bottom) // 2), "click", "1")

    def screen(self, name: str | None = None) -> tuple[Image.Image, Path]:
        self.shots += 1
        path = self.folder / f"{name or 'shot'}-{self.shots:02d}.png"
        subprocess.run(["import", "-window", "root", str(path)], env=self.env, check=True,
                       capture_output=True, timeout=15)
        with Image.open(path) as image:
            return image.convert("RGB"), path

    def screenshot(self, name: str | None = None) -> Shot:
        """The whole screen, cropped to the player window (which sits where X put it)."""
        image, path = self.screen(name)
        x, y, width, height = self.geometry
        return Shot(image.crop((x, y, x + width, y + height)), path)

    def wait_enabled(self, name: str, timeout: float = 5.0) -> Shot:
        shot = wait_for(lambda: (s := self.screenshot()).enabled(name) and s, timeout)
        assert shot, f"{name} not enabled within {timeout} s:\n{self.output()}"
        return shot

    def current_frame(self, name: str | None = None) -> tuple[int | None, Shot]:
        """One screenshot and the number of the frame it shows (None: no frame on screen)."""
        shot = self.screenshot(name)
        picture = shot.picture()
        return (frame_number(picture) if picture is not None else None), shot

    def read_frame(self, name: str | None = None, attempts: int = 3) -> tuple[int, Shot]:
        """The number of the frame on screen. A capture can fall between two partial redraws
        of the picture, so a picture that does not match any frame is taken again."""
        for _ in range(attempts):
            number, shot = self.current_frame(name)
            if number is not None:
                return number, shot
        raise AssertionError(f"no frame of the test pattern on screen: {shot.path}")

    def wait_frame(self, accept: Callable[[int], bool], timeout: float) -> int | None:
        """Poll the screen until it shows a frame whose number ``accept`` takes."""
        def seen():
            number, _ = self.current_frame()
            return number is not None and accept(number) and (number,)

        found = wait_for(seen, timeout, 0.02)
        return found[0] if found else None

    def wait_exit(self, timeout: float = 10.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"player still running after {timeout} s:\n{self.output()}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)
        self.log.close()


@pytest.fixture
def launch(xvfb_display: str, tmp_path: Path) -> Iterator[Callable[..., PlayerProcess]]:
    players: list[PlayerProcess] = []

    def start(*args: str) -> PlayerProcess:
        player = PlayerProcess(list(args), xvfb_display, tmp_path)
        players.append(player)
        player.wait_window()
        return player

    yield start
    for player in players:
        player.stop()


def textbook_args(port: int, name: str = "movie.Mjpeg") -> list[str]:
    return ["127.0.0.1", str(port), str(free_udp_port()), name]


def wait_no_sessions(server, timeout: float = 5.0) -> None:
    assert wait_for(lambda: len(server.registry) == 0, timeout), "session still on the server"


def torn_down(caplog: pytest.LogCaptureFixture) -> bool:
    """The server's log says a session ended by TEARDOWN (not by the connection closing)."""
    return any("ended (TEARDOWN)" in record.getMessage() for record in caplog.records)


def setup_and_play(player: PlayerProcess, play_by_click: bool = False) -> float:
    """Click Setup, wait until Play is enabled, start playing; returns when Play was pressed."""
    player.click("Setup")
    player.wait_enabled("Play")
    if play_by_click:
        player.click("Play")
    else:
        player.key("space")
    return time.monotonic()


# --- the tests ------------------------------------------------------------------------------


def test_setup_play_shows_the_frames_the_server_sends(server_factory, launch):
    server = server_factory()
    player = launch(*textbook_args(server.port))
    shot = player.screenshot("initial")
    assert shot.enabled("Setup") and not shot.enabled("Play")
    assert shot.picture() is None

    started = setup_and_play(player)
    time.sleep(max(0.0, started + 1.5 - time.monotonic()))
    number, shot = player.read_frame("playing")
    elapsed = time.monotonic() - started
    assert 10 <= number <= 60, f"frame {number} after {elapsed:.2f} s at {FPS} fps"
    assert len(server.registry) == 1
    picture = shot.picture()
    assert counter_difference(picture, number) < MATCH_TOLERANCE
    assert shot.enabled("Pause") and shot.enabled("Teardown") and not shot.enabled("Setup")
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shot.image.save(ROOT / "docs" / "player.png")


def test_pause_freezes_the_picture_and_play_resumes(server_factory, launch):
    server = server_factory()
    player = launch(*textbook_args(server.port))
    setup_and_play(player)
    playing = player.wait_frame(lambda n: n >= 5, 5)
    assert playing is not None, f"no frame on screen:\n{player.output()}"

    player.click("Pause")
    time.sleep(0.3)
    first, shot_a = player.read_frame("paused")
    time.sleep(1.0)
    second, shot_b = player.read_frame("paused")
    assert first == second >= playing
    assert shot_a.video().tobytes() == shot_b.video().tobytes(), "picture changed while paused"
    assert shot_b.enabled("Play") and not shot_b.enabled("Pause")

    player.key("space")
    resumed = player.wait_frame(lambda n: n > first, 3)
    assert resumed is not None, f"frame number stuck at {first} after Play"


def test_teardown_keeps_the_window_and_q_exits(server_factory, launch, caplog):
    caplog.set_level(logging.INFO, logger="mjpeg_rtsp.streaming")  # Streamer.end logs it
    server = server_factory()
    player = launch(*textbook_args(server.port))
    setup_and_play(player)
    player.wait_enabled("Pause")
    assert len(server.registry) == 1

    player.key("t")
    wait_no_sessions(server)
    assert torn_down(caplog)
    shot = player.wait_enabled("Setup")
    assert not shot.enabled("Play") and not shot.enabled("Teardown")
    assert player.proc.poll() is None and player.find_windows("^RTSP player - ")

    player.key("q")
    assert player.wait_exit() == 0, player.output()
    assert len(server.registry) == 0


def test_standard_dialect_seeks_forward_five_seconds(server_factory, launch):
    server = server_factory()
    url = f"rtsp://127.0.0.1:{server.port}/movie.Mjpeg"
    player = launch(url)
    assert player.title() == f"RTSP player - {url}"
    setup_and_play(player, play_by_click=True)
    number = player.wait_frame(lambda n: n >= 10, 5)
    assert number is not None, f"no frame on screen:\n{player.output()}"
    number, _ = player.read_frame("standard")

    pressed = time.monotonic()
    player.key("Right")
    # A seek lands 5 s (100 frames) ahead of the frame shown when Right was pressed; normal
    # playback alone would need 5 s to get there.
    after = player.wait_frame(lambda n: n >= number + 90, 2.0)
    waited = time.monotonic() - pressed
    assert after is not None, f"no jump from frame {number} within 2 s"
    assert after <= number + 100 + FPS * waited + 10, f"jumped from {number} to {after}"
    player.read_frame("seeked")
    assert player.proc.poll() is None, player.output()
    assert player.title() == f"RTSP player - {url}"


def test_closing_while_playing_tears_down(server_factory, launch, caplog):
    caplog.set_level(logging.INFO, logger="mjpeg_rtsp.streaming")  # Streamer.end logs it
    server = server_factory()
    player = launch(f"rtsp://127.0.0.1:{server.port}/movie.Mjpeg")
    setup_and_play(player)
    player.wait_enabled("Pause")
    assert len(server.registry) == 1

    player.key("q")
    assert player.wait_exit() == 0, player.output()
    wait_no_sessions(server)
    assert torn_down(caplog), "the session ended without a TEARDOWN"


def wait_error_dialog(player: PlayerProcess, timeout: float = 5.0) -> None:
    """An error dialog (Tk messagebox titled "RTSP player") is drawn on screen."""
    dialogs = wait_for(lambda: player.find_windows("^RTSP player$"), timeout)
    assert dialogs, f"no error dialog:\n{player.output()}"
    dialog = dialogs[0]
    shell = dict(line.split("=", 1) for line in
                 player.xdotool("getwindowgeometry", "--shell", dialog).split())
    x, y, width, height = (int(shell[k]) for k in ("X", "Y", "WIDTH", "HEIGHT"))
    assert width > 50 and height > 30

    def visible():
        screen, _ = player.screen("dialog")
        box = screen.crop((x, y, x + width, y + height)).convert("L")
        low, high = box.getextrema()
        # A dialog: mostly light background with dark text, not the black root window.
        return ImageStat.Stat(box).mean[0] > 120 and low < 90 and high > 150

    assert wait_for(visible, 3), "the dialog is not drawn on screen"
    assert player.proc.poll() is None


def test_missing_file_shows_an_error_dialog(server_factory, launch):
    server = server_factory()
    player = launch(*textbook_args(server.port, "movie-missing.Mjpeg"))
    player.click("Setup")
    wait_error_dialog(player)
    assert "SETUP failed: 404 Not Found" in player.output()
    assert len(server.registry) == 0


def test_server_killed_mid_stream_is_reported(media_root, launch):
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "Server.py"), "0", "--host", "127.0.0.1",
         "--root", str(media_root)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        port = int(server.stdout.readline().split()[5].rstrip(","))
        player = launch(*textbook_args(port))
        setup_and_play(player)
        assert player.wait_frame(lambda n: n > 0, 5) is not None
        server.kill()
        wait_error_dialog(player)
        assert "the server closed the connection" in player.output()
    finally:
        server.kill()
        stop_process(server)


def test_a_silent_server_times_out_without_hanging_the_window(launch):
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    try:
        port = listener.getsockname()[1]
        player = launch(f"rtsp://127.0.0.1:{port}/movie.Mjpeg", "--timeout", "2")
        player.click("Setup")
        started = time.monotonic()
        wait_error_dialog(player, timeout=8)
        assert time.monotonic() - started >= 1.5  # it waited for the reply, then gave up
        assert "did not answer OPTIONS within 2 s" in player.output()
    finally:
        listener.close()
        for sock, _ in accepted:
            sock.close()


def test_status_bar_shows_the_latency(server_factory, xvfb_display):
    """In process (the status bar's text is read from its widget, not from pixels): a real Tk
    window on the Xvfb display and a real player against the server; the status bar gives
    the latency measured when frames reach the screen."""
    import re
    import tkinter as tk

    from Client import PlayerWindow
    from mjpeg_rtsp.client import parse_rtsp_url
    from mjpeg_rtsp.player import Player, PlayerOptions

    server = server_factory()
    root = tk.Tk(screenName=xvfb_display)
    player = Player(parse_rtsp_url(f"rtsp://127.0.0.1:{server.port}/movie.Mjpeg"),
                    PlayerOptions(ui_shows_frames=True))
    try:
        player.start()
        window = PlayerWindow(root, player, "latency")
        player.setup()
        player.play()

        def latency_shown():
            root.update()
            return re.search(r"latency (\d+) ms", window.status.cget("text"))

        found = wait_for(latency_shown, 10, 0.02)
        assert found, window.status.cget("text")
        assert 0 < int(found[1]) < 1000, window.status.cget("text")
    finally:
        player.close()
        root.destroy()
