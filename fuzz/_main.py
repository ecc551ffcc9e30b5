"""Shared entry point of the atheris targets ``fuzz/fuzz_<target>.py``.

Each target instruments the ``mjpeg_rtsp`` package for coverage, then hands libFuzzer's
inputs to the matching check in ``fuzz/harness.py``. An exception other than the parser's
documented error type, or a :class:`harness.ContractError`, is a crash: libFuzzer writes the input
to ``crash-<sha1>`` in the working directory and exits non-zero.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import atheris  # noqa: E402


def run(target: str) -> None:
    with atheris.instrument_imports(include=["mjpeg_rtsp"]):
        from fuzz import harness
    check = harness.CHECKS[target]
    if target == "client":
        harness.check_client(b"")  # build the seed conversation before fuzzing starts
    atheris.Setup(sys.argv, lambda data: check(bytes(data)))
    atheris.Fuzz()
