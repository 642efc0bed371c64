"""Which students train faster with channels-last weights on a CPU worker? Prints the figures.

Per architecture, one training step (forward, cross-entropy, backward, SGD with momentum) on one CPU thread, as
a sweep's worker with one CPU runs it, the weights contiguous or channels-last and the input contiguous (as the
loop feeds it). The two formats alternate in rounds and the medians are compared, so the ratio holds on a noisy
machine. `trainables.models.CPU_CHANNELS_LAST` names the architectures this favours. Usage:
    python benchmarks/cpu_memory_format.py [--image-size 12] [--batch-size 64] [--rounds 5] [--steps 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from trainables.model_names import ARCHITECTURES
from trainables.models import CPU_CHANNELS_LAST, build_model

FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def step_seconds(model, optimizer, images, labels, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet18", "mobilenet_v2"], choices=sorted(ARCHITECTURES))
    parser.add_argument("--image-size", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=generator)
    labels = torch.randint(0, args.classes, (args.batch_size,), generator=generator)
    runs = {}
    for arch in args.archs:
        for name, memory_format in FORMATS.items():
            model = build_model(arch, args.classes, args.image_size).to(memory_format=memory_format)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            step_seconds(model, optimizer, images, labels, 2)  # warm-up: allocator, oneDNN primitives
            runs[arch, name] = (model, optimizer, [])
    for _ in range(args.rounds):
        for model, optimizer, times in runs.values():
            times.extend(step_seconds(model, optimizer, images, labels, args.steps))
    steps = args.rounds * args.steps
    print(f"one CPU thread, batch {args.batch_size} at {args.image_size} px, median of {steps} steps per cell")
    print(f"{'arch':14s} {'contiguous':>12s} {'channels_last':>14s} {'speed-up':>9s}  channels-last on CPU")
    for arch in args.archs:
        plain, last = (statistics.median(runs[arch, name][2]) for name in FORMATS)
        chosen = "yes" if arch in CPU_CHANNELS_LAST else "no"
        print(f"{arch:14s} {plain * 1000:9.1f} ms {last * 1000:11.1f} ms {plain / last:8.2f}x  {chosen}")


if __name__ == "__main__":
    main()
