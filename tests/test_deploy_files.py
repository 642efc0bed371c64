"""docker/: the compose file, the KubeRay manifests and the Dockerfile, checked without a container
engine (no image can be built here). `docker-compose config` validates the compose file where that
tool is installed; the assertions below check what matters on any machine: token auth on every Ray
node, one shared storage volume at the same path everywhere, nothing published beyond 127.0.0.1, and
that the RayJob's entrypoint really plans the sweep it names.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
KUBERAY = DOCKER / "kuberay"
RAYJOB = KUBERAY / "rayjob-imagenet100.yaml"
RAYCLUSTER = KUBERAY / "raycluster.yaml"
RAY_SERVICES = ("ray-head", "ray-worker", "ray-gpu-worker")
# what a user puts in docker/.env
COMPOSE_ENV = {
    "RAY_AUTH_TOKEN": "test-token",
    "POSTGRES_PASSWORD": "test-password",
    "MLFLOW_ADMIN_PASSWORD": "test-admin-password",
    "MLFLOW_SECRET_KEY": "test-secret-key",
}
MLFLOW_MANIFEST = KUBERAY / "mlflow.yaml"
AUTH_INI = DOCKER / "mlflow" / "basic_auth.ini"


# ---- compose ---------------------------------------------------------------------------------

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value, env: dict):
    """Compose's variable substitution (`${X}`, `${X:-default}`, `${X:?error}`, `$$`) on a loaded file."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        set_ = env.get(name) not in (None, "") if op and op.startswith(":") else name in env
        if set_:
            return env[name]
        if op and op.endswith("?"):
            raise KeyError(f"{name}: {arg}")
        return arg if op else ""

    return _VAR.sub(sub, value)


def load_compose(env: dict) -> dict:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), env)


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose(COMPOSE_ENV)


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


