"""Packaging: a wheel built from the project installs into a fresh venv and gives the two
commands, which serve the bundled sample and play it; the classic modules still import.

The wheel is built from a copy of the project's files, so the checkout gets no build/ or
*.egg-info; Pillow comes from the package index (pip's cache makes that quick)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLE, run_peer

CLASSIC_MODULES = ["Server", "ServerWorker", "Client", "ClientLauncher", "RtpPacket",
                   "VideoStream"]
BANNER = re.compile(r"RTSP server listening on port (\d+), media folder (.+)")
PIP_TIMEOUT = 180.0  # seconds; a build or an install from a warm cache takes about 5 s


def copy_project(target: Path) -> Path:
    """What a source distribution holds: the build files, the modules and the sample."""
    target.mkdir()
    for name in ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", SAMPLE.name]:
        shutil.copy(ROOT / name, target / name)
    for module in ROOT.glob("*.py"):
        shutil.copy(module, target / module.name)
    shutil.copytree(ROOT / "mjpeg_rtsp", target / "mjpeg_rtsp",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def pip(python: str | Path, *args: str) -> None:
    result = run_peer([str(python), "-m", "pip", "--disable-pip-version-check", *args],
                      timeout=PIP_TIMEOUT, text=True)
    assert result.returncode == 0, f"pip {args[0]} failed:\n{result.stdout}\n{result.stderr}"


def local_setuptools_builds() -> bool:
    """Whether this interpreter's setuptools can build the project without fetching one."""
    try:
        version = tuple(int(n) for n in importlib.metadata.version("setuptools").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False
    # Before 70.1, setuptools builds wheels with the separate `wheel` package.
    return version >= (70, 1) or (version >= (61, 0) and bool(importlib.util.find_spec("wheel")))


@pytest.fixture(scope="module")
def venv_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scripts folder of a fresh venv with the project's wheel installed."""
    work = tmp_path_factory.mktemp("packaging")
    source = copy_project(work / "source")
    wheels = work / "wheels"
    isolation = ["--no-build-isolation"] if local_setuptools_builds() else []
    pip(sys.executable, "wheel", "--no-deps", *isolation, "-w", str(wheels), str(source))
    (wheel,) = wheels.glob("mjpeg_rtsp-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True,
                   capture_output=True, timeout=PIP_TIMEOUT)
    scripts = work / "venv" / ("Scripts" if os.name == "nt" else "bin")
    pip(scripts / "python", "install", str(wheel))
    return scripts


@pytest.fixture
def no_media(tmp_path: Path) -> Path:
    """A working directory without media files (and without the checkout's modules)."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


def clean_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def read_banner(server: subprocess.Popen, timeout: float = 20.0) -> re.Match:
    ready, _, _ = select.select([server.stdout], [], [], timeout)
    assert ready, "the server printed nothing"
    line = server.stdout.readline()
    match = BANNER.match(line)
    assert match, line
    return match


def stop(server: subprocess.Popen) -> str:
    """Ctrl+C, as a user stops it; its standard output after the banner."""
    server.send_signal(signal.SIGINT)
    out, _ = server.communicate(timeout=10)
    assert server.returncode == 0
    return out


def test_installed_commands_serve_the_bundled_sample_and_play_it(venv_bin, no_media):
    with subprocess.Popen([str(venv_bin / "mjpeg-rtsp-server"), "0", "--host", "127.0.0.1"],
                          cwd=no_media, env=clean_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as server:
        try:
            banner = read_banner(server)
            port, folder = banner.group(1), Path(banner.group(2))
            # Not the checkout's copy: the one inside the installed package.
            assert folder.parts[-2:] == ("mjpeg_rtsp", "sample")
            assert venv_bin.parent in folder.parents
            assert (folder / SAMPLE.name).read_bytes() == SAMPLE.read_bytes()
            url = f"rtsp://127.0.0.1:{port}/{SAMPLE.name}"
            assert server.stdout.readline().strip() == url
            played = run_peer([str(venv_bin / "mjpeg-rtsp-player"), url, "--headless",
                               "--duration", "2"], text=True)
            assert played.returncode == 0, played.stderr
            summary = json.loads(played.stdout)
            assert (summary["width"], summary["height"]) == (384, 288)  # the sample's size
            assert summary["frames"] >= 10 and summary["url"] == url
            assert "server stopped" in stop(server)
        finally:
            if server.poll() is None:
                server.kill()


def test_classic_modules_import_from_the_install(venv_bin, no_media):
    modules = CLASSIC_MODULES if importlib.util.find_spec("tkinter") else [
        m for m in CLASSIC_MODULES if m != "Client"]  # Client needs Tk, like the window
    script = ("import sys, " + ", ".join(modules) + "\n"
              "print('\\n'.join(sys.modules[m].__file__ for m in sys.argv[1:]))")
    result = subprocess.run([str(venv_bin / "python"), "-c", script, *modules], cwd=no_media,
                            env=clean_env(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    files = [Path(line) for line in result.stdout.split()]
    assert len(files) == len(modules)
    assert all(venv_bin.parent in f.parents for f in files), files


def test_player_command_reports_its_name(venv_bin):
    result = subprocess.run([str(venv_bin / "mjpeg-rtsp-player")], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: mjpeg-rtsp-player")


def test_checkout_server_outside_a_media_folder_serves_the_checkout_sample(no_media):
    """From a checkout, Server.py serves its current directory when that has media (the
    textbook way, unchanged); elsewhere, the sample next to it rather than nothing."""
    with subprocess.Popen([sys.executable, str(ROOT / "Server.py"), "0", "--host", "127.0.0.1"],
                          cwd=no_media, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True) as server:
        try:
            assert Path(read_banner(server).group(2)) == ROOT
            stop(server)
        finally:
            if server.poll() is None:
                server.kill()
    (no_media / "clip.mjpeg").write_bytes(SAMPLE.read_bytes())
    with subprocess.Popen([sys.executable, str(ROOT / "Server.py"), "0", "--host", "127.0.0.1"],
                          cwd=no_media, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True) as server:
        try:
            assert Path(read_banner(server).group(2)) == no_media.resolve()
            assert "rtsp://127.0.0.1:" in server.stdout.readline()
            stop(server)
        finally:
            if server.poll() is None:
                server.kill()
