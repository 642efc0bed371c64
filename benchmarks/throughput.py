"""Images/s of the input pipeline, of the dual-student step and of the real loop; prints a table and writes JSON.

Three sections, each measured against its baseline in the same run (so the ratios hold on a noisy
machine):
- `input`: PIL decoding and augmentation in loader workers against file bytes decoded and augmented
  on the device (`data.decode: gpu`), on a generated tree of ImageNet-sized JPEGs (500 x 375 px);
- `step`: the dual-student step alone on device tensors: live teacher against bank logits, eager
  against compiled students (bf16 autocast and channels_last on a GPU, as the loop runs them), the
  variants taking turns step by step, each one's median step;
- `e2e`: the real loop through one Ray Train worker on that tree: the live teacher against the
  soft-label bank (`teacher_forwards` shows which ran), the last epoch's images/s of each.
Small sizes run on a CPU (a test does); full size on a GPU:
    python benchmarks/throughput.py --image-size 224 --batch-size 256 --images 5000 --loader-workers 16
    python benchmarks/throughput.py --image-size 32 --batch-size 32 --sections e2e      # the CPU bank figure
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from trainables.config import DataConfig  # noqa: E402
from trainables.data import build_datasets, collate_skipping_none  # noqa: E402
from trainables.decode import device_batch  # noqa: E402
from trainables.losses import students_loss  # noqa: E402
from trainables.methods import resolve_method
from trainables.models import build_model  # noqa: E402

STUDENTS = ("resnet18", "mobilenet_v2")
SETTINGS = {
    "method": "ua_dual",
    "temperature": 4.0,
    "alpha": 0.5,
    "beta": 1.0,
    "weighting": "entropy",
    "threshold": None,
    "peer_weighting": "uniform",
}


def write_jpeg_tree(root: Path, images: int, classes: int, size=(500, 375), seed: int = 0) -> Path:
    """train/ with `images` JPEGs (quality 90) of smooth shapes and grain, val/ with one per class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = size
    for split, count in (("train", images), ("val", classes)):
        for i in range(count):
            folder = root / split / f"c{i % classes:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            coarse = rng.uniform(0, 255, (height // 25 + 1, width // 25 + 1, 3)).astype(np.uint8)
            image = np.asarray(
                Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32
            )
            image += rng.normal(0, 12, image.shape)
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f"{i:06d}.JPEG", quality=90)
    return root


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def input_rate(root: Path, args, device: torch.device, raw: bool, repeat: int = 1) -> float:
    """Images/s of `repeat` passes over the training tree: PIL items in loader workers, or bytes decoded on `device`.

    The passes are one loader over the repeated tree, so the workers start once (a small tree then
    measures decoding rather than worker start-up).
    """
    train, _, _ = build_datasets(
        DataConfig(name="imagefolder", root=str(root), image_size=args.image_size), 0, raw_bytes=raw
    )
    items = torch.utils.data.ConcatDataset([train] * repeat) if repeat > 1 else train
    loader = torch.utils.data.DataLoader(
        items,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.loader_workers,
        collate_fn=collate_skipping_none,
        pin_memory=device.type == "cuda" and not raw,
    )
    seen, started = 0, time.perf_counter()
    for batch in loader:
        if raw:
            batch = device_batch(batch, train, device, args.image_size)
        images = batch[0].to(device, non_blocking=True)
        seen += images.shape[0]
    sync(device)
    return seen / (time.perf_counter() - started)


def input_rates(root: Path, args, device: torch.device) -> dict:
    """Images/s of one pass over the training tree: PIL items against bytes decoded on `device`."""
    return {
        "input: PIL in loader workers": input_rate(root, args, device, raw=False),
        f"input: decode on {device.type}": input_rate(root, args, device, raw=True),
    }


