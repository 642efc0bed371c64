"""Real clusters and servers (issue 7, item 5): a two-node Ray cluster with token auth on, `ray job
submit` to it, and a real `mlflow server`. Nothing is mocked; every process the tests start is stopped
by its process id (see tests/servers.py).

The cluster, the server and the storage that stands for the cluster's shared filesystem are shared by
the module: the tiny teacher is trained once, by the first sweep, and taken from the cache after that.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

import pandas as pd
import pytest
import torch
import yaml
from mlflow import MlflowClient

from orchestrator.tracking import PARENT_TAG, TRIAL_TAG
from tests.conftest import tiny_spec_dict
from tests.servers import MlflowServer, Process, RayCluster, base_env, wait_until
from tests.sweep_checks import check_every_trial_once, trial_runs
from tests.test_sweep import write_tiny_sweep

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# The head gets 1 CPU and the TRAIN_DRIVER slots, the worker node 2 CPUs: a teacher worker asking for
# 2 CPUs can only run on the worker node, and two concurrent 1-CPU trials cannot both fit on the head.
HEAD_CPUS, WORKER_CPUS = 1, 2
TEACHER_RESOURCES = {"num_workers": 1, "cpus_per_worker": 2}
TINY_OVERRIDES = [
    "data.train_subset=240",
    "data.image_size=8",
    "teacher.arch=resnet18",
    "teacher.epochs=1",
    "teacher.batch_size=32",
    "students.epochs=1",
    "students.batch_size=32",
    "tune.num_trials=2",
    "tune.grace_period=1",
    "tune.max_concurrent_trials=2",
]
EPOCHS = 3  # in the sweep that loses nodes: one epoch before each loss, and one to lose


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    ray_cluster = RayCluster(tmp_path_factory.mktemp("ray-logs"), head_cpus=HEAD_CPUS, worker_cpus=WORKER_CPUS)
    yield ray_cluster
    ray_cluster.stop()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    """What every node of the cluster shares (one machine: one folder)."""
    return tmp_path_factory.mktemp("shared-storage")


def run_client(cmd: list[str], cwd: Path, env: dict, timeout: float) -> tuple[int, str, float]:
    """Run a client command to its end (its whole process tree stopped afterwards): status, output, seconds."""
    log = Path(tempfile.mkstemp(prefix="dualkd-client-", suffix=".log")[1])  # not in cwd: the test checks cwd
    start = time.time()
    process = Process(cmd, log, env, cwd=cwd)
    try:
        code = process.proc.wait(timeout=timeout)
    except Exception:
        code = None
    finally:
        seconds = time.time() - start
        process.stop(grace=5)
    output = log.read_text(errors="replace")
    log.unlink()
    assert code is not None, f"{cmd[:4]} did not end within {timeout} s:\n{output[-5000:]}"
    return code, output, seconds


def sweep_cmd(spec_path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.sweep", str(spec_path), *extra]


def tell(capsys, line: str) -> None:
    """A figure for the record, shown even under pytest -q."""
    with capsys.disabled():
        print(f"\n[figure] {line}")


def sweep_runs(client: MlflowClient, experiment: str):
    """The one parent run of the experiment and its child runs."""
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get(TRIAL_TAG) == "parent"]
    assert len(parents) == 1, [r.data.tags for r in runs]
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
    assert len(children) == len(runs) - 1  # no stray run
    return parent, children


def cached_teachers(storage: Path) -> list[str]:
    """The teacher cache's entries (not the Ray Train runs that trained them)."""
    return [p.name for p in (storage / "teachers").iterdir() if p.name != "runs" and not p.name.startswith(".")]


EPOCH_LINE = re.compile(r"\(RayTrainWorker pid=(\d+)[^)]*\)(?:\x1b\[\d+m)? (\S+): epoch (\d+)/(\d+)")
RESUMED = re.compile(r"(\S+): resumed from the checkpoint of epoch (\d+)")


