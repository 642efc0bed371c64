"""Figures as files: the one place the plotting backend is chosen, and how a figure is written.

Plots are PNG files (a sweep often runs without a display), so pyplot runs on matplotlib's file backend, Agg.
It is chosen on the first `pyplot()` call, not when a module is imported: importing a package changes nothing.
"""

from __future__ import annotations

from pathlib import Path

_backend_chosen = [False]


def pyplot():
    """`matplotlib.pyplot`, on the Agg backend (chosen on the first call)."""
    import matplotlib

    if not _backend_chosen[0]:
        matplotlib.use("Agg")
        _backend_chosen[0] = True
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Write `fig` as a PNG and close it: a sweep draws many figures, and pyplot keeps each open until closed."""
    fig.savefig(path, dpi=120, bbox_inches="tight")
    pyplot().close(fig)
    return path
