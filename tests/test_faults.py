"""Faults injected for real into running sweeps (each sweep a subprocess with its own local Ray):
random train worker kills mid-epoch through a whole sweep (the chaos test, in the manner of Ray's release
tests), and a driver too busy to take a trial's last report. A lost node's trial continuing from its last
checkpoint, and a lost cluster: tests/test_cluster.py. The MLflow server's
outages: tests/test_tracking_outage.py.

Every trial must end exactly once: in Tune's results, in MLflow (each epoch once) and in the Optuna study.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.servers import Process, base_env, tree
from tests.sweep_checks import (
    EPOCHS,
    check_every_trial_once,
    logged_epoch,
    start_sweep,
    trials_wall,
    wait_for,
    write_spec,
)

pytestmark = pytest.mark.slow

RESUMED = "resumed from the checkpoint of epoch"
WORKER_SETUP_S = 8  # a train worker's start-up here (imports, data, models) before its first step
IMAGES = 480  # epochs long enough for a kill to land inside one


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    return tmp_path_factory.mktemp("faults-storage")  # shared: the teacher of IMAGES is trained once


def age(pid: int) -> float:
    """Seconds since the process started (0 when it is gone)."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return 0.0
    return uptime - ticks / os.sysconf("SC_CLK_TCK")


def train_workers(root: int, older_than: float = 0.0) -> list[int]:
    """The Ray Train worker processes (title ray::RayTrainWorker) of the sweep whose driver is `root`."""
    pids = []
    for pid in tree(root):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(b"ray::RayTrainWorker") and age(pid) >= older_than:
            pids.append(pid)
    return sorted(pids)


def final_by_alpha(runs: list) -> dict[str, float]:
    return {r.data.params["loss.alpha"]: r.data.metrics["val_top1_mean"] for r in runs}


def test_chaos_random_worker_kills_during_a_sweep(tmp_path, storage):
    """Three trials; once the first epoch is in, a random train worker SIGKILLed every few seconds (a bounded
    number), against the same sweep without faults. Ray Train restarts the worker group (`resources.max_failures`)
    from the last checkpoint. Targets are workers past their start-up (WORKER_SETUP_S), so kills land in training."""
    kills_allowed, trials = 4, 3
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)

    def spec(name: str) -> Path:
        return write_spec(tmp_path, storage, name, uri, trials, IMAGES, max_failures=kills_allowed)

    calm = start_sweep(spec("calm"), tmp_path)
    wait_for(calm)
    calm_runs = check_every_trial_once(client, "calm", storage, trials)
    calm_wall = trials_wall(calm_runs)

    rng = random.Random(0)
    sweep = start_sweep(spec("chaos"), tmp_path)
    killed = []
    try:
        next_kill = None
        while sweep.proc.poll() is None and len(killed) < kills_allowed:
            time.sleep(0.5)
            if next_kill is None:
                if logged_epoch(client, "chaos") >= 1:  # the trials train: the teacher is no target
                    next_kill = time.time() + rng.uniform(1, 4)
                continue
            workers = train_workers(sweep.pid, older_than=WORKER_SETUP_S)
            if time.time() >= next_kill and workers:
                victim = rng.choice(workers)
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)
                next_kill = time.time() + rng.uniform(4, 9)
    except BaseException:
        sweep.stop(grace=5)
        raise
    wait_for(sweep)

    assert len(killed) >= 3, f"only {len(killed)} kills landed before the sweep ended"
    runs = check_every_trial_once(client, "chaos", storage, trials)
    chaos_wall = trials_wall(runs)
    # Optuna's seed gives both sweeps the same trials; a resumed trial (model, optimizer, data order and RNG
    # from its checkpoint) ends exactly where the uninterrupted one did.
    assert final_by_alpha(runs) == final_by_alpha(calm_runs)
    log = sweep.log.read_text(errors="replace")
    resumed = sum(RESUMED in line for line in log.splitlines())
    assert resumed >= 1, "no restart continued from a checkpoint"  # the from-the-last-one case: tests/test_cluster.py
    print(
        f"\nchaos: {len(killed)} train workers SIGKILLed in a sweep of {trials} trials x {EPOCHS} epochs; "
        f"{resumed} restarts continued from a checkpoint, {len(killed) - resumed} from epoch 1; each kill re-runs "
        f"the epoch it interrupted. Trials' wall {chaos_wall:.0f} s against {calm_wall:.0f} s without faults "
        f"({chaos_wall / calm_wall:.2f}x, +{chaos_wall - calm_wall:.0f} s)"
    )


def test_trial_ends_while_the_driver_is_busy(tmp_path):
    """A trial whose trainer ends while the driver is busy (here a callback that blocks, as a driver whose
    MLflow server is down does) hangs in Ray 2.60 unless it hands over its last report."""
    script = Path(__file__).with_name("slow_driver_sweep.py")
    env = base_env(PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    run = Process([sys.executable, str(script), "hand-over"], tmp_path / "busy-driver.log", env, cwd=tmp_path)
    try:
        run.proc.wait(timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the trial hung\n{run.tail()}")
    finally:
        run.stop(grace=5)
    assert run.proc.returncode == 0, run.tail()