def lost_node_spec(tmp_path: Path, storage: Path, name: str) -> Path:
    """The tiny sweep (the module's teacher) with EPOCHS epochs run to the end, its teacher on the worker node."""
    raw = yaml.safe_load(write_tiny_sweep(tmp_path, storage, scheduler="fifo").read_text())
    raw.update(name=name, teacher_resources=TEACHER_RESOURCES, mlflow={"experiment": name})
    raw["students"]["epochs"] = EPOCHS
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def mid_trial(
    log: Path,
    client: MlflowClient,
    experiment: str,
    pids: Optional[set[int]] = None,
    past: int = 1,
    below: int = EPOCHS,
):
    """A trial between its epochs' checkpoints, (run, last epoch): its driver printed the epoch's line and MLflow
    has the epoch (so the report, and its checkpoint, reached the trial's driver), at least `past` epochs done and
    fewer than `below`, so that it has epochs left; with `pids`, a trial whose worker is one of them."""
    last: dict[str, int] = {}
    for pid, run, epoch, total in EPOCH_LINE.findall(log.read_text(errors="replace")):
        if int(total) == EPOCHS and (pids is None or int(pid) in pids):
            last[run] = max(last.get(run, 0), int(epoch))
    between = {run: k for run, k in last.items() if past <= k < min(below, EPOCHS)}
    if not between:
        return None
    logged = {r.data.tags.get(TRIAL_TAG): int(r.data.metrics.get("epoch", 0)) for r in trial_runs(client, experiment)}
    return next(((run, k) for run, k in between.items() if logged.get(run, 0) >= k), None)


def start_client(cmd: list[str], cwd: Path, env: dict, name: str) -> Process:
    return Process(cmd, cwd / f"{name}.log", env, cwd=cwd)


def ended(process: Process, timeout: float) -> str:
    """Wait for a started client to end (its whole tree stopped then); its output, after checking it exited 0."""
    try:
        process.proc.wait(timeout=timeout)
    finally:
        process.stop(grace=5)
    out = process.log.read_text(errors="replace")
    assert process.proc.returncode == 0, out[-5000:]
    return out


def resumed_runs(out: str) -> dict[str, int]:
    return {run: int(epoch) for run, epoch in RESUMED.findall(out)}


def test_a_sweep_loses_its_worker_node_then_the_whole_cluster_and_ends_whole(cluster, storage, tmp_path, capsys):
    """A tiny sweep on the two-node cluster meets both faults of preemptible machines, one after the other.

    First every process of the worker node (raylet, object store, workers) is SIGKILLed while a trial trains on
    it, and a replacement node joins, as an autoscaler would bring one: the trial continues from its last
    epoch's checkpoint (`resources.max_failures`, default 2). Then the driver, the head and the worker node are
    SIGKILLed at once mid-epoch, and a fresh cluster (new ports and temporary folders) with the same storage and
    tracking store takes `--resume`: every trial and epoch once in MLflow, the Optuna study whole, the teacher
    and its soft labels taken from the cache (digits need no bank: tests/test_bank.py has the bank's cache hit).
    The module's cluster is the fresh one afterwards."""
    name = "lost-nodes"
    spec_path = lost_node_spec(tmp_path, storage, name)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a sqlite store on the driver's machine, as docs/clusters.md says
    client = MlflowClient(tracking_uri=uri)
    start = time.time()
    first = start_client(
        sweep_cmd(spec_path, "--address", cluster.address, "--tracking-uri", uri), tmp_path, cluster.env, name
    )
    try:
        run, at_kill = wait_until(
            lambda: mid_trial(first.log, client, name, cluster.worker_processes(), below=2),
            600,
            "a trial past epoch 1 on the worker node",
            first,
            every=0.2,
        )
        killed = cluster.lose_worker()
        lost_at = time.time()
        cluster.add_worker()
        tell(
            capsys,
            f"lost the worker node ({killed} processes) in epoch {at_kill + 1} of {run}; "
            f"a replacement joined {time.time() - lost_at:.0f} s later",
        )
        # TorchTrainer workers (Train V2's RayTrainWorker actors) ran on the worker nodes, not only on the head.
        workers = cluster.state("actors", filters=[("class_name", "=", "RayTrainWorker")])
        placed = [w["node_id"] for w in workers]
        off_head = [n for n in placed if n != cluster.head_node_id]
        assert len(placed) >= 3 and off_head, workers  # the teacher's, the trials' and the restarted one
        tell(capsys, f"RayTrainWorker actors: {len(off_head)} off the head, {len(placed) - len(off_head)} on it")

        second, at_loss = wait_until(
            lambda: mid_trial(first.log, client, name, past=2), 600, "a trial past epoch 2", first, every=0.2
        )
        killed = cluster.lose_all(first)
    finally:
        first.stop(grace=5)
    out = first.log.read_text(errors="replace")
    # The teacher was trained once, by this sweep (the module's first: its storage starts empty).
    assert out.count("teacher: cache miss") == 1, out[-5000:]
    teachers = cached_teachers(storage)
    assert len(teachers) == 1 and teachers[0].startswith("resnet18-"), teachers
    # The trial on the lost node lost only the epoch in progress: it continued from its last checkpoint.
    assert resumed_runs(out).get(run, 0) >= at_kill, (run, at_kill, out[-5000:])

    restart = time.time()
    cluster.start()
    tell(
        capsys,
        f"lost the cluster and its driver ({killed} processes) in epoch {at_loss + 1} of {second}; "
        f"a fresh cluster was up {time.time() - restart:.0f} s later",
    )
    resumed = start_client(
        sweep_cmd(spec_path, "--resume", "--address", cluster.address, "--tracking-uri", uri),
        tmp_path,
        cluster.env,
        f"{name}-resumed",
    )
    out = ended(resumed, timeout=900)
    tell(capsys, f"the sweep through both losses: {time.time() - start:.0f} s wall")
    assert "resuming " in out, out[-5000:]
    # The teacher and its soft labels came from the cache: nothing of the teacher's was trained again.
    assert "teacher: cache hit" in out and "cache miss" not in out, out[-5000:]
    assert len(cached_teachers(storage)) == 1
    # The trial cut short lost only the epoch in progress.
    assert resumed_runs(out).get(second, 0) >= at_loss, (second, at_loss, out[-5000:])
    check_every_trial_once(client, name, storage, trials=2, epochs=EPOCHS)