def test_compose_config_validates(tmp_path):
    cmd = compose_command()
    assert cmd, "no compose to validate with: install Debian's docker-compose (.ci/run does)"
    empty = tmp_path / "empty.env"  # ignore a developer's own docker/.env
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in (*COMPOSE_ENV, "DATA_DIR")}
    base = [*cmd, "--env-file", str(empty), "-f", str(COMPOSE)]
    ok = subprocess.run(
        [*base, "config", "-q"], cwd=ROOT, env={**env, **COMPOSE_ENV}, capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0, ok.stderr
    gpu = subprocess.run(
        [*base, "--profile", "gpu", "config", "--services"],
        cwd=ROOT,
        env={**env, **COMPOSE_ENV},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert gpu.returncode == 0, gpu.stderr
    assert set(gpu.stdout.split()) >= {*RAY_SERVICES, "mlflow", "postgres", "prometheus", "grafana"}
    # no token, no cluster: compose refuses to start without one
    missing = subprocess.run(
        [*base, "config", "-q"],
        cwd=ROOT,
        env={**env, "POSTGRES_PASSWORD": "x"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode != 0 and "RAY_AUTH_TOKEN" in missing.stdout + missing.stderr


def test_compose_needs_the_secrets():
    for name in COMPOSE_ENV:
        with pytest.raises(KeyError, match=name):
            load_compose({k: v for k, v in COMPOSE_ENV.items() if k != name})


def _mounts(service: dict) -> dict[str, str]:
    """container path -> volume name or host path, from the short volume syntax."""
    out = {}
    for v in service.get("volumes", []):
        source, target = v.split(":")[:2]
        out[target] = source
    return out


def _size_bytes(size: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)b?", str(size).lower())
    assert m, size
    return float(m.group(1)) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[m.group(2)]


def test_every_ray_node_has_token_auth_shared_storage_and_mlflow(compose):
    services = compose["services"]
    storage_mounts = set()
    for name in RAY_SERVICES:
        svc = services[name]
        env = svc["environment"]
        assert env["RAY_AUTH_MODE"] == "token", name
        assert env["RAY_AUTH_TOKEN"] == COMPOSE_ENV["RAY_AUTH_TOKEN"], name
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
        assert env["MLFLOW_TRACKING_USERNAME"] == "admin", name
        assert env["MLFLOW_TRACKING_PASSWORD"] == COMPOSE_ENV["MLFLOW_ADMIN_PASSWORD"], name
        mounts = _mounts(svc)
        storage = env["DUALKD_STORAGE"]
        target = next(t for t in mounts if storage == t or storage.startswith(t.rstrip("/") + "/"))
        storage_mounts.add((target, mounts[target]))
        assert mounts[target] in compose["volumes"], f"{name}: storage must be on a named volume"
        assert _size_bytes(svc["shm_size"]) >= 2**30, f"{name}: Ray's object store needs a large /dev/shm"
    assert len(storage_mounts) == 1, f"one volume at one path on every Ray node, got {storage_mounts}"


def test_head_offers_train_driver_and_wires_the_dashboard_charts(compose):
    head = compose["services"]["ray-head"]
    args = shlex.split(head["command"])
    assert args[:2] == ["ray", "start"] and "--head" in args and "--block" in args
    flags = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
    resources = json.loads(flags["resources"])
    peer = yaml.safe_load((ROOT / "search_spaces" / "peer.yaml").read_text())
    assert resources["TRAIN_DRIVER"] >= peer["tune"]["max_concurrent_trials"]
    assert flags["dashboard-host"] == "0.0.0.0" and "metrics-export-port" in flags
    for worker in ("ray-worker", "ray-gpu-worker"):
        assert f"--address=ray-head:{flags['port']}" in compose["services"][worker]["command"]
    env = head["environment"]
    assert urlparse(env["RAY_PROMETHEUS_HOST"]).hostname == "prometheus"
    assert urlparse(env["RAY_GRAFANA_HOST"]).hostname == "grafana"
    iframe = urlparse(env["RAY_GRAFANA_IFRAME_HOST"])  # what the browser loads: Grafana's published port
    assert f"{iframe.hostname}:{iframe.port}:3000" in compose["services"]["grafana"]["ports"]


def test_published_ports_bind_localhost_and_postgres_none(compose):
    published = []
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond 127.0.0.1"
            published.append(name)
    assert {"ray-head", "mlflow", "grafana"} <= set(published)
    assert "ports" not in compose["services"]["postgres"]
    assert "ports" not in compose["services"]["prometheus"]


def test_mlflow_server_on_postgres_serves_artifacts_to_the_ray_nodes(compose):
    args = shlex.split(compose["services"]["mlflow"]["command"])
    flags = {a: args[i + 1] for i, a in enumerate(args[:-1]) if a.startswith("--")}
    backend = urlparse(flags["--backend-store-uri"])
    assert backend.scheme == "postgresql" and backend.hostname == "postgres"
    assert backend.password == COMPOSE_ENV["POSTGRES_PASSWORD"]
    assert "--serve-artifacts" in args and flags["--artifacts-destination"] == "/mlartifacts"
    # MLflow answers 403 to Host headers it does not allow: the Ray nodes' address must be allowed
    ray_host = urlparse(compose["services"]["ray-head"]["environment"]["MLFLOW_TRACKING_URI"]).netloc
    assert ray_host in flags["--allowed-hosts"].split(",")
    dockerfile = DOCKER / compose["services"]["mlflow"]["build"] / "Dockerfile"
    assert "psycopg2" in dockerfile.read_text()


def _auth_ini() -> dict:
    import configparser

    ini = configparser.ConfigParser()
    ini.read_string(AUTH_INI.read_text())
    return dict(ini["mlflow"])


def test_compose_mlflow_lets_in_only_its_users(compose):
    mlflow = compose["services"]["mlflow"]
    assert "--app-name basic-auth" in " ".join(shlex.split(mlflow["command"]))
    assert mlflow["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"] == COMPOSE_ENV["MLFLOW_ADMIN_PASSWORD"]
    assert mlflow["environment"]["MLFLOW_FLASK_SERVER_SECRET_KEY"] == COMPOSE_ENV["MLFLOW_SECRET_KEY"]
    ini = _auth_ini()
    assert "admin_password" not in ini and ini["admin_username"] == "admin"  # no password in the repository
    users_db = Path(urlparse(ini["database_uri"]).path.lstrip("/")).parent  # sqlite:////mlauth/x.db -> mlauth
    assert _mounts(mlflow)[f"/{users_db}"] in compose["volumes"], "the users must outlive the container"
    dockerfile = (DOCKER / "mlflow" / "Dockerfile").read_text()
    assert "Flask-WTF" in dockerfile and "MLFLOW_AUTH_CONFIG_PATH=/etc/dualkd/basic_auth.ini" in dockerfile


def test_prometheus_scrapes_rays_service_discovery_file(compose):
    services = compose["services"]
    prom = services["prometheus"]
    config_source = next(s for t, s in _mounts(prom).items() if t == "/etc/prometheus/prometheus.yml")
    config = yaml.safe_load((DOCKER / config_source).read_text())
    files = [f for job in config["scrape_configs"] for sd in job.get("file_sd_configs", []) for f in sd["files"]]
    assert "/tmp/ray/prom_metrics_service_discovery.json" in files
    ray_tmp = _mounts(services["ray-head"])["/tmp/ray"]
    assert _mounts(prom)["/tmp/ray"] == ray_tmp  # the head's /tmp/ray, at the same path
    grafana = services["grafana"]
    mounts = _mounts(grafana)
    assert mounts["/tmp/ray"] == ray_tmp
    provisioning = DOCKER / mounts[grafana["environment"]["GF_PATHS_PROVISIONING"]]
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and datasource["isDefault"]
    providers = yaml.safe_load((provisioning / "dashboards" / "providers.yml").read_text())["providers"]
    paths = {p["options"]["path"] for p in providers}
    assert "/tmp/ray/session_latest/metrics/grafana/dashboards" in paths  # Ray's own, as the head writes them
    ours = next(path for path in paths if path in mounts)
    assert list((DOCKER / mounts[ours]).glob("*.json"))


def test_grafana_dashboard_shows_what_the_loop_exports():
    """Every series the training dashboard queries is a gauge of trainables/live_metrics.py."""
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "dualkd_training.json").read_text())
    queried = {
        m
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for m in re.findall(r"ray_(dualkd_\w+)", target["expr"])
    }
    exported = set(re.findall(r'Gauge\(\s*"(dualkd_\w+)"', (ROOT / "trainables" / "live_metrics.py").read_text()))
    assert queried and queried <= exported
    assert {"dualkd_val_top1", "dualkd_images_per_second", "dualkd_train_loss", "dualkd_epoch"} <= queried


def test_gpu_worker_reserves_nvidia_devices(compose):
    services = compose["services"]
    gpu = services["ray-gpu-worker"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert gpu["build"]["args"]["RAY_VARIANT"] == "gpu"
    for name in ("ray-head", "ray-worker"):
        assert services[name]["build"]["args"]["RAY_VARIANT"] == "cpu"
        assert "deploy" not in services[name]


def test_compose_secrets_stay_out_of_git_and_images():
    ignored = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=ROOT)
    assert ignored.returncode == 0, "docker/.env must be git-ignored (ray job submit skips ignored files too)"
    assert "docker/.env" in _dockerignore()


# ---- KubeRay -------------------------------------------------------------------------------


def _cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def _pods(spec: dict):
    yield "head", spec["headGroupSpec"]
    for group in spec["workerGroupSpecs"]:
        yield group["groupName"], group


@pytest.fixture(scope="module")
def rayjob() -> dict:
    (doc,) = yaml.safe_load_all(RAYJOB.read_text())
    return doc


@pytest.fixture(scope="module")
def raycluster() -> dict:
    (doc,) = yaml.safe_load_all(RAYCLUSTER.read_text())
    return doc


@pytest.fixture(scope="module")
def job_env(rayjob) -> dict:
    return yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])["env_vars"]


