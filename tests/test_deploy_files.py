"""docker/: the compose file, the KubeRay manifests and the Dockerfile, checked without a container
engine (no image can be built here). The compose file, interpolated with docker/.env.example as compose
would, is validated against the Compose Specification's JSON schema (tests/data), so any machine with the
pip dependencies checks it; `docker-compose config` checks it again in the slow tier where CI installs it.
The assertions below check what matters: token auth on every Ray node, one shared storage volume at the
same path everywhere, nothing published beyond 127.0.0.1, and that the RayJob's entrypoint really plans the
sweep it names.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import jsonschema
import pathspec
import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
COMPOSE_SCHEMA = Path(__file__).resolve().parent / "data" / "compose-spec.json"
KUBERAY = DOCKER / "kuberay"
RAYJOB = KUBERAY / "rayjob-imagenet100.yaml"
RAYCLUSTER = KUBERAY / "raycluster.yaml"
RAY_SERVICES = ("ray-head", "ray-worker", "ray-gpu-worker")
ALL_SERVICES = {*RAY_SERVICES, "mlflow", "postgres", "prometheus", "grafana"}
# the secrets a user fills in docker/.env.example's empty lines with
COMPOSE_ENV = {
    "RAY_AUTH_TOKEN": "test-token",
    "POSTGRES_PASSWORD": "test-password",
    "MLFLOW_ADMIN_PASSWORD": "test-admin-password",
    "MLFLOW_SECRET_KEY": "test-secret-key",
}
MLFLOW_MANIFEST = KUBERAY / "mlflow.yaml"
AUTH_INI = DOCKER / "mlflow" / "basic_auth.ini"


# ---- compose ---------------------------------------------------------------------------------


class MissingVariable(LookupError):
    """`${NAME:?message}` or `${NAME?message}` with NAME empty or unset: compose refuses the file."""


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])(.*))?", re.S)


def _closing_brace(text: str, start: int) -> int:
    """The index of the `}` that closes the `${` before `start`, past nested `${...}` in a default."""
    depth, i = 1, start
    while i < len(text):
        if text.startswith("$$", i):
            i += 2
            continue
        if text.startswith("${", i):
            depth, i = depth + 1, i + 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unclosed ${{ in {text!r}")


def _expand(body: str, env: dict) -> str:
    m = _BRACED.fullmatch(body)
    if not m:
        raise ValueError(f"invalid interpolation format: ${{{body}}}")
    name, op, arg = m.groups()
    value = env.get(name)
    if not op:
        return value or ""
    present = value is not None and (value != "" or not op.startswith(":"))
    if op.endswith("-"):
        return value if present else interpolate_text(arg, env)
    if op.endswith("?"):
        if present:
            return value
        raise MissingVariable(f"required variable {name} is missing a value: {arg}")
    return interpolate_text(arg, env) if present else ""  # :+ and +


def interpolate_text(text: str, env: dict) -> str:
    """One string as compose-go's template package reads it: `$$` is a `$`; `$NAME` and `${NAME}`;
    `${NAME:-default}` / `${NAME-default}` (empty or unset / unset), `${NAME:?err}` / `${NAME?err}`,
    `${NAME:+alt}` / `${NAME+alt}`, defaults themselves interpolated; any other `$` is an error."""
    out, i = [], 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
        elif text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i + 2)
            out.append(_expand(text[i + 2 : end], env))
            i = end + 1
        elif m := _NAME.match(text, i + 1):
            out.append(env.get(m.group(), ""))
            i = m.end()
        else:
            raise ValueError(f"invalid interpolation format: {text!r}")
    return "".join(out)


def interpolate(value, env: dict):
    """Compose's variable substitution on a loaded file: every string value, no key."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, str):
        return interpolate_text(value, env)
    return value


