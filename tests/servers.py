"""Real servers for the slow tests, started as subprocesses and stopped by the process ids they started.

Each server runs in a session of its own. Stopping it signals its process group, then every process of
its tree (children of children included, even one that left the group) until none is left. Nothing here
stops a process this module did not start: no `ray stop`, no kill by name.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Optional

VENV_BIN = str(Path(sys.executable).parent)
# Settings of the machine that must not reach the servers or the clients the tests start.
NOT_INHERITED = (
    "RAY_ADDRESS",
    "RAY_AUTH_MODE",
    "RAY_AUTH_TOKEN",
    "RAY_AUTH_TOKEN_PATH",
    "RAY_API_SERVER_ADDRESS",
    "DUALKD_STORAGE",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(**extra: str) -> dict[str, str]:
    """This environment with the virtualenv first on PATH and none of NOT_INHERITED."""
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    env.update(RAY_DEDUP_LOGS="0", RAY_USAGE_STATS_ENABLED="0", MLFLOW_ENABLE_TELEMETRY="false", **extra)
    return env


def _stat(pid: int) -> Optional[tuple[int, int, str]]:
    """(parent pid, session id, state) of a live process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[3]), fields[0]


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[2] != "Z"


def session(sid: int) -> set[int]:
    """The live processes of the session `sid`, as `pkill -s` finds them (Linux keeps a session's id from
    being reused while a process is in it, so this is safe after its leader is gone)."""
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st and st[1] == sid and st[2] != "Z":
                found.add(int(entry.name))
    return found


