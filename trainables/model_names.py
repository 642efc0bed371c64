"""The architectures a run may name, without torch: the driver validates a spec with these names alone.

`trainables.models` builds them (torchvision's networks) and adapts each to small images by the stem named here.
"""

ARCHITECTURES: dict[str, str] = {
    "resnet18": "resnet",
    "resnet34": "resnet",
    "resnet50": "resnet",
    "mobilenet_v2": "mobilenet_v2",
}
"""Supported torchvision architecture -> the small-input stem `trainables.models` gives it."""