def read_env_file(path: Path) -> dict[str, str]:
    """A compose .env file: `NAME=value` lines (`export ` allowed), `#` comments, quotes stripped
    (single quotes keep the text as it is), an unquoted value's ` #` comment dropped."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        assert sep and _NAME.fullmatch(name.strip()), f"{path.name}: not NAME=value: {line!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = value.split(" #")[0].rstrip()
        env[name.strip()] = value
    return env


def user_env() -> dict[str, str]:
    """docker/.env as a user writes it: the example with its secrets filled in."""
    return {**read_env_file(ENV_EXAMPLE), **COMPOSE_ENV}


def load_compose(env: dict) -> dict:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), env)


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose(user_env())


@pytest.mark.parametrize(
    "text,expected",
    [
        ("${A}", "a"),
        ("$A/x", "a/x"),
        ("${UNSET}", ""),
        ("${EMPTY:-d}", "d"),
        ("${EMPTY-d}", ""),
        ("${UNSET-d}", "d"),
        ("${A:-d}", "a"),
        ("${UNSET:-${A}-b}", "a-b"),
        ("${A:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${EMPTY?e}", ""),
        ("$$A $${A}", "$A ${A}"),
        ("{'x': 1}", "{'x': 1}"),
    ],
)
def test_interpolation_reads_each_form_as_compose(text, expected):
    assert interpolate_text(text, {"A": "a", "EMPTY": ""}) == expected


@pytest.mark.parametrize("text", ["${EMPTY:?say why}", "${UNSET?say why}", "${UNSET:?say why}"])
def test_interpolation_refuses_a_required_variable_without_a_value(text):
    with pytest.raises(MissingVariable, match="missing a value: say why"):
        interpolate_text(text, {"EMPTY": ""})


def test_env_example_names_every_variable_compose_reads_and_holds_no_secret():
    example = read_env_file(ENV_EXAMPLE)
    text = "\n".join(ln for ln in COMPOSE.read_text().splitlines() if not ln.lstrip().startswith("#"))
    read = set(re.findall(r"(?<!\$)\$\{?([A-Za-z_][A-Za-z0-9_]*)", text.replace("$$", "")))
    assert set(example) == read
    assert all(example[name] == "" for name in COMPOSE_ENV), "docker/.env.example must not hold a secret"


def compose_schema() -> dict:
    return json.loads(COMPOSE_SCHEMA.read_text())


def schema_errors(doc: dict) -> list[str]:
    """What the Compose Specification's schema says about a loaded, interpolated compose file."""
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)
    validator.check_schema(schema)
    errors = sorted(validator(schema).iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors]


def test_the_schema_is_the_one_tests_data_readme_names():
    """Kept verbatim: a schema edited until the compose file passes would check nothing."""
    digest = hashlib.sha256(COMPOSE_SCHEMA.read_bytes()).hexdigest()
    assert digest in (COMPOSE_SCHEMA.parent / "README.md").read_text()


def test_compose_file_follows_the_compose_specification(compose):
    assert not schema_errors(compose), "\n".join(schema_errors(compose))
    # the schema does refuse: a misspelt key, a wrong type
    typo = copy.deepcopy(compose)
    typo["services"]["mlflow"]["enviroment"] = typo["services"]["mlflow"].pop("environment")
    assert any("enviroment" in e for e in schema_errors(typo))
    wrong = copy.deepcopy(compose)
    wrong["services"]["ray-head"]["ports"] = "127.0.0.1:8265:8265"
    assert any(e.startswith("services/ray-head/ports") for e in schema_errors(wrong))


def test_compose_services_profiles_and_references(compose):
    """What `docker-compose config` checks beyond the schema: the services (and with `--profile gpu`
    the GPU worker), every depends_on a service, every named volume declared, every local path there."""
    services = compose["services"]
    assert set(services) == ALL_SERVICES
    assert {n for n, s in services.items() if s.get("profiles")} == {"ray-gpu-worker"}
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services and not services[dep].get("profiles"), f"{name} depends on {dep}"
        for source in _mounts(svc).values():
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{name} mounts {source}, which is not there"
            else:
                assert source in compose["volumes"], f"{name} mounts the undeclared volume {source}"
        build = svc.get("build")
        if build is not None:
            context = DOCKER / (build if isinstance(build, str) else build["context"])
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            assert (context / dockerfile).is_file(), f"{name}: no {dockerfile} in {context}"


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