def tree(root: int) -> set[int]:
    """`root` and every live descendant of it, plus every process still in the session `root` leads."""
    parents: dict[int, list[int]] = {}
    in_session = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st:
                parents.setdefault(st[0], []).append(int(entry.name))
                if st[1] == root:
                    in_session.add(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(parents.get(pid, []))
    return {p for p in found | in_session if _alive(p)}


def kill_all(*processes: "Process") -> int:
    """SIGKILL at once the groups of `processes`, then every process left of their trees and sessions, and
    wait until none runs; how many there were."""
    pids = {pid for process in processes for pid in tree(process.pid) | session(process.pid)}
    for process in processes:
        process.seen |= pids
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_until(lambda: not any(_alive(p) for p in pids), 30, "SIGKILLed processes gone")
    for process in processes:
        process.proc.poll()
    return len(pids)


class Process:
    """A command in a new session (so its process group id is its pid), its output in a log file."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str], cwd: Optional[Path] = None):
        self.cmd, self.log = cmd, log
        self._out = open(log, "ab")
        self.proc = subprocess.Popen(
            cmd, stdout=self._out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
        self.pid = self.proc.pid
        self.seen: set[int] = {self.pid}  # every process of its tree ever seen: stopped at the end

    def watch(self) -> set[int]:
        self.seen |= tree(self.pid)
        return self.seen

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM to its group and tree, SIGKILL to whatever is left after `grace` seconds."""
        self.watch()
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass
            for pid in self.seen | tree(self.pid):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + wait
            while time.time() < deadline:
                self.proc.poll()
                self.seen |= tree(self.pid)
                if not any(_alive(p) for p in self.seen):
                    break
                time.sleep(0.2)
        self.proc.poll()
        self._out.close()
        left = [p for p in self.seen if _alive(p)]
        assert not left, f"still running after SIGKILL: {left}"


def wait_until(check, timeout: float, what: str, proc: Optional[Process] = None, every: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"{what}: {proc.cmd[0]} exited with {proc.proc.returncode}\n{proc.tail()}")
        try:
            result = check()
        except Exception:  # not up yet
            result = None
        if result:
            return result
        time.sleep(every)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s" + (f"\n{proc.tail()}" if proc else ""))


def http_ok(url: str, headers: Optional[dict] = None) -> bool:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status == 200


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a sqlite backend and artifacts served by the server; with `auth`, its
    basic-auth app, whose admin password is `self.password` (user `admin`)."""

    def __init__(self, root: Path, auth: bool = False):
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.artifacts = root / "artifacts"
        self.auth, self.password = auth, secrets.token_hex(12)
        if auth:
            (root / "basic_auth.ini").write_text(
                f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{root / 'auth.db'}\n"
                "admin_username = admin\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            )
        self.start()

    def start(self) -> None:
        """Start it (again: same port, same store) and wait for /health."""
        cmd = [
            str(Path(VENV_BIN) / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            *(["--app-name", "basic-auth"] if self.auth else []),
        ]
        env = base_env(
            **(
                {
                    "MLFLOW_AUTH_CONFIG_PATH": str(self.root / "basic_auth.ini"),
                    "MLFLOW_AUTH_ADMIN_PASSWORD": self.password,
                    "MLFLOW_FLASK_SERVER_SECRET_KEY": self.password,
                }
                if self.auth
                else {}
            )
        )
        self.process = Process(cmd, self.root / "mlflow-server.log", env, cwd=self.root)
        wait_until(lambda: http_ok(f"{self.uri}/health"), 120, "mlflow server /health", self.process)
        self.process.watch()

    def stop(self) -> None:
        self.process.stop()


class RayCluster:
    """A head and one worker node of `ray start --block`, token auth on, each in a temporary folder of its own.

    The head has `head_cpus` CPUs and the TRAIN_DRIVER slots; the worker node has `worker_cpus` CPUs.
    Like two hosts, the nodes share no temporary folder: where they do (both under /tmp/ray, Ray's
    default on one machine), the second node's runtime-env agent replaces a job's unpacked working
    folder while the job's driver runs in it, and the driver's working directory is gone.

    The faults of a cluster of preemptible machines: `lose_worker` SIGKILLs the worker node and `add_worker`
    brings a replacement (as an autoscaler would); `lose_all` SIGKILLs every node and `start` makes a fresh
    cluster (new ports, new temporary folders) in its place.
    """

    def __init__(self, log_dir: Path, head_cpus: int = 1, worker_cpus: int = 2, driver_slots: int = 2):
        self.log_dir, self.head_cpus, self.worker_cpus = log_dir, head_cpus, worker_cpus
        self.driver_slots = driver_slots
        self.token = secrets.token_hex(32)
        self.temp_dirs: list[Path] = []  # every node's, removed by `stop`
        self.lost: list[Process] = []  # the nodes SIGKILLed by `lose_worker` and `lose_all`
        self.lost_node_ids: set[str] = set()
        self.start()

    def start(self) -> None:
        """Start the head and a worker node."""
        # A short root: Ray's unix sockets live under it (at most 107 characters a path).
        self.temp_dir = self._temp_dir()  # the head's
        self.port, self.dashboard_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        # RAY_ADDRESS on the nodes too: Ray's own actors that look the cluster up without an address (Train's
        # PlacementGroupCleaner) would otherwise fail where another Ray runs on this machine.
        self.env = base_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, RAY_ADDRESS=self.address)
        self.head = self._node(
            "head",
            "--head",
            "--port",
            str(self.port),
            "--num-cpus",
            str(self.head_cpus),
            "--resources",
            json.dumps({"TRAIN_DRIVER": self.driver_slots}),
            "--include-dashboard",
            "true",
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(self.dashboard_port),
            "--ray-client-server-port",
            str(free_port()),
            "--temp-dir",
            str(self.temp_dir),
        )
        self.worker: Optional[Process] = None
        try:
            wait_until(
                lambda: http_ok(f"{self.dashboard_url}/api/version", self.auth_headers()),
                120,
                "Ray head dashboard",
                self.head,
            )
            self.head_node_id = wait_until(self._head_node, 120, "Ray head node", self.head)
            self.add_worker()
        except BaseException:
            self.stop()
            raise
        self.watch()

    def _head_node(self) -> Optional[str]:
        return next((n["node_id"] for n in self.nodes() if n["is_head_node"]), None)

    def _temp_dir(self) -> Path:
        folder = Path(tempfile.mkdtemp(prefix="dkray-", dir="/tmp"))
        self.temp_dirs.append(folder)
        return folder

    def _node(self, name: str, *args: str) -> Process:
        cmd = [str(Path(VENV_BIN) / "ray"), "start", "--node-ip-address", "127.0.0.1", *args]
        cmd += ["--dashboard-agent-listen-port", str(free_port()), "--block"]
        cmd += ["--object-store-memory", str(200 * 1024**2), "--disable-usage-stats"]
        return Process(cmd, self.log_dir / f"ray-{name}-{len(self.temp_dirs)}.log", self.env)

    def add_worker(self, tries: int = 3) -> None:
        """Start a worker node and wait until it and the head are the live nodes: a replacement for a lost node
        counts once Ray has declared the lost one dead. `ray start` gives its raylet 30 s to register, which an
        overloaded machine can miss: then it is started again, up to `tries` times."""

        def joined() -> Optional[str]:
            alive = {n["node_id"] for n in self.nodes()}
            new = alive - {self.head_node_id} - self.lost_node_ids
            return new.pop() if len(alive) == 2 and len(new) == 1 else None

        for attempt in range(1, tries + 1):
            self.worker_temp_dir = self._temp_dir()  # the live worker node's
            cpus, folder = str(self.worker_cpus), str(self.worker_temp_dir)
            self.worker = self._node("worker", "--address", self.address, "--num-cpus", cpus, "--temp-dir", folder)
            try:
                self.worker_node_id = wait_until(joined, 180, "Ray worker node", self.worker, every=1)
                return
            except RuntimeError:  # it exited
                self.worker.stop(grace=5)
                if attempt == tries:
                    raise

    def worker_processes(self) -> set[int]:
        """Every live process of the worker node: its `ray start`, raylet, object store, agents and workers."""
        return tree(self.worker.pid) | session(self.worker.pid) if self.worker is not None else set()

    def lose_worker(self) -> int:
        """SIGKILL every process of the worker node at once, as when its machine vanishes; how many there were."""
        killed = kill_all(self.worker)
        self.lost_node_ids.add(self.worker_node_id)
        self.lost.append(self.worker)
        self.worker = None
        return killed

    def lose_all(self, *others: Process) -> int:
        """SIGKILL every process of every node, and of `others` (the driver), at once; how many there were."""
        nodes = [p for p in (self.worker, self.head) if p is not None]
        killed = kill_all(*others, *nodes)
        self.lost += nodes
        self.worker = None
        return killed

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def state(self, what: str, **kwargs) -> list[dict]:
        """`ray.util.state.list_<what>` against the dashboard, in a client process with the token."""
        code = (
            "import json, sys\nfrom ray.util import state\n"
            f"rows = state.list_{what}(address={self.dashboard_url!r}, limit=10000, **json.loads(sys.argv[1]))\n"
            "print(json.dumps([r.__dict__ if hasattr(r, '__dict__') else dict(r) for r in rows], default=str))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(kwargs)], env=self.env, capture_output=True, text=True, timeout=120
        )
        if out.returncode != 0:
            raise RuntimeError(f"list_{what}: {out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def nodes(self) -> list[dict]:
        return [n for n in self.state("nodes") if n["state"] == "ALIVE"]

    def watch(self) -> None:
        for process in (self.head, self.worker):
            if process is not None:
                process.watch()

    def stop(self) -> None:
        try:
            for process in (*self.lost, self.worker):
                if process is not None and process is not self.head:
                    process.stop(grace=5)
        finally:
            self.head.stop(grace=5)  # its gcs_server takes longer than that to end on SIGTERM: killed
            for folder in self.temp_dirs:
                shutil.rmtree(folder, ignore_errors=True)


def run_sweep_process(spec: Path, cwd: Path, timeout: float = 900, replace_cwd: bool = False) -> str:
    """`python -m orchestrator.sweep SPEC` in a process of its own (its own local Ray, gone with it, so
    nothing it leaves can starve a later test's Ray); its output, after checking it exited 0.

    With `replace_cwd`, `cwd` is deleted and made again once the sweep has started, as a Ray job's working
    folder is when it is unpacked again: the sweep must not need the folder it was started in."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.sweep", str(spec)],
            cwd=cwd,
            env=base_env(),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if replace_cwd and line.startswith("watch it"):
                shutil.rmtree(cwd)
                cwd.mkdir()
        proc.wait()
        watchdog.cancel()
        err.seek(0)
        out = "".join(lines)
        assert proc.returncode == 0, out[-3000:] + err.read()[-3000:]
    return out
