"""Media errors know nothing of RTSP; the service alone maps their kinds to statuses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mjpeg_rtsp.media import (
    MediaChangedError,
    MediaError,
    MediaIndexingError,
    MediaNotFoundError,
    UnsupportedMediaError,
)
from mjpeg_rtsp.service import media_status


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (MediaNotFoundError("x.Mjpeg: not found"), 404),
        (MediaChangedError("x.Mjpeg changed on disk"), 404),
        (UnsupportedMediaError("x.Mjpeg: no frames"), 415),
        (MediaIndexingError("x.Mjpeg: cannot be indexed"), 500),
        (MediaError("a kind the service does not know"), 500),
        (type("Newer", (UnsupportedMediaError,), {})("a subclass of a known kind"), 415),
    ],
)
def test_each_kind_of_media_error_has_its_status(error: MediaError, status: int) -> None:
    assert media_status(error) == status


def test_a_copied_error_keeps_its_kind_and_message() -> None:
    error = MediaChangedError("x.Mjpeg changed on disk")
    copy = error.copy()
    assert type(copy) is MediaChangedError and str(copy) == str(error) and copy is not error


def test_media_does_not_load_the_rtsp_module() -> None:
    code = "import sys, mjpeg_rtsp.media; print(sorted(m for m in sys.modules if 'rtsp.' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert "mjpeg_rtsp.rtsp" not in out.stdout and "mjpeg_rtsp.media" in out.stdout