def ray_cli(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "ray"), *args]


def test_job_submission_needs_the_token(cluster, tmp_path):
    home = tmp_path / "home"
    home.mkdir()  # no ~/.ray/auth_token to fall back on
    clients = {
        "no token": base_env(HOME=str(home)),
        "a wrong token": base_env(HOME=str(home), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64),
    }
    for i, (what, env) in enumerate(clients.items()):
        code, out, _ = run_client(
            ray_cli(
                "job",
                "submit",
                "--address",
                cluster.dashboard_url,
                "--no-wait",
                "--submission-id",
                f"refused-{i}",
                "--",
                "python",
                "-c",
                "print(1)",
            ),
            tmp_path,
            env,
            timeout=120,
        )
        assert code != 0, f"a submission with {what} was accepted:\n{out}"
        assert any(word in out for word in ("401", "403", "Unauthorized", "Forbidden", "token")), out
    code, out, _ = run_client(
        ray_cli("job", "list", "--address", cluster.dashboard_url), tmp_path, cluster.env, timeout=120
    )
    assert code == 0, out
    assert "refused-" not in out  # nothing ran
    with pytest.raises(urllib.error.HTTPError) as err:  # the dashboard's REST API asks for the token too
        urllib.request.urlopen(f"{cluster.dashboard_url}/api/jobs/", timeout=10)
    assert err.value.code == 401


def submit_peer_sweep(cluster, submission_id: str, env_vars: dict, tmp_path) -> tuple[int, str, float]:
    """`ray job submit --working-dir <repo>` of the shipped peer.yaml, shrunk by --set, with the token."""
    overrides = [arg for value in TINY_OVERRIDES for arg in ("--set", value)]
    return run_client(
        ray_cli(
            "job",
            "submit",
            "--address",
            cluster.dashboard_url,
            "--working-dir",
            str(ROOT),
            "--submission-id",
            submission_id,
            "--runtime-env-json",
            json.dumps({"env_vars": env_vars}),
            "--",
            "python",
            "-m",
            "orchestrator.sweep",
            "search_spaces/peer.yaml",
            *overrides,
        ),
        tmp_path,
        cluster.env,
        timeout=900,
    )


