"""Start and stop helper processes for the window tests and the benchmarks: Xvfb, servers."""

from __future__ import annotations

import os
import select
import subprocess
import time


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it does not go within ``timeout``; then close its pipes, so
    that no descriptor is left for the garbage collector (a ResourceWarning, and a shifting
    count for the tests' leak checks)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    with proc:  # Popen's exit closes stdin, stdout and stderr (the process is already reaped)
        pass


def start_xvfb(screen: str = "1024x768x24", timeout: float = 15.0) -> tuple[subprocess.Popen, str]:
    """A private Xvfb and its DISPLAY. ``-displayfd`` makes it pick a free display number and
    say so once it accepts clients. RuntimeError when it does not start."""
    read_end, write_end = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_end), "-screen", "0", screen, "-nolisten", "tcp"],
        pass_fds=(write_end,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    number = b""
    try:
        deadline = time.monotonic() + timeout
        while not number.endswith(b"\n") and time.monotonic() < deadline:
            if select.select([read_end], [], [], 0.1)[0]:
                chunk = os.read(read_end, 16)
                if not chunk:
                    break
                number += chunk
    finally:
        os.close(read_end)
    if not number.strip().isdigit():
        stop_process(xvfb)
        raise RuntimeError(f"Xvfb did not start (exit code {xvfb.poll()})")
    return xvfb, f":{number.strip().decode()}"