@pytest.fixture(scope="module")
def job_spec(rayjob) -> dict:
    args = shlex.split(rayjob["spec"]["entrypoint"])
    return yaml.safe_load((ROOT / next(a for a in args if a.endswith(".yaml"))).read_text())


def test_manifests_parse_with_token_auth_and_the_image_ray(rayjob, raycluster):
    import ray

    assert rayjob["apiVersion"] == raycluster["apiVersion"] == "ray.io/v1"
    assert (rayjob["kind"], raycluster["kind"]) == ("RayJob", "RayCluster")
    for doc in (rayjob, raycluster):
        spec = _cluster_spec(doc)
        assert spec["authOptions"]["mode"] == "token"
        assert spec["rayVersion"] == ray.__version__ == dockerfile_args()["RAY_VERSION"]
        for _, group in _pods(spec):
            assert all(isinstance(v, str) for v in group["rayStartParams"].values())


def _parse_resources_param(value: str) -> dict[str, dict]:
    """The head's `resources` rayStartParam as each reader sees it."""
    (flag,) = shlex.split(f"--resources={value}")  # KubeRay pastes it into a bash `ray start` line
    return {
        "ray start": json.loads(flag.split("=", 1)[1]),
        "KubeRay": json.loads(value.strip("'\"` ")),  # the operator trims quotes, then reads JSON
        "Ray autoscaler": json.loads(value[1:-1].replace("\\", "")),
    }


