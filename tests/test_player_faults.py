"""The player facing a server that stops answering: a clear message, no hang."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

from conftest import ROOT


def silent_server() -> tuple[socket.socket, list[socket.socket]]:
    """Accepts connections and reads requests, but never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            accepted.append(sock)

    threading.Thread(target=serve, daemon=True).start()
    return listener, accepted


def test_headless_times_out_on_a_silent_server():
    listener, accepted = silent_server()
    port = listener.getsockname()[1]
    try:
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, str(ROOT / "ClientLauncher.py"), f"rtsp://127.0.0.1:{port}/x",
             "--headless", "--timeout", "2"],
            capture_output=True, text=True, timeout=30,
        )
        assert result.returncode == 1
        assert "error: the server did not answer OPTIONS within 2 s" in result.stderr
        assert "Traceback" not in result.stderr
        assert time.monotonic() - started < 10
    finally:
        listener.close()
        for sock in accepted:
            sock.close()


def test_textbook_positional_form_times_out_too():
    listener, accepted = silent_server()
    port = listener.getsockname()[1]
    try:
        result = subprocess.run(
            [sys.executable, str(ROOT / "ClientLauncher.py"), "127.0.0.1", str(port), "0",
             "movie.Mjpeg", "--headless", "--timeout", "1"],
            capture_output=True, text=True, timeout=30,
        )
        assert result.returncode == 2  # RTP port 0 is not a usable port: usage error
        result = subprocess.run(
            [sys.executable, str(ROOT / "ClientLauncher.py"), "127.0.0.1", str(port), "25010",
             "movie.Mjpeg", "--headless", "--timeout", "1"],
            capture_output=True, text=True, timeout=30,
        )
        assert result.returncode == 1
        assert "error: the server did not answer SETUP within 1 s" in result.stderr
    finally:
        listener.close()
        for sock in accepted:
            sock.close()
