"""benchmarks/throughput.py runs at a small size on the CPU: every section, through the real loop."""

import importlib.util
import json
from pathlib import Path

import pytest


def load_benchmark(name: str = "throughput"):
    """A script of benchmarks/ as a module (benchmarks/ is no package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_throughput_benchmark_runs_every_section_on_the_cpu(ray_local, tmp_path):
    out = tmp_path / "throughput.json"
    report = load_benchmark().main(
        [
            "--image-size",
            "16",
            "--batch-size",
            "4",
            "--images",
            "8",
            "--classes",
            "2",
            "--teacher",
            "resnet18",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--epochs",
            "1",
            "--cpus",
            "1",
            "--device",
            "cpu",
            "--json",
            str(out),
        ]
    )
    rates = report["images_per_s"]
    assert set(rates) == {
        "input: PIL in loader workers",
        "input: decode on cpu",
        "step: eager, live teacher",
        "step: eager, bank",
        "end to end: live teacher",
        "end to end: bank",
    }
    assert all(rate > 0 for rate in rates.values())
    assert report["teacher_forwards_last_epoch"] == {"live teacher": 2, "bank": 0}  # 8 images, batch 4
    assert set(report["time_ratios"]) == {
        "bank / live teacher, end to end",
        "bank / live teacher, eager step",
        "device decode / PIL, input",
    }
    assert json.loads(out.read_text())["images_per_s"] == rates