def test_head_has_train_driver_slots_for_the_sweep(rayjob, raycluster, job_spec):
    for doc in (rayjob, raycluster):
        params = _cluster_spec(doc)["headGroupSpec"]["rayStartParams"]
        for reader, resources in _parse_resources_param(params["resources"]).items():
            assert resources["TRAIN_DRIVER"] >= job_spec["tune"]["max_concurrent_trials"], reader


def test_gpu_workers_fit_the_trials(rayjob, job_spec):
    groups = _cluster_spec(rayjob)["workerGroupSpecs"]
    res = job_spec["resources"]
    for group in groups:
        (container,) = group["template"]["spec"]["containers"]
        limits = container["resources"]["limits"]
        gpus = int(limits["nvidia.com/gpu"])
        assert gpus >= 1
        assert float(limits["cpu"]) >= gpus / res.get("gpus_per_worker", 1) * res["cpus_per_worker"]
    total = sum(
        int(g["replicas"]) * int(g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
        for g in groups
    )
    assert total >= res["num_workers"] * res.get("gpus_per_worker", 1)


def _container_mounts(group: dict) -> dict[str, tuple[str, bool]]:
    """mount path -> (PVC claim, read-only) of the group's Ray container."""
    pod = group["template"]["spec"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
    }
    container = pod["containers"][0]
    return {
        m["mountPath"]: (claims[m["name"]], m.get("readOnly", False))
        for m in container["volumeMounts"]
        if m["name"] in claims
    }


def test_storage_and_data_on_every_pod_at_the_same_path(rayjob, raycluster, job_env):
    pvcs = {d["metadata"]["name"] for d in yaml.safe_load_all((KUBERAY / "storage.yaml").read_text())}
    storage, data = job_env["DUALKD_STORAGE"], job_env["IMAGENET100_ROOT"]
    for doc in (rayjob, raycluster):
        for name, group in _pods(_cluster_spec(doc)):
            mounts = _container_mounts(group)
            (shared,) = [p for p in mounts if storage.startswith(p.rstrip("/") + "/")]
            assert mounts[shared] == ("dualkd-shared", False), name
            (data_mount,) = [p for p in mounts if data == p or data.startswith(p.rstrip("/") + "/")]
            assert mounts[data_mount][0] in pvcs and mounts[shared][0] in pvcs


def test_rayjob_env_and_raycluster_env_agree(rayjob, raycluster, job_env):
    assert urlparse(job_env["MLFLOW_TRACKING_URI"]).scheme == "http"
    for name, group in _pods(raycluster["spec"]):
        env = {e["name"]: e["value"] for e in group["template"]["spec"]["containers"][0]["env"]}
        assert env == job_env, name
    # the same cluster otherwise: groups, resources, image, volumes
    job_groups = [g for _, g in _pods(rayjob["spec"]["rayClusterSpec"])]
    for a, (_, b) in zip(job_groups, _pods(raycluster["spec"])):
        b = json.loads(json.dumps(b))
        for c in b["template"]["spec"]["containers"]:
            c.pop("env")
        assert a == b
    images = {
        c["image"]
        for doc in (rayjob, raycluster)
        for _, g in _pods(_cluster_spec(doc))
        for c in g["template"]["spec"]["containers"]
    }
    assert len(images) == 1


def dry_run(entrypoint: str, cluster_env: dict, tmp_path) -> str:
    """An entrypoint with --dry-run appended, from the repo root (the image's working directory),
    with a cluster's environment; returns its plan."""
    args = shlex.split(entrypoint)
    assert args[:3] == ["python", "-m", "orchestrator.sweep"]
    data = tmp_path / "imagenet100"
    for split in ("train", "val"):  # the layout the pre-flight check looks for (it decodes nothing)
        (data / split / "n01440764").mkdir(parents=True)
        (data / split / "n01440764" / "n01440764_1.JPEG").touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "DUALKD_", "MLFLOW_"))}
    env.update({k: v for k, v in cluster_env.items() if not k.startswith("RAY_")}, IMAGENET100_ROOT=str(data))
    run = subprocess.run(
        [sys.executable, *args[1:], "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    assert "trials:" in run.stdout
    return run.stdout


def test_rayjob_entrypoint_plans_the_sweep_on_shared_storage(rayjob, job_env, tmp_path):
    plan = dry_run(rayjob["spec"]["entrypoint"], job_env, tmp_path)
    assert job_env["DUALKD_STORAGE"] in plan and job_env["MLFLOW_TRACKING_URI"] in plan


def test_compose_cluster_plans_the_default_sweep_on_shared_storage(compose, tmp_path):
    env = compose["services"]["ray-head"]["environment"]
    plan = dry_run("python -m orchestrator.sweep search_spaces/peer.yaml", env, tmp_path)
    assert env["DUALKD_STORAGE"] in plan and env["MLFLOW_TRACKING_URI"] in plan


# ---- Dockerfile ----------------------------------------------------------------------------


def dockerfile_args() -> dict[str, str]:
    text = (DOCKER / "Dockerfile").read_text()
    return dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, flags=re.M))


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def _pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirement(name: str) -> Requirement:
    return next(r for r in map(Requirement, _pyproject()["dependencies"]) if r.name == name)


