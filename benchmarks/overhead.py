"""Where a trial's wall time goes outside its epochs: a few short trials of a shipped spec, phase by phase.

Runs `python -m orchestrator.sweep SPEC` (one trial at a time by default, FIFO, every trial to its last epoch) in
a fresh folder with `DUALKD_TRACE` set, so that the driver, the trial actors and rank 0 of the workers write
their phases' timestamps (`trainables.trace`). Per trial and as medians it prints:
  start      Tune free to start the trial (its start, or the trial before ended) -> the trainable running
  workers    the trainable -> rank 0 in the loop (Train controller, worker group, process group)
  setup      the loop -> the first epoch (data, students, teacher logits, checkpoint restore)
  epochs     the epochs' steps and validation
  reports    the reports and checkpoints after each epoch
  teardown   the last report -> Tune seeing the trial end
  overhead   the trial's wall minus its epochs
Then the same epochs in this process without Ray workers (Ray Train's local mode, the teacher from the sweep's
cache): the limit. The ratio wall / limit is measured in one run, so it holds on a noisy machine. Usage:
    python benchmarks/overhead.py [SPEC] [--trials 3] [--epochs 2] [--workers 1] [--concurrent 1] [--set k=v] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("start", "workers", "setup", "epochs", "reports", "teardown", "overhead", "wall")


def phases(events: list[dict]) -> dict[str, float]:
    """The phase durations (seconds) of one trial from its trace events."""
    at = defaultdict(list)
    for e in sorted(events, key=lambda e: e["t"]):
        at[e["event"]].append(e["t"])
    epochs = sum(end - start for start, end in zip(at["epoch_start"], at["epoch_end"]))
    reports = sum(done - end for end, done in zip(at["epoch_end"], at["reported"]))
    out = {"epochs": epochs, "reports": reports}
    if at["worker_start"] and at["epoch_start"]:
        out["setup"] = at["epoch_start"][0] - at["worker_start"][0]
    if at["trial_start"] and at["trial_end"]:
        out["start"] = at["trainable_start"][0] - at["requested"][0]
        out["workers"] = at["worker_start"][0] - at["trainable_start"][0]
        out["teardown"] = at["trial_end"][-1] - at["reported"][-1]
        out["wall"] = at["trial_end"][-1] - at["requested"][0]
        out["overhead"] = out["wall"] - epochs
    return out


def read_trace(path: Path) -> dict[str, list[dict]]:
    """The events of each trial; a trial's start is from Tune's start or the end of the trial before it, the
    latest of those (Tune calls on_trial_start once the trial's actor runs: its start comes before)."""
    events = [json.loads(line) for line in path.read_text().splitlines()]
    runs = defaultdict(list)
    free = [e["t"] for e in events if e["event"] in ("tune_start", "trial_end")]
    for event in events:
        if event["event"] == "trial_start":
            waited = max((t for t in free if t <= event["t"]), default=event["t"])
            runs[event["run"]].append({"event": "requested", "t": waited})
        if event["run"]:
            runs[event["run"]].append(event)
    return runs


def run_sweep(spec: str, folder: Path, args) -> tuple[dict[str, dict], float]:
    """The sweep's trials' phases, and the sweep's wall time (teacher included)."""
    trace = folder / "trace.jsonl"
    sets = [
        f"tune.num_trials={args.trials}",
        f"students.epochs={args.epochs}",
        f"resources.num_workers={args.workers}",
        f"tune.max_concurrent_trials={args.concurrent}",
        "tune.scheduler=fifo",
        *args.set,
    ]
    command = [sys.executable, "-m", "orchestrator.sweep", spec, *[a for s in sets for a in ("--set", s)]]
    env = {**os.environ, "DUALKD_TRACE": str(trace), "PYTHONPATH": str(ROOT)}
    started = time.time()
    with open(folder / "sweep.log", "w") as log:
        done = subprocess.run(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.time() - started
    if done.returncode != 0:
        tail = (folder / "sweep.log").read_text()[-3000:]
        sys.exit(f"the sweep failed (exit {done.returncode}), its log is {folder / 'sweep.log'}:\n{tail}")
    return {run: phases(events) for run, events in read_trace(trace).items()}, wall


def run_local(folder: Path) -> dict[str, float]:
    """The best trial's recipe run in this process with Ray Train's local mode: the epochs without Ray workers."""
    os.chdir(folder)
    os.environ["DUALKD_TRACE"] = str(folder / "local-trace.jsonl")
    import ray.train
    import torch
    from ray.train.torch import TorchTrainer

    from orchestrator.execution import start_ray
    from orchestrator.spec import load_spec
    from orchestrator.teacher import prepare_teacher_and_banks
    from trainables.loop import train_loop_per_worker

    spec = load_spec(next(folder.glob("runs/sweeps/*/best.yaml")))
    start_ray()  # a Ray of its own (local mode still asks Ray for its storage context)
    run_cfg, banks = prepare_teacher_and_banks(spec, [spec.seed])  # the sweep's teacher: a cache hit
    run_cfg = run_cfg.model_copy(update={"bank_dir": banks.get(spec.seed)})
    torch.set_num_threads(max(1, int(spec.resources.cpus_per_worker)))  # as a worker of the sweep has
    started = time.time()
    TorchTrainer(
        train_loop_per_worker,
        train_loop_config=run_cfg.model_dump(),
        scaling_config=ray.train.ScalingConfig(num_workers=0),
        run_config=ray.train.RunConfig(name="local", storage_path=str(folder / "local")),
    ).fit()
    out = phases(read_trace(folder / "local-trace.jsonl")["local"])
    out["wall"] = time.time() - started
    return out


def row(name: str, figures: dict[str, float]) -> str:
    cells = "".join(f"{figures[p]:>10.1f}" if p in figures else f"{'':>10}" for p in PHASES)
    return f"{name:<12}{cells}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("spec", nargs="?", default=str(ROOT / "search_spaces" / "smoke.yaml"))
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--concurrent", type=int, default=1, help="trials at once (1: each trial's phases alone)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more settings of the spec")
    p.add_argument("--keep", action="store_true", help="keep the sweep's folder (its trace, runs and MLflow store)")
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="overhead-"))
    trials, sweep_wall = run_sweep(str(Path(args.spec).resolve()), folder, args)
    local = run_local(folder)

    print(f"\n{Path(args.spec).name}: {args.trials} trials x {args.epochs} epochs, {args.workers} worker(s) per trial,")
    kept = f" (folder {folder})" if args.keep else ""
    print(f"{args.concurrent} at a time; seconds per phase{kept}\n")
    print(f"{'trial':<12}" + "".join(f"{p:>10}" for p in PHASES))
    complete = {run: f for run, f in trials.items() if "wall" in f}  # the trials (the teacher is no trial)
    for run, figures in sorted(complete.items(), key=lambda item: item[1]["wall"]):
        print(row(run, figures))
    complete = list(complete.values())
    median = {ph: statistics.median(f[ph] for f in complete) for ph in PHASES}
    print(row("median", median))
    print(row("no Ray", local))
    print(
        f"\nmedian per-trial overhead (wall minus epochs): {median['overhead']:.1f} s; "
        f"median trial wall / the same epochs without Ray: {median['wall'] / max(local['epochs'], 1e-9):.2f}x; "
        f"the sweep took {sweep_wall:.0f} s (teacher included)"
    )
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
