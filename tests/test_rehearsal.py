"""The paper's specs rehearsed end to end on the CPU: `search_spaces/imagenet100/peer.yaml`, then
`compare.yaml --from-sweep` its best trial, as shipped, changed only in data root, image size, epochs, batch size,
trials, seeds, methods and resources (2 CPU workers per trial, gloo), on a generated 100-class JPEG tree named
by ImageNet-100's own class list. The sweep runs one trial and the comparison 2 of its 6 methods (kd, the
baseline of the paired columns, and ua_dual) to keep the test near 6 minutes here. The teacher is trained once (by 2
workers), a bank is built once per seed and used (no teacher forward in any training step), every trial
and epoch lands in MLflow once, and the comparison ends with its table and paired columns."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from PIL import Image

from orchestrator.data_tools import read_classes
from orchestrator.tracking import PARENT_TAG, TRIAL_TAG
from tests.servers import base_env

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "search_spaces" / "imagenet100"
CLASSES = read_classes()
TRAIN_PER_CLASS, VAL_PER_CLASS = 2, 1


def write_tree(root: Path) -> Path:
    """100 class folders (ImageNet-100's WordNet ids) of small JPEGs of varied sizes, a shade per class."""
    rng = np.random.default_rng(0)
    for c, wnid in enumerate(CLASSES):
        for split, count in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                h, w = rng.integers(40, 72, size=2)
                pixels = rng.integers(0, 60, size=(h, w, 3)) + np.array([c * 2, 255 - c * 2, (c * 37) % 200])
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{wnid}_{i}.JPEG", quality=90)
    return root


def run(
    spec: str, tree: Path, storage: Path, uri: str, tmp_path: Path, *extra: str, args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    overrides = [
        f"data.root={tree}",
        "data.image_size=32",
        "data.loader_workers=0",
        "students.epochs=1",
        "teacher.epochs=1",
        "students.batch_size=16",
        "teacher.batch_size=16",
        "resources.use_gpu=false",
        "resources.gpus_per_worker=0",
        "resources.num_workers=2",
        "resources.cpus_per_worker=1",
        f"storage={storage}",
        *extra,
    ]
    cmd = [sys.executable, "-m", "orchestrator.sweep", str(SPECS / spec), "--tracking-uri", uri, *args]
    for item in overrides:
        cmd += ["--set", item]
    started = time.time()
    proc = subprocess.run(cmd, cwd=tmp_path, env=base_env(), capture_output=True, text=True, timeout=1500)
    print(f"{spec}: exit {proc.returncode} in {time.time() - started:.0f} s")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def trial_runs(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get(PARENT_TAG)]


def check_trials(client: MlflowClient, experiment: str, trials: int) -> list:
    """Each trial once, FINISHED, its one epoch once, and no teacher forward in its training steps."""
    runs = trial_runs(client, experiment)
    assert len(runs) == trials and len({r.data.tags[TRIAL_TAG] for r in runs}) == trials
    for r in runs:
        assert r.info.status == "FINISHED", r.data.tags
        assert [m.step for m in client.get_metric_history(r.info.run_id, "epoch")] == [1]
        forwards = client.get_metric_history(r.info.run_id, "teacher_forwards")
        assert [m.value for m in forwards] in ([0.0], []), r.data.tags  # [] for ce: no teacher at all
    return runs


def test_the_papers_sweep_and_comparison_rehearsed_on_cpu(tmp_path):
    tree = write_tree(tmp_path / "imagenet100")
    storage, uri = tmp_path / "runs", f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    started = time.time()

    sweep = run("peer.yaml", tree, storage, uri, tmp_path, "tune.num_trials=1")
    assert sweep.stdout.count("teacher: cache miss, training resnet50") == 1
    assert sweep.stdout.count("building a soft-label bank") == 1  # seed 0
    check_trials(client, "imagenet100-peer", trials=1)

    compare = run(
        "compare.yaml",
        tree,
        storage,
        uri,
        tmp_path,
        "compare.seeds=[0,1]",
        "compare.methods=[kd,ua_dual]",  # the spec's references ce and dual_kd are not compared: empty columns
        args=("--from-sweep", "imagenet100-peer"),
    )
    assert "recipe: the best trial of sweep imagenet100-peer-" in compare.stdout  # the README's flow, at scale
    assert "(no setting of this spec overrides the recipe)" in compare.stdout
    assert "teacher: cache hit" in compare.stdout  # the sweep's teacher, same settings
    assert compare.stdout.count("building a soft-label bank") == 1  # seed 1; seed 0's is the sweep's
    assert compare.stdout.count("bank cache hit") == 1
    runs = check_trials(client, "imagenet100-compare", trials=4)
    assert all(r.data.metrics["teacher_forwards"] == 0 for r in runs)
    assert len(list((storage / "teachers").glob("*/banks/*/bank.json"))) == 2

    folder = next((storage / "sweeps").glob("imagenet100-compare-*"))
    searched = next((storage / "sweeps").glob("imagenet100-peer-*"))
    best, compared = (
        yaml.safe_load((f / name).read_text()) for f, name in ((searched, "best.yaml"), (folder, "spec.yaml"))
    )
    for section in ("data", "teacher", "students", "loss"):  # what every trial got, its method aside
        assert {k: v for k, v in compared[section].items() if k != "method"} == {
            k: v for k, v in best[section].items() if k != "method"
        }, section
    table = pd.read_csv(folder / "comparison.csv")
    assert set(table["method"]) == {"kd", "ua_dual"}
    assert {"vs_kd_mean_%", "vs_kd_ci_low_%"} <= set(table.columns)
    ua = table[(table["method"] == "ua_dual")]
    assert (ua["seeds"] == 2).all() and (ua["vs_kd_pairs"] == 2).all()
    assert (table["vs_ce_pairs"] == 0).all() and table["vs_dual_kd_mean_%"].isna().all()
    for _, row in ua.iterrows():  # an interval exactly when the two seeds' differences are not equal
        top1 = {
            (r.data.params["loss.method"], r.data.params["seed"]): r.data.metrics[f"{row.student}/val_top1"]
            for r in runs
        }
        spread = abs((top1["ua_dual", "0"] - top1["kd", "0"]) - (top1["ua_dual", "1"] - top1["kd", "1"])) > 1e-9
        assert pd.notna(row["vs_kd_ci_low_%"]) == spread, row
    print(f"rehearsal: both specs in {time.time() - started:.0f} s")
