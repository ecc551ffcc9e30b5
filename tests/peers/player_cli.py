"""Run the player as a user does (``python ClientLauncher.py ... --headless``) and read what it
left behind: the JSON summary, the exit status, stderr and the saved frames."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent.parent
LAUNCHER = ROOT / "ClientLauncher.py"
sys.path.insert(0, str(ROOT / "tools"))

from make_sample import read_frame_number  # noqa: E402


@dataclass
class PlayerRun:
    returncode: int
    stdout: str
    stderr: str
    summary: dict | None

    def __str__(self) -> str:
        return f"exit {self.returncode}\nstdout: {self.stdout}\nstderr: {self.stderr}"


def player_command(*args: str) -> list[str]:
    return [sys.executable, str(LAUNCHER), *args]


def run_player(*args: str, timeout: float = 30) -> PlayerRun:
    """Run the headless player to completion (``--headless`` is added)."""
    result = subprocess.run(player_command(*args, "--headless"), capture_output=True,
                            text=True, timeout=timeout, cwd=ROOT)
    return finished(result.returncode, result.stdout, result.stderr)


def finished(returncode: int, stdout: str, stderr: str) -> PlayerRun:
    summary = None
    if returncode == 0:
        lines = stdout.strip().splitlines()
        assert len(lines) == 1, f"expected one JSON line on stdout, got {stdout!r}"
        summary = json.loads(lines[0])
    return PlayerRun(returncode, stdout, stderr, summary)


def saved_frames(directory: Path) -> list[tuple[bytes, Image.Image]]:
    """Every saved frame in display order, fully decoded (``load`` raises on truncation)."""
    frames = []
    for path in sorted(directory.glob("frame-*.jpg")):
        data = path.read_bytes()
        image = Image.open(io.BytesIO(data))
        image.load()
        frames.append((data, image))
    return frames


def frame_numbers(directory: Path, size: tuple[int, int] | None = (384, 288)) -> list[int]:
    """The test-pattern counter of every saved frame; each must be a whole JPEG."""
    numbers = []
    for data, image in saved_frames(directory):
        assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9", "not a whole JPEG"
        if size is not None:
            assert image.size == size
        numbers.append(read_frame_number(image))
    return numbers


def free_udp_port() -> int:
    """A UDP port free right now (even, so that port + 1 is a plausible RTCP port)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port % 2 == 0:
            return port
    return port
