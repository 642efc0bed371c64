"""One command that measures a GPU (or, with --tiny, a CPU) for this project; writes JSON and a Markdown table.

    python benchmarks/device_check.py                 # one H100/H200-class GPU: under 10 minutes
    python benchmarks/device_check.py --tiny          # the same parts at toy sizes on a CPU (the test runs it)

Parts, each timed on its own, its peak GPU memory recorded, and a failure recorded as one line while
the next part runs (exit status 1 when any failed):
- `data`: a tree of ImageNet-sized JPEGs (500 x 375 px), resized to a 256 px short side by the
  function behind `python -m orchestrator.prepare_imagenet100 --resize`;
- `step_eager`, `step_compiled`: the dual-student step of `benchmarks/throughput.py` (bf16 autocast
  and channels_last on a GPU), live ResNet-50 teacher against the soft-label bank;
- `decode_cpu`, `decode_gpu`: the input pipeline of `benchmarks/throughput.py`, PIL in loader workers
  against nvJPEG (`torchvision.io.decode_jpeg` on CUDA, as `data.decode: gpu` runs it);
- `sweep`: `python -m orchestrator.sweep` on `search_spaces/imagenet100/peer.yaml`, 2 trials of one
  epoch on the generated tree (teacher trained one epoch, bank on), its end-to-end images/s read from
  MLflow, its storage and MLflow store in OUT/sweep (replaced on each run, so the teacher is trained again).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from benchmarks.throughput import input_rate, step_rates, write_jpeg_tree  # noqa: E402
from orchestrator.data_tools import resize_files  # noqa: E402
from trainables.failures import one_line  # noqa: E402

PEER_SPEC = ROOT / "search_spaces" / "imagenet100" / "peer.yaml"
SWEEP_NAME = "device-check"
SWEEP_TRIALS = 2
SHORT_SIDE = 256  # what `prepare_imagenet100 --resize 256` writes
PARTS = ("data", "step_eager", "step_compiled", "decode_cpu", "decode_gpu", "sweep")
# Settings of this shell that would send the sweep to another Ray, store or MLflow.
NOT_INHERITED = ("RAY_ADDRESS", "DUALKD_STORAGE", "MLFLOW_TRACKING_URI")


class Skipped(Exception):
    """A part that cannot run here (no GPU); recorded with its reason, not as a failure."""


# ----- sizes -----

# One H100/H200: about 5 minutes in all. 100 classes x 10 images feed the decode and the sweep.
FULL = dict(
    image_size=224,
    batch_size=256,
    steps=20,
    warmup=3,
    compile_backend="inductor",
    classes=100,
    images_per_class=10,
    loader_workers=min(16, os.cpu_count() or 1),
    decode_repeat=10,
    sweep_batch_size=128,
    sweep_loader_workers=8,
    sweep_cpus=min(8, os.cpu_count() or 1),
    sweep_concurrent=1,
)
# The same code paths on a small CPU. `eager`: torch.compile's graph capture without Inductor's code
# generation, which alone takes minutes on 2 cores.
TINY = dict(
    image_size=32,
    batch_size=4,
    steps=2,
    warmup=1,
    compile_backend="eager",
    classes=4,
    images_per_class=4,
    loader_workers=min(2, os.cpu_count() or 1),
    decode_repeat=2,
    sweep_batch_size=8,
    sweep_loader_workers=0,
    sweep_cpus=1,
    sweep_concurrent=2,
)


# ----- environment -----


def version(package: str) -> Optional[str]:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """The card and the versions the figures belong to; `gpu` is "cpu" without CUDA."""
    env = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torchvision": version("torchvision"),
        "ray": version("ray"),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "gpu": "cpu",
        "gpu_memory_gib": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), gpus=torch.cuda.device_count())
    return env


# ----- running parts -----


def peak_memory_mib(device: torch.device) -> Optional[float]:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def run_part(name: str, fn: Callable[[], dict], device: torch.device, deadline: float) -> dict:
    """`fn`'s figures with status, seconds and peak GPU memory; a failure or skip as one line, never raised."""
    if time.time() > deadline:
        return {"status": "failed", "error": "not started: --budget-s spent", "seconds": 0.0, "peak_gpu_mib": None}
    print(f"[{name}] ...", flush=True)
    started = time.perf_counter()
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        record = {"status": "ok", **fn()}
        record.setdefault("peak_gpu_mib", peak_memory_mib(device))
    except Skipped as why:
        record = {"status": "skipped", "reason": str(why), "peak_gpu_mib": None}
    except Exception as err:  # noqa: BLE001 - any failure is recorded and the next part runs
        record = {"status": "failed", "error": f"{type(err).__name__}: {one_line(err)}", "peak_gpu_mib": None}
    record["seconds"] = round(time.perf_counter() - started, 2)
    print(
        f"[{name}] {record['status']} in {record['seconds']:.1f} s "
        f"{record.get('error') or record.get('reason') or record.get('images_per_s', '')}",
        flush=True,
    )
    return record


