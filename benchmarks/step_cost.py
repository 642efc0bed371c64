"""Does one dual-student step cost less than two single-student KD steps? Prints the figures.

Both sides run the same code path as `trainables.loop` (students_loss on a live teacher forward),
on synthetic images, in this process: the dual step shares the batch and one teacher forward; the
baseline runs a KD step for each student separately, each with its own teacher forward. Ratios are
measured in the same run, so they hold on a noisy machine. Usage:
    python benchmarks/step_cost.py [--image-size 32] [--batch-size 32] [--steps 10] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch

from trainables.losses import students_loss
from trainables.methods import resolve_method
from trainables.models import build_model


def make_step(students, teacher, settings, names):
    params = [p for m in students for p in m.parameters()]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)

    def step(images, labels):
        with torch.no_grad():
            teacher_logits = teacher(images).float()
        parts = students_loss([m(images).float() for m in students], labels, teacher_logits, names=names, **settings)
        opt.zero_grad(set_to_none=True)
        parts["total"].backward()
        opt.step()

    return step


def seconds_per_step(step, images, labels, steps: int, device) -> float:
    for _ in range(2):  # warm-up: allocator, kernels
        step(images, labels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step(images, labels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--teacher", default="resnet50")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    labels = torch.randint(0, args.classes, (args.batch_size,), device=device)
    build = lambda arch: build_model(arch, args.classes, args.image_size).to(device)  # noqa: E731
    teacher = build(args.teacher).eval().requires_grad_(False)
    dual_settings = resolve_method(
        {
            "method": "ua_dual",
            "temperature": 4.0,
            "alpha": 0.5,
            "beta": 1.0,
            "weighting": "entropy",
            "threshold": None,
            "peer_weighting": "uniform",
        }
    )
    kd_settings = resolve_method({**dual_settings, "method": "kd"})

    dual = seconds_per_step(
        make_step([build("resnet18"), build("mobilenet_v2")], teacher, dual_settings, ("resnet18", "mobilenet_v2")),
        images,
        labels,
        args.steps,
        device,
    )
    kd = {
        arch: seconds_per_step(
            make_step([build(arch)], teacher, kd_settings, (arch,)), images, labels, args.steps, device
        )
        for arch in ("resnet18", "mobilenet_v2")
    }
    baseline = sum(kd.values())
    print(
        f"device {device}, {args.image_size} px, batch {args.batch_size}, teacher {args.teacher}, "
        f"{args.steps} timed steps each"
    )
    for name, sec in [
        ("dual-student step", dual),
        *((f"KD step, {a} alone", s) for a, s in kd.items()),
        ("two KD steps (baseline)", baseline),
    ]:
        print(f"  {name:<28} {sec * 1000:8.1f} ms   {args.batch_size / sec:8.1f} images/s")
    print(f"  dual / two single KD steps: {dual / baseline:.3f}  (below 1: the shared batch and teacher forward pay)")


if __name__ == "__main__":
    main()
