"""A tracking server that lets in only who it should: MLflow's basic-auth app, as docker/ runs it. Requests
without credentials are refused; a sweep with them lands its runs; a wrong password ends the sweep before Ray
starts, with one line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml
from mlflow import MlflowClient

from orchestrator.tracking import PARENT_TAG, TRIAL_TAG
from tests.conftest import tiny_spec_dict
from tests.servers import MlflowServer, base_env

pytestmark = pytest.mark.slow


def sweep(spec, cwd, user: str, password: str) -> subprocess.CompletedProcess:
    env = base_env(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", str(spec)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_only_the_credentials_get_in_and_a_wrong_password_stops_the_sweep_before_ray(tmp_path, monkeypatch):
    (tmp_path / "mlflow").mkdir()
    server = MlflowServer(tmp_path / "mlflow", auth=True)
    try:
        create = urllib.request.Request(
            f"{server.uri}/api/2.0/mlflow/runs/create",
            method="POST",
            data=json.dumps({"experiment_id": "0"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(create, timeout=30)
        assert refused.value.code == 401

        raw = tiny_spec_dict(
            tmp_path,
            name="auth",
            loss={"method": "dml"},
            search={"loss.beta": {"type": "float", "low": 0.0, "high": 2.0}},
            tune={"scheduler": "fifo", "num_trials": 2, "max_concurrent_trials": 2},
            mlflow={"tracking_uri": server.uri},
        )
        spec = tmp_path / "auth.yaml"
        spec.write_text(yaml.safe_dump(raw))
        started = time.time()
        wrong = sweep(spec, tmp_path, "admin", "not-the-password")
        assert wrong.returncode == 2, wrong.stdout[-2000:] + wrong.stderr[-2000:]
        assert wrong.stderr.splitlines() == [
            f"error: MLflow tracking server {server.uri} refused the credentials: set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a user of its "
            "basic-auth app"
        ]
        assert "watch it" not in wrong.stdout and "Ray" not in wrong.stdout + wrong.stderr  # Ray never started
        print(f"\nwrong password: refused in {time.time() - started:.0f} s")

        right = sweep(spec, tmp_path, "admin", server.password)
        assert right.returncode == 0, right.stdout[-3000:] + right.stderr[-3000:]
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.password)
        client = MlflowClient(tracking_uri=server.uri)
        runs = client.search_runs([client.get_experiment_by_name("auth").experiment_id])
        (parent,) = [r for r in runs if r.data.tags.get(TRIAL_TAG) == "parent"]
        children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
        assert len(children) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    finally:
        server.stop()
