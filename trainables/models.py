"""The architectures a run may name: torchvision's networks, plus how each is adapted to small images.

Every worker, the teacher cache and the result tables build networks through `build_model`, so an
architecture name means the same network everywhere. torchvision builds them (`get_model`); this module
adds only what torchvision does not know: which ones have a small-input stem, and what it is. No Ray or
MLflow here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision import models as tvm

from trainables.config import MissingInput
from trainables.model_names import ARCHITECTURES

log = logging.getLogger(__name__)

SMALL_INPUT = 64
"""Images this size or smaller get the small-input stem; the ImageNet stem would shrink them 32x."""

CPU_CHANNELS_LAST = frozenset({"mobilenet_v2"})
"""Architectures whose weights a CPU worker keeps channels-last (`students.channels_last`): oneDNN runs
MobileNetV2's depthwise convolutions faster so, and ResNet's plain ones slower (benchmarks/cpu_memory_format.py)."""


def input_memory_format(on_gpu: bool, channels_last: bool) -> torch.memory_format:
    """The images' and the teacher's memory format: channels-last on GPU when `channels_last`
    (`students.channels_last`), else contiguous."""
    return torch.channels_last if on_gpu and channels_last else torch.contiguous_format


def student_memory_format(arch: str, on_gpu: bool, channels_last: bool) -> torch.memory_format:
    """A student's weights' memory format: the inputs', or channels-last on CPU too for `CPU_CHANNELS_LAST` when
    `channels_last`. Its convolutions follow their weights' format whatever the input's."""
    if channels_last and arch in CPU_CHANNELS_LAST:
        return torch.channels_last
    return input_memory_format(on_gpu, channels_last)


def _resnet_small_input(model: tvm.ResNet) -> None:
    # CIFAR-style stem: 3x3 stride-1 conv and no max-pool, so the stem keeps full resolution.
    model.conv1 = nn.Conv2d(3, model.conv1.out_channels, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision inits convs
    model.maxpool = nn.Identity()


def _mobilenet_v2_small_input(model: tvm.MobileNetV2) -> None:
    # Total stride 32 -> 8 by editing strides in place: every weight keeps its ImageNet shape.
    model.features[0][0].stride = (1, 1)
    model.features[2].conv[1][0].stride = (1, 1)


_SMALL_INPUT_STEMS: dict[str, Callable[[nn.Module], None]] = {
    "resnet": _resnet_small_input,
    "mobilenet_v2": _mobilenet_v2_small_input,
}
MODELS: dict[str, Callable[[nn.Module], None]] = {
    name: _SMALL_INPUT_STEMS[stem] for name, stem in ARCHITECTURES.items()
}
"""The supported architectures (torchvision names, `trainables.model_names`) -> their small-input adaptation,
applied in place."""


def build_model(name: str, num_classes: int, image_size: int, weights_path: Optional[str | Path] = None) -> nn.Module:
    """Build a supported architecture; `weights_path` loads a local file, shape-matching tensors only."""
    if name not in MODELS:
        known = name in tvm.list_models(module=tvm)
        what = "has no small-input adaptation in trainables.models.MODELS" if known else "is not a torchvision model"
        raise ValueError(f"architecture {name!r} {what}: use one of {', '.join(sorted(MODELS))}")
    model = tvm.get_model(name, weights=None, num_classes=num_classes)
    if image_size <= SMALL_INPUT:
        MODELS[name](model)
    if weights_path is not None:
        report = load_matching_weights(model, weights_path)
        log.info(
            "%s: loaded %d tensors from %s, skipped %d (%s)",
            name,
            report["loaded"],
            weights_path,
            len(report["skipped"]),
            ", ".join(report["skipped"]) or "none",
        )
    return model


def load_matching_weights(model: nn.Module, path: str | Path) -> dict:
    """Load the tensors of a local state_dict whose names and shapes match `model`.

    Mismatches (a 1000-class head, a 7x7 stem in a small-input model) are skipped, not errors, so
    ImageNet-1k weights can initialise any head size and stem. Accepts a bare state_dict, a
    checkpoint dict holding it under "state_dict" or "model", and DDP's "module." prefixes.
    Returns {"loaded": count, "skipped": names in the file not loaded, "missing": model names not set}.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"weights file not found: {path} (give a local state_dict file; nothing is downloaded)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matching, strict=False)
    return {
        "loaded": len(matching),
        "skipped": sorted(set(state) - set(matching)),
        "missing": sorted(set(own) - set(matching)),
    }


def output_classes(state_dict: dict) -> int:
    """The class count of a supported model's weights: the rows of its classifier, the last 2-D weight.

    Lets the driver size a teacher from its weights alone, without opening the data.
    """
    heads = [v for k, v in state_dict.items() if k.endswith("weight") and getattr(v, "dim", lambda: 0)() == 2]
    if not heads:
        raise ValueError("these weights hold no classifier (no 2-D weight): give the state_dict of a supported model")
    return int(heads[-1].shape[0])


def count_parameters(model: nn.Module) -> int:
    """All parameters, trainable or not (the paper's compression ratios count all)."""
    return sum(p.numel() for p in model.parameters())


def flops_per_image(model: nn.Module, image_size: int) -> int:
    """Forward FLOPs of one 3 x S x S image, as FlopCounterMode counts them: 2 per multiply-add.

    Runs in eval mode without grad on the model's own device (a meta-device model costs nothing).
    """
    param = next(model.parameters())
    x = torch.zeros(1, 3, image_size, image_size, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops()


def _meta_model(name: str, num_classes: int, image_size: int) -> nn.Module:
    # Shapes only: no memory and no initialisation cost, so profiling a ResNet-50 is instant.
    with torch.device("meta"):
        return build_model(name, num_classes, image_size)


def _params(name: str, num_classes: int, image_size: int) -> int:
    return count_parameters(_meta_model(name, num_classes, image_size))


def model_profile(name: str, num_classes: int, image_size: int) -> dict:
    """Size and cost of an architecture at this input size.

    `params_1000` counts the same network (same stem) with a 1000-class head: the convention of
    published compression ratios.
    """
    model = _meta_model(name, num_classes, image_size)
    return {
        "params": count_parameters(model),
        "params_1000": _params(name, 1000, image_size),
        "flops": flops_per_image(model, image_size),
    }


def compression_ratio(teacher: str, student: str, num_classes: int, image_size: int) -> dict:
    """Teacher/student parameter ratios with `num_classes` heads and with 1000-class heads."""
    return {
        "ratio": _params(teacher, num_classes, image_size) / _params(student, num_classes, image_size),
        "ratio_1000": _params(teacher, 1000, image_size) / _params(student, 1000, image_size),
    }
