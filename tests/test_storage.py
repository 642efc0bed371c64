"""Storage in a bucket, against a real S3-compatible server (moto's, started and stopped here):
the location helpers, then a sweep whose teacher cache, checkpoints, outputs and resume live only in S3."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import boto3
import pandas as pd
import pytest
import torch
import yaml
from mlflow import MlflowClient

from orchestrator.execution import check_outputs_persist
from orchestrator.tracking import PARENT_TAG, TRIAL_TAG
from tests.conftest import tiny_spec_dict
from trainables import storage
from trainables.config import ConfigError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_env():
    """A moto S3 server on 127.0.0.1, and the environment that points pyarrow (and boto3) at it."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    try:
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("moto's S3 server did not start")
                time.sleep(0.3)
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            yield env
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def new_bucket(name: str) -> str:
    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"


def test_location_helpers_on_s3_and_on_disk(s3_env, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # local_copy's downloads
    for root in (new_bucket("helpers") + "/prefix", str(tmp_path / "disk")):
        src = tmp_path / "src"
        (src / "inner").mkdir(parents=True, exist_ok=True)
        (src / "a.txt").write_text("a")
        (src / "inner" / "b.txt").write_text("b")
        folder = storage.join(root, "entry")
        assert storage.basename(folder) == "entry" and not storage.exists(folder)
        storage.upload(src, folder)
        storage.upload(src / "a.txt", storage.join(root, "other", "a.txt"))
        assert storage.exists(storage.join(folder, "inner", "b.txt"))
        assert storage.subfolders(root) == ["entry", "other"]
        assert storage.subfolders(storage.join(root, "missing")) == []
        copy = storage.local_copy(folder)
        assert (copy / "inner" / "b.txt").read_text() == "b" and (copy / "a.txt").read_text() == "a"
        storage.download(storage.join(folder, "a.txt"), tmp_path / "got" / "a.txt")
        assert (tmp_path / "got" / "a.txt").read_text() == "a"
        storage.check_writable(storage.join(root, "new", "deeper"))


def test_a_missing_bucket_is_not_writable(s3_env):
    with pytest.raises(OSError):
        storage.check_writable("s3://no-such-bucket/prefix")


def test_a_ray_job_refuses_outputs_in_its_temporary_folder(monkeypatch):
    check_outputs_persist("runs", "sqlite:///mlflow.db")  # outside a job: fine
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    for storage_setting, uri, named in [
        ("runs", None, "DUALKD_STORAGE"),
        ("/shared/runs", "sqlite:///mlflow.db", "MLFLOW_TRACKING_URI"),
    ]:
        with pytest.raises(ConfigError) as err:
            check_outputs_persist(storage_setting, uri)
        assert named in str(err.value) and "\n" not in str(err.value)
    check_outputs_persist("s3://bucket/runs", "http://mlflow:5000")
    check_outputs_persist("/shared/runs", "sqlite:////shared/mlflow.db")


def finished_children(client, experiment):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'") if exp else []
    return [r for r in runs if r.data.tags.get(PARENT_TAG)]


def list_keys(bucket: str) -> list[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [
        o["Key"] for page in pages for o in page.get("Contents", []) if not o["Key"].endswith("/")
    ]  # no folder markers


@pytest.mark.slow
def test_sweep_in_a_bucket_is_interrupted_and_resumed_on_another_machine(s3_env, tmp_path):
    """Everything the sweep keeps lives in S3: the resumed driver starts from an empty disk (another
    working folder and another scratch cache) and still finds the teacher, the study and the trials."""
    root = new_bucket("sweeps") + "/dualkd"
    name = "s3-sweep"
    raw = tiny_spec_dict(
        tmp_path,
        name=name,
        students={"epochs": 2},
        search={"loss.alpha": {"type": "float", "low": 0.2, "high": 0.8}},
        tune={"num_trials": 2, "max_concurrent_trials": 1, "scheduler": "fifo"},
        mlflow={"experiment": name, "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    )
    raw["storage"] = root
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    client = MlflowClient(tracking_uri=raw["mlflow"]["tracking_uri"])

    def machine(label):
        folder = tmp_path / label
        (folder / "cache").mkdir(parents=True)
        return folder, {**os.environ, **s3_env, "XDG_CACHE_HOME": str(folder / "cache"), "RAY_DEDUP_LOGS": "0"}

    first_dir, first_env = machine("first")
    first = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.sweep", str(spec_path)],
        cwd=first_dir,
        env=first_env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 400
    while time.time() < deadline and first.poll() is None and not finished_children(client, name):
        time.sleep(2)
    assert first.poll() is None, "the sweep ended before it could be interrupted"
    first.send_signal(signal.SIGINT)
    try:
        out, _ = first.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(first.pid, signal.SIGKILL)
        out, _ = first.communicate()
    assert first.returncode != 0 and "teacher: cache miss" in out

    second_dir, second_env = machine("second")
    resumed = subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", str(spec_path), "--resume"],
        cwd=second_dir,
        env=second_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "teacher: cache hit" in resumed.stdout

    keys = list_keys("sweeps")
    sweep_keys = [k for k in keys if k.startswith(f"dualkd/sweeps/{name}-")]
    sweep_name = sweep_keys[0].split("/")[2]
    outputs = {k.split("/", 3)[3] for k in sweep_keys}
    assert {"results.csv", "results.md", "best.yaml", "spec.yaml", "optuna.db"} <= outputs
    assert any(k.startswith("train/") and k.endswith("state.pt") for k in outputs)  # trial checkpoints
    teacher_keys = [k for k in keys if k.startswith("dualkd/teachers/") and "/runs/" not in k]
    assert {k.rsplit("/", 1)[1] for k in teacher_keys} == {"teacher.pt", "meta.json", "soft_labels.pt"}
    for folder in (first_dir, second_dir):  # nothing of the sweep written to either working folder
        assert not (folder / "runs").exists() and not (folder / "mlruns").exists()

    got = tmp_path / "got"
    storage.download(f"{root}/sweeps/{sweep_name}/results.csv", got / "results.csv")
    table = pd.read_csv(got / "results.csv")
    assert len(table) == 2 and table["trial_id"].is_unique and set(table["state"]) == {"completed"}
    children = finished_children(client, name)
    assert sorted(c.data.tags[TRIAL_TAG] for c in children) == sorted(table["trial_id"])
    predictions = client.download_artifacts(children[0].info.run_id, "val_predictions.pt", str(got))
    assert "labels" in torch.load(predictions, weights_only=True)
    storage.download(f"{root}/sweeps/{sweep_name}/optuna.db", got / "optuna.db")
    import optuna

    study = optuna.load_study(study_name=sweep_name, storage=f"sqlite:///{got / 'optuna.db'}")
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == 2