def step_rates(args, device: torch.device, compiled_modes=None, compile_backend: str = "inductor") -> dict:
    """Images/s of the dual step on device tensors: live teacher or bank logits, eager or compiled.

    `compiled_modes`: which students to time, e.g. [True] for compiled only (default: eager, and
    compiled too with `args.compile`). `compile_backend`: torch.compile's; "aot_eager" traces the same
    graphs without generating code, for a quick check on a small CPU.
    """
    on_gpu = device.type == "cuda"
    memory_format = torch.channels_last if on_gpu else torch.contiguous_format
    autocast = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16))
        if on_gpu
        else (lambda: torch.autocast("cpu", enabled=False))
    )
    settings = resolve_method(SETTINGS)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device).to(
        memory_format=memory_format
    )
    labels = torch.randint(0, args.classes, (args.batch_size,), device=device)
    bank_logits = (
        torch.randn(args.batch_size, args.classes).half().pin_memory()
        if on_gpu
        else torch.randn(args.batch_size, args.classes).half()
    )
    teacher = build_model(args.teacher, args.classes, args.image_size).to(device, memory_format=memory_format)
    teacher.eval().requires_grad_(False)
    variants = {}
    if compiled_modes is None:
        compiled_modes = [False, True] if args.compile else [False]
    for compiled in compiled_modes:
        students = [
            build_model(a, args.classes, args.image_size).to(device, memory_format=memory_format) for a in STUDENTS
        ]
        if compiled:
            for m in students:
                m.compile(backend=compile_backend)
        opt = torch.optim.SGD([p for m in students for p in m.parameters()], lr=0.01, momentum=0.9)
        for source in ("live teacher", "bank"):

            def step(source=source, students=students, opt=opt):
                with autocast():
                    if source == "bank":
                        teacher_logits = bank_logits.to(device, non_blocking=True).float()
                    else:
                        with torch.no_grad():
                            teacher_logits = teacher(images).float()
                    logits = [m(images).float() for m in students]
                parts = students_loss(logits, labels, teacher_logits, names=list(STUDENTS), **settings)
                opt.zero_grad(set_to_none=True)
                parts["total"].backward()
                opt.step()

            for _ in range(args.warmup):
                step()
            variants[f"step: {'compiled' if compiled else 'eager'}, {source}"] = step
    # The variants take turns step by step and each one's median step counts: a burst of load from
    # other processes on a shared machine then hits all of them alike.
    times = {name: [] for name in variants}
    for _ in range(args.steps):
        for name, step in variants.items():
            sync(device)
            started = time.perf_counter()
            step()
            sync(device)
            times[name].append(time.perf_counter() - started)
    return {name: args.batch_size / float(np.median(t)) for name, t in times.items()}


def e2e_rates(root: Path, args, work: Path) -> dict:
    """The real loop through one Ray Train worker: live teacher, then the bank; the last epoch of each run."""
    import ray

    from orchestrator.execution import build_trainer
    from orchestrator.spec import validate_spec
    from orchestrator.teacher import prepare_teacher

    if not ray.is_initialized():
        ray.init(
            num_cpus=args.cpus, num_gpus=1 if args.device == "cuda" else 0, include_dashboard=False, log_to_driver=False
        )
    checkpoint = work / "teacher.pt"
    torch.save(build_model(args.teacher, args.classes, args.image_size).state_dict(), checkpoint)
    runs, forwards = {}, {}
    for repeat in range(args.repeats):
        for source, cache in (("live teacher", False), ("bank", True)):
            spec = validate_spec(
                {
                    "name": "throughput",
                    "storage": str(work / "runs"),
                    "data": {
                        "name": "imagefolder",
                        "root": str(root),
                        "image_size": args.image_size,
                        "loader_workers": args.loader_workers,
                        "decode": args.decode,
                    },
                    "teacher": {"arch": args.teacher, "checkpoint": str(checkpoint), "cache_soft_labels": cache},
                    "students": {
                        "archs": list(STUDENTS),
                        "epochs": args.epochs,
                        "batch_size": args.batch_size,
                        "compile": args.compile,
                    },
                    "loss": {k: v for k, v in SETTINGS.items()},
                    "resources": {"num_workers": 1, "cpus_per_worker": args.cpus, "use_gpu": args.device == "cuda"},
                }
            )
            run_cfg = prepare_teacher(spec)
            result = build_trainer(
                spec, run_cfg, name=f"e2e-{source.split()[0]}-{repeat}", storage_path=str(work / "single")
            ).fit()
            runs.setdefault(f"end to end: {source}", []).append(result.metrics["images_per_s"])
            forwards[source] = result.metrics["teacher_forwards"]
    print("end to end, each run's last epoch (images/s):", {k: [round(r, 1) for r in v] for k, v in runs.items()})
    return {**{k: float(np.median(v)) for k, v in runs.items()}, "teacher_forwards": forwards}