# ----- data -----


def make_tree(work: Path, size: dict) -> Path:
    """ImageNet-sized JPEGs, then their 256 px copies as `prepare_imagenet100 --resize 256` writes them."""
    source = write_jpeg_tree(work / "source", size["classes"] * size["images_per_class"], size["classes"])
    resized = work / "resized"
    pairs = [(path, resized / path.relative_to(source)) for path in sorted(source.rglob("*.JPEG"))]
    unreadable = resize_files(pairs, SHORT_SIDE)
    if unreadable:
        raise RuntimeError(f"{len(unreadable)} generated images could not be resized (first: {unreadable[0]})")
    shutil.rmtree(source)
    return resized


def data_part(work: Path, size: dict, tree: dict) -> dict:
    """The tree the decode and sweep parts read (its folder put in `tree`), and what it holds."""
    tree["root"] = make_tree(work, size)
    files = list(tree["root"].rglob("*.JPEG"))
    return {
        "images": len(files),
        "classes": size["classes"],
        "short_side_px": SHORT_SIDE,
        "mean_jpeg_kib": round(sum(f.stat().st_size for f in files) / len(files) / 1024, 1),
    }


def need_tree(tree: dict) -> Path:
    if "root" not in tree:
        raise RuntimeError("no generated tree: the data part failed")
    return tree["root"]


# ----- step -----


def precision(device: torch.device) -> str:
    return "bf16 autocast, channels_last" if device.type == "cuda" else "fp32, contiguous (CPU)"


def step_part(size: dict, device: torch.device, compiled: bool) -> dict:
    """The dual step of benchmarks/throughput.py: live ResNet-50 teacher against bank logits."""
    args = SimpleNamespace(
        batch_size=size["batch_size"],
        image_size=size["image_size"],
        classes=100,
        teacher="resnet50",
        compile=compiled,
        warmup=size["warmup"],
        steps=size["steps"],
    )
    rates = step_rates(args, device, compiled_modes=[compiled], compile_backend=size["compile_backend"])
    return {
        "images_per_s": {name.split(", ", 1)[1]: round(rate, 1) for name, rate in rates.items()},
        "precision": precision(device),
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        **({"compile_backend": size["compile_backend"]} if compiled else {}),
    }


# ----- decode -----


def decode_part(root: Path, size: dict, device: torch.device, on_device: bool) -> dict:
    """PIL in loader workers (CPU), or nvJPEG on the GPU with the workers only reading bytes."""
    if on_device and device.type != "cuda":
        raise Skipped("no CUDA device: nvJPEG decoding (decode_jpeg on cuda) needs a GPU")
    args = SimpleNamespace(
        image_size=size["image_size"], batch_size=size["batch_size"], loader_workers=size["loader_workers"]
    )
    rate = input_rate(
        root, args, device if on_device else torch.device("cpu"), raw=on_device, repeat=size["decode_repeat"]
    )
    label = "nvJPEG on cuda + crop" if on_device else f"PIL + crop, {args.loader_workers} loader workers"
    return {
        "images_per_s": {label: round(rate, 1)},
        "loader_workers": args.loader_workers,
        "passes": size["decode_repeat"],
        "image_size": args.image_size,
    }


# ----- sweep -----


