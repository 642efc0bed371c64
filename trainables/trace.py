"""Timestamps of a trial's phases for `benchmarks/overhead.py`, written only where `DUALKD_TRACE` names a file.

Each process of a trial (the driver's Tune callback, the trial actor, rank 0 of the workers) appends one JSON
line per event to that file: `{"run": trial id, "event": name, "t": unix seconds}`. Unset (the default),
`mark` does nothing. Processes that Ray starts on this machine inherit the variable from the driver.
"""

from __future__ import annotations

import json
import os
import time

TRACE_ENV = "DUALKD_TRACE"


def mark(run: str, event: str) -> None:
    """Appends the event to the trace file, if there is one (one short write: lines of processes do not mix)."""
    path = os.environ.get(TRACE_ENV)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"run": run, "event": event, "t": time.time()}) + "\n")
