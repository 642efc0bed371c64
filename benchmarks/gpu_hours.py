"""An ESTIMATE of GPU-hours per ImageNet-100 trial, from FLOPs per image and a published throughput.

No GPU measurement: the FLOPs come from `torch.utils.flop_counter` on the real models (224 px, 100
classes); the throughput is NVIDIA's published ResNet-50 v1.5 training figure (DeepLearningExamples,
PyTorch, 1x A100 80GB, mixed precision, DALI loader: 2,470 images/s), turned into an effective
FLOP rate and applied to one dual-student step (teacher forward + both students forward and backward,
backward counted as twice the forward). Real runs are slower when JPEG decoding cannot keep up.
    python benchmarks/gpu_hours.py [--epochs 100] [--teacher resnet50]
"""

from __future__ import annotations

import argparse

from trainables.models import model_profile

PUBLISHED_RESNET50_TRAIN_IMAGES_PER_S = 2470.0  # 1x A100 80GB, AMP (NVIDIA DeepLearningExamples)
TRAIN_IMAGES, VAL_IMAGES, CLASSES, SIZE = 126_689, 5_000, 100, 224


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--teacher", default="resnet50")
    args = p.parse_args()
    flops = {arch: model_profile(arch, CLASSES, SIZE)["flops"] for arch in (args.teacher, "resnet18", "mobilenet_v2")}
    effective = PUBLISHED_RESNET50_TRAIN_IMAGES_PER_S * 3 * model_profile("resnet50", CLASSES, SIZE)["flops"]
    step = flops[args.teacher] + 3 * (flops["resnet18"] + flops["mobilenet_v2"])
    val = flops["resnet18"] + flops["mobilenet_v2"]
    seconds = args.epochs * (TRAIN_IMAGES * step + VAL_IMAGES * val) / effective
    teacher_seconds = args.epochs * TRAIN_IMAGES * 3 * flops[args.teacher] / effective
    print("ESTIMATE (not measured): ImageNet-100, 224 px, A100-class GPU at the published ResNet-50 efficiency")
    for arch, f in flops.items():
        print(f"  {arch:<14} {f / 1e9:6.2f} GFLOPs per image (forward)")
    print(f"  effective rate         {effective / 1e12:6.1f} TFLOP/s (2,470 img/s x 3 x ResNet-50 forward)")
    print(f"  dual-student step      {step / 1e9:6.2f} GFLOPs per image -> {effective / step:,.0f} images/s per GPU")
    print(f"  one trial, {args.epochs} epochs   {seconds / 3600:6.2f} GPU-hours")
    print(f"  the teacher, once      {teacher_seconds / 3600:6.2f} GPU-hours ({args.epochs} epochs of {args.teacher})")


if __name__ == "__main__":
    main()