def sweep_overrides(root: Path, out: Path, size: dict, on_gpu: bool) -> list[str]:
    """`--set` values that turn peer.yaml into 2 one-epoch trials on the generated tree, stored under `out`."""
    values = {
        "name": SWEEP_NAME,
        "storage": str(out / "storage"),
        "mlflow.experiment": SWEEP_NAME,
        "data.root": str(root),
        "data.image_size": size["image_size"],
        "data.decode": "gpu" if on_gpu else "cpu",
        "data.loader_workers": size["sweep_loader_workers"],
        "teacher.epochs": 1,
        "teacher.warmup_epochs": 0,
        "teacher.batch_size": size["sweep_batch_size"],
        "teacher.cache_soft_labels": True,
        "students.epochs": 1,
        "students.warmup_epochs": 0,
        "students.batch_size": size["sweep_batch_size"],
        "tune.num_trials": SWEEP_TRIALS,
        "tune.scheduler": "fifo",
        "tune.max_concurrent_trials": size["sweep_concurrent"],
        "resources.num_workers": 1,
        "resources.use_gpu": on_gpu,
        "resources.gpus_per_worker": 1 if on_gpu else 0,
        "resources.cpus_per_worker": size["sweep_cpus"],
        "resources.max_failures": 0,
    }
    return [f"{key}={json.dumps(value) if isinstance(value, bool) else value}" for key, value in values.items()]


def sweep_env(ray_tmp: str) -> dict:
    """This environment for a sweep with a local Ray of its own (own Ray folder: it joins no `ray start` cluster)."""
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env.update(RAY_TMPDIR=ray_tmp, RAY_USAGE_STATS_ENABLED="0", MLFLOW_ENABLE_TELEMETRY="false", RAY_DEDUP_LOGS="0")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def run_command(cmd: list[str], log: Path, env: dict, timeout: float) -> int:
    """Run `cmd` in a session of its own; on timeout stop its process group (its local Ray with it)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=grace)
                    break
            raise TimeoutError(f"the sweep ran past {timeout:.0f} s (--budget-s); see {log}") from None


def last_line(log: Path) -> str:
    """The log's last non-empty line: usually the error that stopped the command."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


class DeviceMemory:
    """Peak device-wide GPU memory in use above the start, sampled: the sweep allocates in other processes."""

    def __init__(self, every_s: float = 0.5):
        self.every_s, self.peak, self._stop = every_s, 0, threading.Event()

    def used(self) -> int:
        free, total = torch.cuda.mem_get_info()
        return total - free

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, self.used() - self.base)

    def __enter__(self):
        self.base = self.used()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def mib(self) -> float:
        return round(self.peak / 2**20, 1)


def trial_metrics(uri: str) -> list[dict]:
    """Each finished trial's last `images_per_s` and `teacher_forwards`, from the sweep's MLflow runs."""
    from mlflow import MlflowClient

    from orchestrator.tracking import PARENT_TAG

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(SWEEP_NAME)
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return [
        {key: r.data.metrics.get(key) for key in ("images_per_s", "teacher_forwards")}
        for r in runs
        if r.data.tags.get(PARENT_TAG)
    ]


def results_rows(storage: Path) -> int:
    """Rows of the sweep's results.csv (its table of trials)."""
    import pandas as pd

    tables = sorted((storage / "sweeps").glob(f"{SWEEP_NAME}-*/results.csv"))
    if not tables:
        raise RuntimeError(f"no results.csv under {storage / 'sweeps'}: the sweep did not finish")
    return len(pd.read_csv(tables[-1]))


def sweep_part(root: Path, out: Path, size: dict, on_gpu: bool, deadline: float) -> dict:
    """The real sweep as a user runs it; a fresh storage each time, so the teacher and bank are in the wall time."""
    folder = out / "sweep"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "orchestrator.sweep", str(PEER_SPEC), "--tracking-uri", uri]
    for override in sweep_overrides(root, folder, size, on_gpu):
        cmd += ["--set", override]
    memory = DeviceMemory() if on_gpu else contextlib.nullcontext()
    ray_tmp = tempfile.mkdtemp(prefix="dc-ray-")  # short: Ray's socket paths must fit 107 characters
    started = time.perf_counter()
    try:
        with memory:
            code = run_command(cmd, folder / "sweep.log", sweep_env(ray_tmp), timeout=max(30.0, deadline - time.time()))
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    wall = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(
            f"the sweep exited with status {code} ({last_line(folder / 'sweep.log')}); see {folder / 'sweep.log'}"
        )
    trials = trial_metrics(uri)
    rates = [t["images_per_s"] for t in trials if t["images_per_s"]]
    if len(trials) != SWEEP_TRIALS or len(rates) != SWEEP_TRIALS:
        raise RuntimeError(f"{len(rates)} of {SWEEP_TRIALS} trials reported images_per_s in MLflow")
    return {
        "images_per_s": {
            **{f"trial {i + 1}, end to end": round(r, 1) for i, r in enumerate(rates)},
            "mean of trials": round(sum(rates) / len(rates), 1),
        },
        "trials": len(trials),
        "results_csv_rows": results_rows(folder / "storage"),
        "teacher_forwards": [t["teacher_forwards"] for t in trials],
        "wall_s": round(wall, 1),
        "peak_gpu_mib": memory.mib() if on_gpu else None,
        "peak_gpu_note": "device-wide memory in use, sampled every 0.5 s" if on_gpu else None,
        "decode": "gpu" if on_gpu else "cpu",
        "tracking_uri": uri,
        "log": str(folder / "sweep.log"),
    }


