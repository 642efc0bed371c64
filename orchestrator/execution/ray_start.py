"""Starting a local Ray, or joining a cluster, for one command; and letting go of only the Ray it started.

The commands that need Ray (a sweep, one run, the teacher check) call `start_ray` once their inputs are read;
Ray itself is imported then, not when this module is.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Optional


def stop_own_ray() -> None:
    """Disconnects from the Ray that `start_ray` connected to; a Ray the caller had connected to (a notebook's,
    a test session's) stays theirs."""
    ray = sys.modules.get("ray")
    if _own_ray[0] and ray is not None and ray.is_initialized():
        ray.shutdown()
    _own_ray[0] = False


def pin_state_api() -> Optional[int]:
    """A free port for the local Ray's dashboard, named in RAY_API_SERVER_ADDRESS for every process it starts.

    Ray Train's placement-group cleaner asks the state API with no address; with another Ray instance on
    the machine (a second sweep, a test's Ray) it finds both, fails, and a trial that ASHA stopped keeps
    its workers' resources for good: the next trial waits forever. Processes inherit this variable.
    """
    if os.environ.get("RAY_API_SERVER_ADDRESS") not in (None, _pinned[0]):
        return None  # the user's own
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _pinned[0] = os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    return port


_pinned: list[Optional[str]] = [None]  # what pin_state_api set: a later local Ray in this process pins anew
_own_ray = [False]  # whether start_ray connected this process to its Ray (stop_own_ray disconnects only that)


def start_ray(address: Optional[str] = None, driver_slots: int = 0) -> Optional[str]:
    """Join `address` (or RAY_ADDRESS), else start a local Ray with `driver_slots` TRAIN_DRIVER resources.

    Returns the dashboard URL when there is one.
    """
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return None
    if address and address != "local":
        context = ray.init(address=address)
    else:  # "local": a Ray of its own, even where `ray start` left a cluster that plain ray.init() would join
        port = pin_state_api()
        context = ray.init(
            address="local",
            resources={"TRAIN_DRIVER": driver_slots} if driver_slots else None,
            include_dashboard=True,
            dashboard_port=port,
        )
    _own_ray[0] = True
    url = getattr(context, "dashboard_url", None)
    return f"http://{url}" if url and not url.startswith("http") else url