def ratios(rates: dict) -> dict:
    """Time ratios against each section's baseline (below 1: faster than the baseline)."""
    out = {}
    pairs = [
        ("bank / live teacher, end to end", "end to end: bank", "end to end: live teacher"),
        ("bank / live teacher, eager step", "step: eager, bank", "step: eager, live teacher"),
        ("compiled / eager step, live teacher", "step: compiled, live teacher", "step: eager, live teacher"),
        ("compiled / eager step, bank", "step: compiled, bank", "step: eager, bank"),
    ]
    pairs += [
        ("device decode / PIL, input", k, "input: PIL in loader workers")
        for k in rates
        if k.startswith("input: decode")
    ]
    for name, new, base in pairs:
        if new in rates and base in rates:
            out[name] = rates[base] / rates[new]  # time per image = 1 / rate
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sections", default="input,step,e2e", help="comma-separated: input, step, e2e")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--images", type=int, default=512, help="training JPEGs generated for input and e2e")
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--teacher", default="resnet50")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2, help="e2e: epochs per run; the last one is measured")
    p.add_argument(
        "--repeats", type=int, default=1, help="e2e: alternate the two runs this often; each one's median counts"
    )
    p.add_argument("--loader-workers", type=int, default=0)
    p.add_argument("--decode", default="auto", choices=["cpu", "gpu", "auto"], help="e2e: data.decode")
    p.add_argument("--compile", action="store_true", help="also time compiled students (step; e2e: compile them)")
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="e2e: CPUs of the Ray worker")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data", help="an existing imagefolder root instead of a generated tree")
    p.add_argument("--json", default="throughput.json", help="where to write the figures")
    args = p.parse_args(argv)
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    if not sections <= {"input", "step", "e2e"}:
        p.error(f"--sections: unknown {sorted(sections - {'input', 'step', 'e2e'})}; use input, step, e2e")
    device = torch.device(args.device)
    torch.manual_seed(0)
    rates: dict = {}
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        work = Path(tmp)
        root = Path(args.data) if args.data else None
        if root is None and sections & {"input", "e2e"}:
            root = write_jpeg_tree(work / "images", args.images, min(args.classes, args.images))
            args.classes = min(args.classes, args.images)
        if "input" in sections:
            rates.update(input_rates(root, args, device))
        if "step" in sections:
            rates.update(step_rates(args, device))
        if "e2e" in sections:
            rates.update(e2e_rates(root, args, work))
    forwards = rates.pop("teacher_forwards", None)
    report = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpus": os.cpu_count(),
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "teacher": args.teacher,
        "images_per_s": rates,
        "time_ratios": ratios(rates),
        "teacher_forwards_last_epoch": forwards,
        "date": time.strftime("%Y-%m-%d"),
    }
    print(
        f"{report['gpu'] or 'CPU'} ({report['cpus']} cores), {args.image_size} px, batch {args.batch_size}, "
        f"teacher {args.teacher}"
    )
    for name, rate in rates.items():
        print(f"  {name:<42} {rate:10.1f} images/s")
    for name, ratio in report["time_ratios"].items():
        print(f"  time ratio {name:<40} {ratio:6.3f}")
    if forwards is not None:
        print(f"  teacher forwards in the last epoch: {forwards}")
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"written to {args.json}")
    return report


if __name__ == "__main__":
    main()