def test_dockerfile_ray_python_and_torch_match_the_project():
    import ray

    args = dockerfile_args()
    assert args["RAY_VERSION"] == ray.__version__
    assert _requirement("ray").specifier.contains(args["RAY_VERSION"])
    assert args["RAY_VARIANT"] == "gpu"
    text = (DOCKER / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert base == "rayproject/ray:${RAY_VERSION}-py311-${RAY_VARIANT}"
    assert Requirement(f"python{_pyproject()['requires-python']}").specifier.contains("3.11")
    assert _requirement("torch").specifier.contains(args["TORCH_VERSION"])
    assert _requirement("torchvision").specifier.contains(args["TORCHVISION_VERSION"])
    # the README's install steps are the image's
    readme = (ROOT / "README.md").read_text()
    assert f"torch=={args['TORCH_VERSION']} torchvision=={args['TORCHVISION_VERSION']}" in readme
    assert "https://download.pytorch.org/whl/cpu" in readme and "https://download.pytorch.org/whl/cpu" in text
    assert "pip install --no-cache-dir -e ." in text and "wget" in text


def test_dockerignore_keeps_outputs_and_environments_out():
    patterns = _dockerignore()

    def excluded(path: str) -> bool:
        return any(
            fnmatch.fnmatch(path, p.rstrip("/")) or fnmatch.fnmatch(path, p.rstrip("/").removeprefix("**/"))
            for p in patterns
        )

    for path in ("runs", "mlflow.db", "mlruns", "reports", ".venv", ".venv-ci", ".git", "__pycache__"):
        assert excluded(path), path
    for path in ("orchestrator", "trainables", "search_spaces", "pyproject.toml", "README.md"):
        assert not excluded(path), path


def test_kuberay_pods_log_in_to_the_basic_auth_server_of_mlflow_yaml(rayjob, raycluster, job_env):
    docs = {d["kind"]: d for d in yaml.safe_load_all(MLFLOW_MANIFEST.read_text())}
    assert docs["Service"]["metadata"]["name"] == urlparse(job_env["MLFLOW_TRACKING_URI"]).hostname
    assert docs["Service"]["spec"]["ports"][0]["port"] == urlparse(job_env["MLFLOW_TRACKING_URI"]).port
    (server,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert "--app-name" in server["args"] and server["args"][server["args"].index("--app-name") + 1] == "basic-auth"
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in server["env"]}
    assert secrets["MLFLOW_AUTH_ADMIN_USERNAME"] == {
        "name": "dualkd-mlflow-credentials",
        "key": "MLFLOW_TRACKING_USERNAME",
    }
    assert secrets["MLFLOW_AUTH_ADMIN_PASSWORD"] == {
        "name": "dualkd-mlflow-credentials",
        "key": "MLFLOW_TRACKING_PASSWORD",
    }
    mounts = {m["mountPath"] for m in server["volumeMounts"]}
    assert "/mlauth" in mounts  # basic_auth.ini keeps its users there
    for doc in (rayjob, raycluster):
        for name, group in _pods(_cluster_spec(doc)):
            sources = [e["secretRef"]["name"] for e in group["template"]["spec"]["containers"][0]["envFrom"]]
            assert "dualkd-mlflow-credentials" in sources, name
