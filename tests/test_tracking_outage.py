"""A real `mlflow server` that goes away while a sweep runs: the driver journals every write and sends it when
the server is back, so no outage costs the sweep a trial, an epoch or its exit status.

(1) Away mid-sweep for far longer than any client retry, then back: the sweep exits 0, everything once.
(2) Away at the end: the sweep exits 0 with the line that names `orchestrator.sync`, which sends the rest
    once the server is back; a second sync sends nothing new.
(3) The driver SIGKILLed while the server is away: `--resume` with the server back ends every trial once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from mlflow import MlflowClient

from orchestrator.tracking.journal import JournalFiles
from tests.conftest import share_teachers
from tests.servers import MlflowServer, Process, base_env
from tests.sweep_checks import (
    EPOCHS,
    check_every_trial_once,
    start_sweep,
    trial_runs,
    trials_wall,
    wait_for,
    wait_for_epoch,
    write_spec,
)

pytestmark = pytest.mark.slow
# The sender's calls give up after about 35 s each (1 retry, 30 s timeout): 50 s is past that; MLflow's
# default retries (about 4 minutes) do not apply. DUALKD_TEST_OUTAGE_S=360 gives the 6-minute outage.
OUTAGE_S = float(os.environ.get("DUALKD_TEST_OUTAGE_S", 50))


@pytest.fixture(scope="module")
def storage(tmp_path_factory, teacher_cache):
    return share_teachers(tmp_path_factory.mktemp("outage-storage"), teacher_cache)  # the tiny teacher is trained once


@pytest.fixture
def server(tmp_path):
    (tmp_path / "mlflow").mkdir()
    server = MlflowServer(tmp_path / "mlflow")
    yield server
    server.stop()


def with_send_timeout(spec, seconds: float):
    raw = yaml.safe_load(spec.read_text())
    raw["mlflow"]["send_timeout_s"] = seconds
    spec.write_text(yaml.safe_dump(raw))
    return spec


def test_a_long_outage_mid_sweep_costs_nothing(tmp_path, storage, server):
    client = MlflowClient(tracking_uri=server.uri)
    spec = with_send_timeout(write_spec(tmp_path, storage, "outage", server.uri, trials=2), 900)
    started = time.time()
    sweep = start_sweep(spec, tmp_path)
    try:
        assert wait_for_epoch(sweep, client, "outage") < EPOCHS, "the trials ended before the outage"
        # from the moment the stop begins: stopping the server can take seconds (CI: epochs 2 and 3 ended, and
        # the sender said MLflow did not answer, before stop() returned), and a result's timestamp has whole
        # seconds only
        down = int(time.time())
        server.stop()
        time.sleep(OUTAGE_S)
        assert sweep.proc.poll() is None, f"the sweep ended while the server was away\n{sweep.tail()}"
        server.start()
        up = time.time()
    except BaseException:
        sweep.stop(grace=5)
        raise
    wait_for(sweep)
    wall = time.time() - started
    runs = check_every_trial_once(client, "outage", storage, trials=2)
    during = [
        m
        for r in runs
        for m in client.get_metric_history(r.info.run_id, "epoch")
        if down * 1000 <= m.timestamp <= up * 1000
    ]
    assert during, "no epoch ended while the server was away: training waited for it"
    print(
        f"\nMLflow server away {up - down:.0f} s mid-sweep; {len(during)} epochs ended meanwhile and reached it "
        f"later; trials' wall {trials_wall(runs):.0f} s; the sweep took {wall:.0f} s (it waits at its end for the "
        "server to take every write, mlflow.send_timeout_s) and exited 0"
    )


def test_writes_left_at_the_end_are_sent_by_sync_once(tmp_path, storage, server):
    client = MlflowClient(tracking_uri=server.uri)
    spec = with_send_timeout(write_spec(tmp_path, storage, "late", server.uri, trials=1), 5)
    sweep = start_sweep(spec, tmp_path)
    try:
        assert wait_for_epoch(sweep, client, "late") < EPOCHS
        server.stop()
    except BaseException:
        sweep.stop(grace=5)
        raise
    wait_for(sweep)
    last = sweep.tail(2000).strip().splitlines()[-1]
    folder = next((storage / "sweeps").glob("late-*"))
    assert last.startswith("MLflow has not taken ") and last.endswith(f"python -m orchestrator.sync {folder}"), last

    server.start()
    sync = [sys.executable, "-m", "orchestrator.sync", str(folder)]
    sent = subprocess.run(sync, cwd=tmp_path, env=base_env(), capture_output=True, text=True, timeout=300)
    assert sent.returncode == 0 and sent.stdout.startswith("sent "), sent.stdout + sent.stderr
    runs = check_every_trial_once(client, "late", storage, trials=1)
    again = subprocess.run(sync, cwd=tmp_path, env=base_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.startswith("nothing to send"), again.stdout + again.stderr
    assert len(trial_runs(client, "late")) == len(runs) == 1


def test_a_driver_killed_while_the_server_is_away_resumes_with_every_epoch_once(tmp_path, storage, server):
    client = MlflowClient(tracking_uri=server.uri)
    # the sweep waits at its end for the server (send_timeout_s), so it is still there to be killed even when
    # the trials end before the stop returns (CI: they did, and the kill hit a process that had exited)
    spec = with_send_timeout(write_spec(tmp_path, storage, "killed", server.uri, trials=2), 900)
    sweep = start_sweep(spec, tmp_path)
    try:
        assert wait_for_epoch(sweep, client, "killed") < EPOCHS
        journal = JournalFiles(next((storage / "sweeps").glob("killed-*")) / "mlflow-journal")
        server.stop()
        deadline = time.time() + 120
        while time.time() < deadline and journal.unsent() < 3:
            time.sleep(1)  # a few writes journaled and not sent while the server is away
        assert journal.unsent() >= 3, sweep.tail()
        assert sweep.proc.poll() is None, f"the sweep ended while the server was away\n{sweep.tail()}"
        os.kill(sweep.pid, signal.SIGKILL)
    finally:
        sweep.stop(grace=5)
    server.start()
    resumed = Process(
        [sys.executable, "-m", "orchestrator.sweep", str(spec), "--resume"],
        tmp_path / "resumed.log",
        base_env(),
        cwd=tmp_path,
    )
    wait_for(resumed)
    check_every_trial_once(client, "killed", storage, trials=2)
