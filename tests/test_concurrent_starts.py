"""Two sweeps started at the same moment: a fresh MLflow sqlite store is created once, and each sweep
gets its own folder. Real processes, started together."""

import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from orchestrator.execution import latest_sweep_folder, new_sweep_folder, sweep_order

ROOT = Path(__file__).resolve().parents[1]

# Each process waits for the same instant, then opens the store and makes the sweep's parent run (sent to
# the store by its journal's sender before it ends).
START_TOGETHER = """
import sys, time
from pathlib import Path
from orchestrator.tracking import SweepTracker
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
folder = Path(sys.argv[4])
tracker = SweepTracker(sys.argv[1], "race", sys.argv[3], {"name": "digits"}, folder)
assert tracker.close(120, folder) == 0
print("ok", tracker.experiment_id)
"""


def test_two_processes_create_a_fresh_sqlite_store_at_the_same_moment(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    start = time.time() + 12  # both have imported MLflow by then
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", START_TOGETHER, uri, str(start), f"sweep-{i}", str(tmp_path / f"sweep-{i}")],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=180) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-2000:]
    ids = {out.split()[-1] for out, _ in outputs}
    assert len(ids) == 1  # one experiment, created once

    from mlflow import MlflowClient

    runs = MlflowClient(tracking_uri=uri).search_runs(list(ids))
    assert sorted(r.info.run_name for r in runs) == ["sweep-0", "sweep-1"]


def claim(args):
    root, stamp = args
    return new_sweep_folder(root, "peer", stamp=stamp).name


def test_sweeps_started_in_the_same_second_get_distinct_folders(tmp_path):
    root = str(tmp_path / "sweeps")
    with ProcessPoolExecutor(max_workers=4) as pool:
        names = list(pool.map(claim, [(root, "20261127-101500")] * 4))
    assert sorted(names) == ["peer-20261127-101500", *(f"peer-20261127-101500-{n}" for n in (2, 3, 4))]
    assert all((tmp_path / "sweeps" / name).is_dir() for name in names)
    assert latest_sweep_folder(root, "peer").name == "peer-20261127-101500-4"  # what --resume continues
    new_sweep_folder(root, "peer", stamp="20261127-101500", claim=False)  # a dry run creates nothing
    assert len(list((tmp_path / "sweeps").iterdir())) == 4
    assert sweep_order("peer-20261127-101500-10", "peer") > sweep_order("peer-20261127-101500-9", "peer")
    assert sweep_order("peer-x-20261127-101500", "peer") is None  # another spec's sweep
