"""One real TorchTrainer run of the dual-student loop, and the frozen teacher's cache."""

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import torch
import yaml

from orchestrator.execution import build_trainer
from orchestrator.spec import validate_spec
from orchestrator.teacher import prepare_teacher, teacher_cache
from tests.conftest import tiny_spec_dict
from trainables.files import PREDICTIONS_FILE, STATE_FILE
from trainables.metric_names import epoch_metric_names
from trainables.teacher_cache import SOFT_LABELS_FILE, is_cached, read_meta, teacher_dir


def live_metric_lines(ray_module, run: str, timeout: float = 30.0) -> list[str]:
    """This node's exported Ray metrics of one run, read as Prometheus scrapes them."""
    node = ray_module._private.worker.global_worker.node
    url = f"http://{node.node_ip_address}:{node.metrics_export_port}/metrics"
    deadline = time.time() + timeout
    while True:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        lines = [line for line in text.splitlines() if f'run="{run}"' in line and not line.startswith("#")]
        if lines or time.time() > deadline:  # exported every few seconds
            return lines
        time.sleep(2)


def test_teacher_cache_then_one_epoch_dual_student_run(ray_local, tmp_path, capsys):
    spec = validate_spec(tiny_spec_dict(tmp_path))

    run_cfg = prepare_teacher(spec)
    assert "cache miss" in capsys.readouterr().out
    location = teacher_dir(teacher_cache(spec), spec.run_config())
    folder = Path(location)
    assert run_cfg.teacher_dir == location and is_cached(location)
    assert (folder / SOFT_LABELS_FILE).is_file()  # digits without augmentation: logits cached once
    weights_mtime = (folder / "teacher.pt").stat().st_mtime_ns
    assert read_meta(location)["source"] == "trained"

    again = prepare_teacher(spec)  # same settings: reused, not retrained
    assert "cache hit" in capsys.readouterr().out
    assert again.teacher_dir == run_cfg.teacher_dir
    assert (folder / "teacher.pt").stat().st_mtime_ns == weights_mtime

    changed = validate_spec(tiny_spec_dict(tmp_path, teacher={"epochs": 2}))
    assert teacher_dir(teacher_cache(changed), changed.run_config()) != location
    assert not is_cached(teacher_dir(teacher_cache(changed), changed.run_config()))

    ctrl_c = signal.getsignal(signal.SIGINT)
    result = build_trainer(spec, run_cfg, name="one-epoch", storage_path=str(tmp_path / "single")).fit()
    assert signal.getsignal(signal.SIGINT) is ctrl_c  # Ray's handler, holding the run's controller, is gone
    m = result.metrics
    assert m["epoch"] == 1
    for student in ("resnet18", "mobilenet_v2"):
        for key in ("val_top1", "val_top5", "val_ece", "train_ce", "train_kd", "train_peer", "train_total"):
            assert 0.0 <= m[f"{student}/{key}"] < 100.0, key
        assert m[f"{student}/val_top5"] >= m[f"{student}/val_top1"]
    assert 0.0 < m["teacher_weight"] < 1.0 and m["gated"] == 0.0  # entropy weighting gates nothing
    assert m["images_per_s"] > 0 and "teacher/val_top1" in m
    # The names the pre-flight checks tune.metric against are what an epoch reports (the last adds profiles).
    names = epoch_metric_names(spec.run_config())
    assert set(names) <= set(m)
    assert {k.split("/")[-1] for k in set(m) - set(names)} <= {"params", "params_1000", "flops"}
    with result.checkpoint.as_directory() as d:
        state = torch.load(f"{d}/{STATE_FILE}", weights_only=True)
        predictions = torch.load(f"{d}/{PREDICTIONS_FILE}", weights_only=True)
    assert set(state["students"]) == {"resnet18", "mobilenet_v2"} and state["epoch"] == 0
    assert {"optimizer", "scheduler"} <= set(state)
    assert predictions["teacher_logits"].shape == (len(predictions["labels"]), 10)
    live = live_metric_lines(ray_local, "one-epoch")  # the Ray metrics the dashboard and Grafana show
    assert any(line.startswith("ray_dualkd_val_top1{") and 'student="resnet18"' in line for line in live)
    assert any(line.startswith("ray_dualkd_train_loss{") and 'term="kd"' in line for line in live)
    assert any(line.startswith("ray_dualkd_epoch{") and line.endswith(" 1.0") for line in live)

    # The same run again (a trial restarted after its driver died): it trains nothing, and reports the
    # final epoch once more so that Tune sees the trial end, with its last-epoch predictions.
    again = build_trainer(spec, run_cfg, name="one-epoch", storage_path=str(tmp_path / "single")).fit()
    assert again.metrics["epoch"] == 1
    assert again.metrics["resnet18/val_top1"] == m["resnet18/val_top1"]
    with again.checkpoint.as_directory() as d:
        assert torch.load(f"{d}/{STATE_FILE}", weights_only=True)["epoch"] == 0
        assert (Path(d) / PREDICTIONS_FILE).is_file()


def test_two_workers_train_with_ddp(ray_local, tmp_path):
    """DDP through prepare_model/prepare_data_loader on two CPU workers (gloo); DML needs no teacher."""
    spec = validate_spec(
        tiny_spec_dict(
            tmp_path, loss={"method": "dml", "beta": 1.0}, resources={"num_workers": 2, "cpus_per_worker": 1}
        )
    )
    run_cfg = prepare_teacher(spec)
    assert run_cfg.teacher_dir is None
    result = build_trainer(spec, run_cfg, name="ddp", storage_path=str(tmp_path / "single")).fit()
    assert result.metrics["epoch"] == 1 and result.metrics["resnet18/train_peer"] > 0
    assert result.metrics["resnet18/train_kd"] == 0.0  # dml: no teacher term
    with result.checkpoint.as_directory() as d:
        state = torch.load(f"{d}/{STATE_FILE}", weights_only=True)
    assert not any(k.startswith("module.") for k in state["students"]["resnet18"])  # saved unwrapped


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120)


def test_bad_specs_exit_nonzero_with_one_line(tmp_path):
    for mistake, expected in (
        ({"loss": {"alpah": 0.5}}, "loss.alpah: unknown key"),
        ({"loss": {"alpha": 2}}, "loss.alpha: Input should be less than or equal to 1"),
    ):
        raw = tiny_spec_dict(tmp_path)
        raw["loss"].update(mistake["loss"])
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(raw))
        proc = run_cli("orchestrator.train", str(path))
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], proc.stderr


def test_worker_side_imports_neither_tune_nor_mlflow():
    code = (
        "import sys, trainables.loop, trainables.teacher, trainables.losses, trainables.data, "
        "trainables.models, trainables.metrics; "
        "print([m for m in sys.modules if m.startswith(('ray.tune', 'mlflow', 'orchestrator'))])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
