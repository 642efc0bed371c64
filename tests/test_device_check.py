"""benchmarks/device_check.py at its tiny size on the CPU: every part runs or says why not, and a failing
part is recorded while the others go on."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "device_check.py"
PART_KEYS = {"status", "seconds", "peak_gpu_mib"}


def load_check():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_report(out: Path) -> dict:
    report = json.loads((out / "device_check.json").read_text())
    assert {"schema", "mode", "environment", "settings", "parts", "failed", "total_s"} <= set(report)
    env = report["environment"]
    assert env["gpu"] == "cpu" and env["gpu_memory_gib"] is None
    assert all(env[k] for k in ("torch", "torchvision", "ray", "python", "date"))
    for part in report["parts"].values():
        assert PART_KEYS <= set(part) and part["peak_gpu_mib"] is None  # no GPU here
    table = (out / "device_check.md").read_text()
    assert "| part | figure | images/s | peak GPU MiB | part s | status |" in table
    assert all(f"| {name} |" in table for name in report["parts"])
    return report


def assert_measured(part: dict) -> None:
    assert part["status"] == "ok", part
    assert part["images_per_s"] and all(rate > 0 for rate in part["images_per_s"].values())


def test_data_and_decode_parts_and_the_report(tmp_path):
    check = load_check()
    which = "data,decode_cpu,decode_gpu"
    assert check.main(["--tiny", "--device", "cpu", "--out", str(tmp_path), "--parts", which]) == 0
    report = read_report(tmp_path)
    parts = report["parts"]
    assert list(parts) == ["data", "decode_cpu", "decode_gpu"] and report["failed"] == []
    assert parts["data"]["images"] == 4 * 4 + 4 and parts["data"]["mean_jpeg_kib"] > 0  # train + one val per class
    assert_measured(parts["decode_cpu"])
    assert parts["decode_gpu"]["status"] == "skipped" and "CUDA" in parts["decode_gpu"]["reason"]


def test_a_failing_part_is_one_line_and_the_exit_status_says_so(tmp_path):
    check = load_check()
    assert check.main(["--tiny", "--device", "cpu", "--out", str(tmp_path), "--parts", "decode_cpu"]) == 1
    report = read_report(tmp_path)
    assert report["failed"] == ["decode_cpu"]
    error = report["parts"]["decode_cpu"]["error"]
    assert "data part failed" in error and "\n" not in error
    late = check.run_part("late", lambda: {}, check.torch.device("cpu"), deadline=0)
    assert late["status"] == "failed" and "budget" in late["error"]


@pytest.mark.slow  # the sweep part starts Ray, trains a teacher, builds the bank and runs 2 trials: minutes
def test_tiny_run_measures_every_part_on_the_cpu(tmp_path):
    out = tmp_path / "check"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = read_report(out)
    parts = report["parts"]
    assert list(parts) == ["data", "step_eager", "step_compiled", "decode_cpu", "decode_gpu", "sweep"]
    for name in ("step_eager", "step_compiled"):
        assert_measured(parts[name])
        assert set(parts[name]["images_per_s"]) == {"live teacher", "bank"}
    assert_measured(parts["decode_cpu"])
    assert parts["decode_gpu"]["status"] == "skipped" and parts["decode_gpu"]["reason"]
    sweep = parts["sweep"]
    assert_measured(sweep)
    assert sweep["trials"] == 2 and sweep["results_csv_rows"] == 2 and sweep["wall_s"] > 0
    assert sweep["teacher_forwards"] == [0, 0]  # the bank stood in for the teacher
    assert Path(sweep["tracking_uri"].removeprefix("sqlite:///")).is_relative_to(out)
    assert "device check on cpu" in done.stdout and "| sweep | mean of trials |" in done.stdout
