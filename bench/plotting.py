"""matplotlib for the benchmark plots: a bench-only dependency (``requirements-bench.txt``).

The tests never import this module. ``pyplot()`` selects the Agg backend (files only, no
display) before pyplot is imported, and fails with the install command if matplotlib is missing;
the benchmarks call it at start-up so a missing install fails before the measurements, not after.
"""

from __future__ import annotations

import sys

INSTALL = ".venv/bin/pip install -r requirements-bench.txt"


def pyplot():
    try:
        import matplotlib
    except ImportError:
        sys.exit(f"error: the benchmark plots need matplotlib: {INSTALL}")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def rgb(colour: tuple[int, int, int]) -> tuple[float, float, float]:
    """An 8-bit (r, g, b) as matplotlib's 0..1 floats."""
    return tuple(c / 255 for c in colour)