@pytest.mark.slow
@pytest.mark.needs_compose
def test_compose_config_validates(tmp_path):
    """The same file through a real compose, where .ci/run installs Debian's docker-compose."""
    cmd = compose_command()
    assert cmd, "no compose to validate with: install Debian's docker-compose (.ci/run does)"
    env_file = tmp_path / "user.env"  # docker/.env as a user writes it, not a developer's own
    env_file.write_text("".join(f"{k}={v}\n" for k, v in user_env().items()))
    env = {k: v for k, v in os.environ.items() if k not in user_env()}
    base = [*cmd, "--env-file", str(env_file), "-f", str(COMPOSE)]

    def run(*args: str, env_file_text: str | None = None) -> subprocess.CompletedProcess:
        if env_file_text is not None:
            env_file.write_text(env_file_text)
        return subprocess.run([*base, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    ok = run("config", "-q")
    assert ok.returncode == 0, ok.stderr
    gpu = run("--profile", "gpu", "config", "--services")
    assert gpu.returncode == 0, gpu.stderr
    assert set(gpu.stdout.split()) == ALL_SERVICES
    # the example as shipped, secrets empty: compose refuses to start without them
    missing = run("config", "-q", env_file_text=ENV_EXAMPLE.read_text())
    assert missing.returncode != 0 and "RAY_AUTH_TOKEN" in missing.stdout + missing.stderr


def test_compose_needs_the_secrets():
    for name in COMPOSE_ENV:  # each left empty as the example ships it, or unset
        with pytest.raises(MissingVariable, match=f"variable {name} is missing a value"):
            load_compose({**user_env(), name: ""})
        with pytest.raises(MissingVariable, match=f"variable {name} is missing a value"):
            load_compose({k: v for k, v in user_env().items() if k != name})


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


def _ignored_here(parts: tuple[str, ...], is_dir: bool) -> bool:
    """Whether the .gitignore files from the root down to `parts`' folder exclude it: each file's
    patterns are relative to its folder, a later line wins within a file and a deeper file wins."""
    verdict = None
    for depth in range(len(parts)):
        rules = ROOT.joinpath(*parts[:depth], ".gitignore")
        if rules.is_file():
            spec = pathspec.GitIgnoreSpec.from_lines(rules.read_text().splitlines())
            found = spec.check_file("/".join(parts[depth:]) + ("/" if is_dir else ""))
            if found.include is not None:
                verdict = found.include
    return bool(verdict)


def git_ignored(path: str) -> bool:
    """Whether git ignores `path` (relative to the root), from the .gitignore files alone: the same
    answer in a clone and in an exported tree, without git. A file in an ignored folder is ignored."""
    parts = PurePosixPath(path).parts
    return any(_ignored_here(parts[:n], is_dir=n < len(parts)) for n in range(1, len(parts) + 1))


# paths whose fate the ignore files decide, ignored or not; a slow test checks git agrees
IGNORE_CASES = {
    "docker/.env": True,
    "docker/.env.example": False,
    "docker/docker-compose.yml": False,
    "runs/teachers/x.pt": True,
    "mlflow.db": True,
    ".venv/bin/python": True,
    "orchestrator/__pycache__/sweep.cpython-311.pyc": True,
    "dualkd.egg-info/PKG-INFO": True,
    "orchestrator/sweep.py": False,
    "tests/data/compose-spec.json": False,
}


def test_compose_secrets_stay_out_of_git_and_images():
    assert git_ignored("docker/.env"), "docker/.env must be git-ignored (ray job submit skips ignored files too)"
    assert "docker/.env" in _dockerignore()
    assert {path: git_ignored(path) for path in IGNORE_CASES} == IGNORE_CASES


@pytest.mark.slow
@pytest.mark.needs_git
def test_git_ignores_what_the_ignore_reader_says():
    """The pure-Python reader above against git itself, in a clone (as .ci/run runs in)."""
    assert shutil.which("git") and (ROOT / ".git").exists(), "needs git and a git clone of the project"
    done = subprocess.run(
        ["git", "-c", "core.excludesFile=/dev/null", "check-ignore", "--no-index", "--stdin"],
        cwd=ROOT,
        input="\n".join(IGNORE_CASES),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode in (0, 1), done.stderr  # 1: none ignored
    assert set(done.stdout.split()) == {path for path, ignored in IGNORE_CASES.items() if ignored}


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
