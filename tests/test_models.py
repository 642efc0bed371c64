from functools import lru_cache

import pytest
import torch
import torchvision

from trainables.models import (
    MODELS,
    SMALL_INPUT,
    build_model,
    compression_ratio,
    count_parameters,
    flops_per_image,
    load_matching_weights,
    model_profile,
)

ARCHS = ["resnet18", "resnet34", "resnet50", "mobilenet_v2"]


@lru_cache(maxsize=None)
def eval_model(name: str, small_input: bool) -> torch.nn.Module:
    """One model per (arch, stem): initialising a ResNet-50 costs more than running it."""
    return build_model(name, 10, SMALL_INPUT if small_input else 224).eval()


def test_registry_holds_the_four_architectures():
    assert sorted(MODELS) == sorted(ARCHS)
    assert set(MODELS) <= set(torchvision.models.list_models(module=torchvision.models))  # torchvision's names


def test_resnet18_imagenet_parameter_count_matches_torchvision():
    assert count_parameters(build_model("resnet18", 1000, 224)) == 11_689_512


@pytest.mark.parametrize("size", [16, 64, 224])
@pytest.mark.parametrize("name", ARCHS)
def test_output_shape(name, size):
    with torch.no_grad():
        out = eval_model(name, size <= SMALL_INPUT)(torch.randn(2, 3, size, size))
    assert out.shape == (2, 10)


@pytest.mark.parametrize("name", ARCHS)
def test_small_input_keeps_a_spatial_map_before_pooling(name):
    model = eval_model(name, True)
    last = model.layer4 if name.startswith("resnet") else model.features
    seen = {}
    hook = last.register_forward_hook(lambda module, args, out: seen.update(shape=out.shape))
    with torch.no_grad():
        model(torch.randn(1, 3, 16, 16))
    hook.remove()
    assert seen["shape"][-2:] == (2, 2)  # total stride 8, not 32


def test_large_input_keeps_the_imagenet_stem():
    model = build_model("resnet18", 10, 224)
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert isinstance(model.maxpool, torch.nn.MaxPool2d)
    assert build_model("mobilenet_v2", 10, 224).features[0][0].stride == (2, 2)


def test_flops_positive_and_resnet18_costs_more_than_mobilenet_v2():
    r18 = flops_per_image(build_model("resnet18", 10, 32), 32)
    mv2 = flops_per_image(build_model("mobilenet_v2", 10, 32), 32)
    assert 0 < mv2 < r18


def test_profile_counts_both_heads():
    profile = model_profile("resnet18", 100, 224)
    assert profile["params_1000"] == 11_689_512
    assert profile["params"] == 11_689_512 - 900 * 512 - 900
    assert profile["flops"] > 3e9  # about 1.8 GMACs at 224 px


def test_compression_ratios_match_the_paper():
    resnet18 = compression_ratio("resnet50", "resnet18", 100, 224)
    assert round(resnet18["ratio_1000"], 2) == 2.19  # 25,557,032 / 11,689,512
    assert round(resnet18["ratio"], 2) == 2.11
    assert round(compression_ratio("resnet50", "mobilenet_v2", 100, 224)["ratio_1000"], 2) == 7.29


def test_weights_load_backbone_and_skip_the_head(tmp_path):
    source = build_model("resnet18", 1000, 32)
    path = tmp_path / "r18.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    target = build_model("resnet18", 10, 32, weights_path=path)
    assert torch.equal(target.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    assert torch.equal(target.conv1.weight, source.conv1.weight)
    assert not torch.equal(target.fc.weight[:10], source.fc.weight[:10])
    report = load_matching_weights(build_model("resnet18", 10, 32), path)
    assert report["skipped"] == ["fc.bias", "fc.weight"]
    assert report["missing"] == ["fc.bias", "fc.weight"]
    assert report["loaded"] == len(source.state_dict()) - 2


def test_weights_skip_a_large_stem_in_a_small_input_model(tmp_path):
    path = tmp_path / "r18_224.pt"
    torch.save(build_model("resnet18", 1000, 224).state_dict(), path)
    report = load_matching_weights(build_model("resnet18", 10, 16), path)
    assert report["skipped"] == ["conv1.weight", "fc.bias", "fc.weight"]


def test_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        build_model("resnet18", 10, 16, weights_path=tmp_path / "nope.pt")


@pytest.mark.parametrize(
    "name, problem", [("vgg16", "has no small-input adaptation"), ("resnet180", "is not a torchvision model")]
)
def test_unknown_name_lists_the_available_ones(name, problem):
    with pytest.raises(ValueError) as err:
        build_model(name, 10, 16)
    message = str(err.value)
    assert "\n" not in message and f"{name!r} {problem}" in message
    assert all(name in message for name in ARCHS)


def test_students_keep_channels_last_weights_on_gpu_and_on_cpu_for_mobilenet_alone():
    """oneDNN runs MobileNetV2's depthwise convolutions faster channels-last on CPU, ResNet's slower
    (benchmarks/cpu_memory_format.py); `students.channels_last: false` keeps every student contiguous."""
    from trainables.models import input_memory_format, student_memory_format

    assert input_memory_format(on_gpu=True, channels_last=True) == torch.channels_last  # images, teacher: GPU only
    assert input_memory_format(on_gpu=False, channels_last=True) == torch.contiguous_format
    assert input_memory_format(on_gpu=True, channels_last=False) == torch.contiguous_format

    assert student_memory_format("mobilenet_v2", on_gpu=False, channels_last=True) == torch.channels_last
    assert student_memory_format("resnet18", on_gpu=False, channels_last=True) == torch.contiguous_format
    assert student_memory_format("resnet18", on_gpu=True, channels_last=True) == torch.channels_last
    for arch in ("resnet18", "mobilenet_v2"):
        for on_gpu in (False, True):
            assert student_memory_format(arch, on_gpu=on_gpu, channels_last=False) == torch.contiguous_format
    model = build_model("mobilenet_v2", 10, 12).to(memory_format=torch.channels_last)
    seen = []
    model.features[1].register_forward_hook(lambda m, i, out: seen.append(out))
    model(torch.randn(4, 3, 12, 12))  # a contiguous input, as the loop feeds it: the convolutions follow the weights
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()