def job_info(cluster, submission_id: str) -> dict:
    """The job as the dashboard's REST API tells it (with the token): status, runtime env, ..."""
    request = urllib.request.Request(
        f"{cluster.dashboard_url}/api/jobs/{submission_id}", headers=cluster.auth_headers()
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def job_logs(cluster, submission_id: str, tmp_path) -> str:
    code, out, _ = run_client(
        ray_cli("job", "logs", "--address", cluster.dashboard_url, submission_id), tmp_path, cluster.env, timeout=120
    )
    assert code == 0, out
    return out


ACTOR_PREFIX = re.compile(r"^(\x1b\[\d+m)?\([\w.:-]+ pid=[^)]*\)")  # "(TrainController pid=12, ip=...)" in color


def actor_lines(logs: str) -> list[str]:
    """The log lines that Ray forwarded from actors and tasks to the job's driver."""
    return [line for line in logs.splitlines() if ACTOR_PREFIX.match(line)]


def unpacked(cluster, submission_id: str) -> list[Path]:
    """The job's working folder as Ray unpacked it on the nodes (each node has its own temporary folder)."""
    package = Path(job_info(cluster, submission_id)["runtime_env"]["working_dir"]).stem  # gcs://_ray_pkg_<hash>.zip
    return sorted(
        {
            p.resolve()
            for root in (cluster.temp_dir, cluster.worker_temp_dir)
            for p in root.glob(f"session_*/runtime_resources/working_dir_files/{package}")
            if p.is_dir()
        }
    )


def test_job_without_storage_stops_at_once(cluster, mlflow_server, tmp_path, capsys):
    """peer.yaml sets no storage: with no DUALKD_STORAGE it would be ./runs in the job's temporary folder."""
    code, out, seconds = submit_peer_sweep(
        cluster, "peer-no-storage", {"MLFLOW_TRACKING_URI": mlflow_server.uri}, tmp_path
    )
    tell(capsys, f"job without DUALKD_STORAGE: ended after {seconds:.0f} s (submission included)")
    assert job_info(cluster, "peer-no-storage")["status"] == "FAILED"
    assert seconds < 300, out[-3000:]  # 15 s unloaded; the tiny sweep itself takes minutes (a loose bound)
    logs = job_logs(cluster, "peer-no-storage", tmp_path)
    assert not actor_lines(logs)  # it stopped before it started anything on the cluster
    errors = [line for line in logs.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "storage" in errors[0] and "DUALKD_STORAGE" in errors[0], logs[-3000:]
    assert "Traceback" not in logs, logs[-3000:]
    assert not any(p.joinpath("runs").exists() for p in unpacked(cluster, "peer-no-storage"))


def test_job_submit_of_the_shipped_spec(cluster, mlflow_server, storage, tmp_path, capsys):
    code, out, seconds = submit_peer_sweep(
        cluster, "peer-tiny", {"DUALKD_STORAGE": str(storage), "MLFLOW_TRACKING_URI": mlflow_server.uri}, tmp_path
    )
    assert code == 0, out[-5000:]
    tell(capsys, f"ray job submit of the tiny peer sweep: {seconds:.0f} s wall (upload included)")
    assert job_info(cluster, "peer-tiny")["status"] == "SUCCEEDED"
    logs = job_logs(cluster, "peer-tiny", tmp_path)
    (tmp_path / "job.log").write_text(logs)
    assert "Traceback" not in logs, logs[-5000:]  # nor from any trial, worker or Ray's own actors
    epoch_lines = re.findall(
        r"\)(?:\x1b\[\d+m)? ([0-9a-f]{8}): epoch (\d+)/", logs
    )  # "(RayTrainWorker pid=..) <trial id>: epoch 1/1 ..." (a teacher trained here logs its own run's name)
    assert len({run for run, _ in epoch_lines}) == 2, logs[-5000:]  # one line per trial and epoch, each once
    assert len(epoch_lines) == len(set(epoch_lines)) == 2, epoch_lines
    # Its teacher (the tiny sweep's, by the --set values) is the module's one cache entry.
    teacher_lines = [line for line in logs.splitlines() if line.startswith("teacher: ")]
    tell(capsys, f"the job's {teacher_lines[0][:60] if teacher_lines else 'teacher: (no line)'}")
    assert len(cached_teachers(storage)) == 1

    # The upload holds only code.
    packages = unpacked(cluster, "peer-tiny")
    assert packages, f"no unpacked working folder under {cluster.temp_dir}"
    for package in packages:
        files = [p for p in package.rglob("*") if p.is_file()]
        parts = {part for p in files for part in p.relative_to(package).parts}
        assert not parts & {".venv", "runs", "mlflow.db", "mlruns"}, sorted(parts & {".venv", "runs", "mlflow.db"})
        assert (package / "orchestrator" / "sweep.py").is_file() and (package / "search_spaces" / "peer.yaml").is_file()
        size = sum(p.stat().st_size for p in files)
        node = "head" if cluster.temp_dir.resolve() in package.parents else "worker node"
        tell(
            capsys,
            f"uploaded working folder on the {node}: {size / 1024:.0f} KiB in {len(files)} files: "
            + " ".join(sorted(p.name for p in package.iterdir())),
        )
        assert size < 2 * 1024**2

    # The results are in the persistent storage the job was given, which the job printed.
    folders = sorted((storage / "sweeps").glob("peer-*"))
    assert len(folders) == 1, folders
    assert {"results.csv", "best.yaml", "spec.yaml"} <= {p.name for p in folders[0].iterdir()}
    assert len(pd.read_csv(folders[0] / "results.csv")) == 2
    assert str(folders[0]) in logs
    parent, children = sweep_runs(MlflowClient(tracking_uri=mlflow_server.uri), "peer")
    assert parent.info.status == "FINISHED" and len(children) == 2
    tell(capsys, f"git commit on the job's parent run: {parent.data.tags.get('mlflow.source.git.commit')}")


def test_comparison_through_a_tracking_server(cluster, mlflow_server, storage, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    epochs = 2
    raw = tiny_spec_dict(
        tmp_path,
        name="tiny-compare",
        compare={"methods": ["kd", "ua_dual"], "seeds": [0]},
        students={"epochs": epochs},
        tune={"max_concurrent_trials": 2},
        teacher_resources=TEACHER_RESOURCES,
        mlflow={"experiment": "tiny-compare"},
    )
    raw["storage"] = str(storage)
    spec_path = tmp_path / "compare.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    client_dir = tmp_path / "client"  # the sweep's working folder: nothing of MLflow's may land here
    client_dir.mkdir()

    code, out, seconds = run_client(
        sweep_cmd(spec_path, "--address", cluster.address, "--tracking-uri", mlflow_server.uri),
        client_dir,
        cluster.env,
        timeout=900,
    )
    assert code == 0, out[-5000:]
    tell(capsys, f"tiny comparison (2 trials x {epochs} epochs) on the two-node cluster: {seconds:.0f} s wall")
    assert not (client_dir / "mlruns").exists() and not (client_dir / "mlflow.db").exists()
    assert [p.name for p in client_dir.iterdir()] == []

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    parent, children = sweep_runs(client, "tiny-compare")
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert sorted(c.data.params["loss.method"] for c in children) == ["kd", "ua_dual"]
    students = ("resnet18", "mobilenet_v2")
    for child in children:
        assert child.info.status == "FINISHED"
        for student in students:
            history = client.get_metric_history(child.info.run_id, f"{student}/val_top1")
            assert [m.step for m in history] == list(range(1, epochs + 1)), history

    # Every table and plot of the sweep folder, and each trial's predictions, come back through the server.
    folder = next((storage / "sweeps").glob("tiny-compare-*"))
    made = {p.name for p in folder.iterdir() if p.suffix in {".csv", ".md", ".tex", ".png"}}
    assert {"comparison.md", "comparison.csv", "comparison.tex", "results.csv"} <= made
    assert any(name.endswith(".png") for name in made)
    downloads = tmp_path / "downloads"
    report = Path(client.download_artifacts(parent.info.run_id, "report", str(downloads / "parent")))
    fetched = {p.name: p for p in report.iterdir()}
    assert made <= set(fetched), made - set(fetched)
    for name, path in fetched.items():
        assert path.stat().st_size > 0, name
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        if path.suffix == ".csv":
            assert len(pd.read_csv(path)) > 0, name
    assert len(pd.read_csv(fetched["comparison.csv"])) == 4  # 2 methods x 2 students
    top = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"spec.yaml", "resolved_config.json"} <= top
    for child in children:
        path = client.download_artifacts(child.info.run_id, "val_predictions.pt", str(downloads / child.info.run_id))
        predictions = torch.load(path, weights_only=True)
        sizes = {len(predictions[student]["correct"]) for student in students}  # one record per val image
        assert len(sizes) == 1 and sizes.pop() > 0, child.info.run_id
    assert len(cached_teachers(storage)) == 1  # the teacher came from the cache
    # They went through the server: its artifact store holds them.
    assert any(mlflow_server.artifacts.rglob("val_predictions.pt"))
    assert any(mlflow_server.artifacts.rglob("comparison.tex"))