# ----- report -----


def figure(value) -> str:
    return "-" if value is None else f"{value:,.1f}"


def markdown(report: dict) -> str:
    """The report as a heading, the environment line and one table row per figure (or per part without one)."""
    env = report["environment"]
    lines = [
        f"# Device check: {env['gpu']} ({report['mode']})",
        "",
        f"{env['date']}; python {env['python']}, torch {env['torch']}, torchvision {env['torchvision']}, "
        f"ray {env['ray']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}"
        + (f", {env['gpu_memory_gib']} GiB" if env.get("gpu_memory_gib") else "")
        + f", {env['cpus']} CPUs",
        "",
        "| part | figure | images/s | peak GPU MiB | part s | status |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name, part in report["parts"].items():
        status = part["status"] + (f": {part.get('error') or part.get('reason')}" if part["status"] != "ok" else "")
        for label, rate in (part.get("images_per_s") or {"": None}).items():
            lines.append(
                f"| {name} | {label} | {figure(rate)} | {figure(part.get('peak_gpu_mib'))} | "
                f"{part['seconds']:.1f} | {status.replace('|', '/')} |"
            )
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "device_check.json", out / "device_check.md"
    paths[0].write_text(json.dumps(report, indent=2))
    paths[1].write_text(markdown(report))
    return paths


# ----- main -----


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="toy sizes on whatever device there is (the CPU test)")
    p.add_argument(
        "--out",
        default="device_check",
        help="folder for device_check.json and .md, and the sweep's storage and MLflow store",
    )
    p.add_argument(
        "--budget-s", type=float, default=540.0, help="parts not started by then fail; the sweep is stopped at it"
    )
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of: {', '.join(PARTS)}")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    args.parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    if not set(args.parts) <= set(PARTS):
        p.error(f"--parts: unknown {sorted(set(args.parts) - set(PARTS))}; use {', '.join(PARTS)}")
    return args


def part_functions(work: Path, out: Path, size: dict, device: torch.device, deadline: float) -> dict:
    """name -> the zero-argument function that measures it; `tree` carries the data part's folder to the others."""
    tree: dict = {}
    on_gpu = device.type == "cuda"
    return {
        "data": lambda: data_part(work, size, tree),
        "step_eager": lambda: step_part(size, device, compiled=False),
        "step_compiled": lambda: step_part(size, device, compiled=True),
        "decode_cpu": lambda: decode_part(need_tree(tree), size, device, on_device=False),
        "decode_gpu": lambda: decode_part(need_tree(tree), size, device, on_device=True),
        "sweep": lambda: sweep_part(need_tree(tree), out, size, on_gpu, deadline),
    }


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    started, device, out = time.time(), torch.device(args.device), Path(args.out).resolve()
    size = TINY if args.tiny else FULL
    torch.manual_seed(0)
    report = {
        "schema": 1,
        "mode": "tiny" if args.tiny else "full",
        "environment": environment(),
        "settings": {**size, "device": str(device), "precision": precision(device), "budget_s": args.budget_s},
        "parts": {},
    }
    print(f"device check on {report['environment']['gpu']}, {report['mode']} sizes, out {out}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="device-check-") as tmp:
        functions = part_functions(Path(tmp), out, size, device, started + args.budget_s)
        for name in [p for p in PARTS if p in args.parts]:
            report["parts"][name] = run_part(name, functions[name], device, started + args.budget_s)
    report["failed"] = [name for name, part in report["parts"].items() if part["status"] == "failed"]
    report["total_s"] = round(time.time() - started, 1)
    json_path, md_path = write_report(report, out)
    print("\n" + markdown(report))
    print(f"written: {json_path}, {md_path} ({report['total_s']:.0f} s)")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
