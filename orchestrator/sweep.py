"""`python -m orchestrator.sweep SPEC.yaml [--set k=v] [--address A] [--resume] [--dry-run]`.

Ray Tune searches the spec's `search` section with Optuna (its study stored in the sweep folder),
ASHA stops weak trials, each trial is one TorchTrainer, and MLflow gets a parent run with one nested
run per trial. The teacher is prepared once, before any trial.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional


from orchestrator.cli import run_main
from orchestrator.spec import Spec, SpecError, load_spec



def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m orchestrator.sweep", description=__doc__.splitlines()[0])
    p.add_argument("spec", help="a YAML spec, e.g. search_spaces/peer.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set tune.num_trials=4 (repeatable)")
    p.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the spec's, else sqlite:///mlflow.db)")
    p.add_argument("--resume", action="store_true", help="continue the newest interrupted sweep of this spec")
    p.add_argument("--dry-run", action="store_true", help="validate the spec and print the plan; start nothing")
    return p.parse_args(argv)


def sweeps_root(spec: Spec) -> Path:
    return spec.storage_path / "sweeps"


def new_sweep_folder(spec: Spec) -> Path:
    return sweeps_root(spec) / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def latest_sweep_folder(spec: Spec) -> Path:
    """The newest sweep of this spec's name: what --resume continues."""
    found = sorted(p for p in sweeps_root(spec).glob(f"{spec.name}-*") if p.is_dir())
    if not found:
        raise SpecError(f"no sweep named {spec.name!r} under {sweeps_root(spec)} to resume: run without --resume")
    return found[-1]


def describe_plan(spec: Spec, folder: Path, uri: str) -> str:
    r, t = spec.resources, spec.tune
    per_trial = f"{r.num_workers} worker(s) x {r.cpus_per_worker} CPU" + (
        f" + {r.gpus_per_worker} GPU" if r.use_gpu else "")
    space = "\n".join(f"    {k}: {v.model_dump(exclude_none=True)}" for k, v in spec.search.items()) or "    (none)"
    scheduler = (f"ASHA on '{t.metric}' ({t.mode}), grace {t.grace_period} epochs, reduction {t.reduction_factor}"
                 if t.scheduler == "asha" else "FIFO (every trial runs all epochs)")
    return "\n".join([
        f"sweep {spec.name}: method {spec.loss.method}, students {' + '.join(spec.students.archs)}, "
        f"teacher {spec.teacher.arch}",
        f"  data: {spec.data.name} at {spec.data.image_size} px" + (f" from {spec.data.root}" if spec.data.root else ""),
        f"  trials: {t.num_trials} (Optuna TPE, seed {t.seed}), at most {t.max_concurrent_trials} at once, "
        f"{spec.students.epochs} epochs each",
        f"  scheduler: {scheduler}",
        f"  per trial: {per_trial}",
        "  search:", space,
        f"  outputs: {folder}",
        f"  teacher cache: {spec.storage_path / 'teachers'}",
        f"  MLflow: {uri}, experiment '{spec.mlflow.experiment or spec.name}'",
    ])


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    spec = load_spec(args.spec, args.overrides)
    if not spec.search:
        raise SpecError(f"{args.spec}: the search section is empty: add settings to search, "
                        "or use python -m orchestrator.train for one run")
    spec.run_config()  # paths and variables are checked before anything starts
    from orchestrator.tracking import tracking_uri

    uri = tracking_uri(args.tracking_uri or spec.mlflow.tracking_uri)
    folder = latest_sweep_folder(spec) if args.resume else new_sweep_folder(spec)
    print(describe_plan(spec, folder, uri))
    if args.dry_run:
        return 0
    from orchestrator.run_sweep import run_sweep  # Ray, Tune and MLflow load only when the sweep runs

    return run_sweep(spec, folder, uri, args.spec, address=args.address, resume=args.resume)


if __name__ == "__main__":
    run_main(main)
