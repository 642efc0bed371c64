"""Storage that fills up, for real: a small tmpfs mounted here (mounting needs root or CAP_SYS_ADMIN, which
CI has; these tests are marked `root`). The run stops with one line, keeps what finished, and `--resume` goes
on; the teacher cache never holds a half-written entry. A read-only storage fails the same way (its errno,
tested below)."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from mlflow import MlflowClient

from orchestrator.execution import StorageFailed, found_in, from_os_error, is_storage_error, reason_in
from tests.conftest import tiny_spec_dict
from tests.servers import Process, base_env
from tests.sweep_checks import EPOCHS, check_every_trial_once, logged_epoch, start_sweep, write_spec
from trainables.models import build_model
from trainables.teacher_cache import is_cached


def mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    assert done.returncode == 0, f"mount {' '.join(args)}: {done.stderr.strip()} (these tests need root)"


class Disk:
    """A tmpfs of `size` seen at `path` through a bind mount, which `grow` makes larger."""

    def __init__(self, root: Path, size: str):
        self.base, self.path = root / "disk", root / "storage"
        self.base.mkdir()
        self.path.mkdir()
        mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.base))
        self.mounts = [self.base]
        mount("--bind", str(self.base), str(self.path))
        self.mounts.append(self.path)

    def grow(self, size: str) -> None:
        mount("-o", f"remount,size={size}", str(self.base))

    def remove(self) -> None:
        while self.mounts:
            subprocess.run(["umount", "-l", str(self.mounts.pop())], check=False)


@pytest.fixture
def disk(tmp_path, request):
    made = []

    def make(size: str) -> Disk:
        made.append(Disk(tmp_path, size))
        return made[-1]

    yield make
    for d in made:
        d.remove()


def last_line(process: Process) -> str:
    lines = [line for line in process.log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.mark.slow
@pytest.mark.root
def test_full_disk_while_caching_the_teacher_keeps_no_half_entry(tmp_path, disk):
    """A teacher checkpoint of 45 MB cached into 24 MB: one line, exit 2, and no entry (whole or half)."""
    small = disk("24m")
    weights = tmp_path / "teacher.pt"
    torch.save(build_model("resnet18", 10, 8).state_dict(), weights)  # the tiny spec's teacher
    raw = tiny_spec_dict(
        tmp_path, teacher={"checkpoint": str(weights)}, mlflow={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    )
    raw["storage"] = str(small.path)
    spec = tmp_path / "full.yaml"
    spec.write_text(yaml.safe_dump(raw))

    run = Process(
        [sys.executable, "-m", "orchestrator.train", str(spec)], tmp_path / "full.log", base_env(), cwd=tmp_path
    )
    try:
        run.proc.wait(timeout=300)
    finally:
        run.stop(grace=5)
    assert run.proc.returncode == 2, run.tail()
    line = last_line(run)
    assert line.startswith("error: storage ") and "no space left on device" in line, run.tail()
    teachers = small.path / "teachers"
    left = [p.name for p in teachers.iterdir()] if teachers.is_dir() else []
    assert not any(is_cached(str(teachers / name)) for name in left)
    assert not left, f"a half-written teacher entry was left: {left}"


# The tiny sweep's storage: the teacher's Ray Train checkpoint and cache entry take about 130 MB, a trial's
# checkpoint (two students and their optimizer) about 103 MB. 280 MB take epoch 1's and not epoch 2's.
FILLS_AT_EPOCH_2 = "280m"


@pytest.mark.slow
@pytest.mark.root
def test_storage_filling_mid_sweep_stops_and_resumes(tmp_path, disk):
    """Full at the second epoch's checkpoint: the sweep stops with one line (exit 2) instead of failing every
    trial; once the storage takes writes again (grown), `--resume` ends every trial once, each epoch once.
    A read-only storage takes the same path (its errno in `orchestrator.execution.storage_faults`, tested below)."""
    store = disk(FILLS_AT_EPOCH_2)
    trials = 1  # one trial fills the disk at a known epoch
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # MLflow is elsewhere: only the storage fails
    client = MlflowClient(tracking_uri=uri)
    spec = write_spec(tmp_path, store.path, "storage", uri, trials=trials)
    sweep = start_sweep(spec, tmp_path)
    try:
        sweep.proc.wait(timeout=400)
    finally:
        sweep.stop(grace=5)
    assert sweep.proc.returncode == 2, sweep.tail()
    line = last_line(sweep)
    assert line.startswith("error: storage ") and "no space left on device" in line and "--resume" in line, line
    assert 1 <= logged_epoch(client, "storage") < EPOCHS

    store.grow("1g")
    resumed = Process(
        [sys.executable, "-m", "orchestrator.sweep", str(spec), "--resume"],
        tmp_path / "resumed.log",
        base_env(),
        cwd=tmp_path,
    )
    try:
        resumed.proc.wait(timeout=600)
    finally:
        resumed.stop(grace=5)
    restored = [
        line for line in resumed.log.read_text(errors="replace").splitlines() if "esum" in line or "Restor" in line
    ]
    kept = sorted(p.name for p in (store.path / "sweeps").glob("*/*"))
    assert resumed.proc.returncode == 0, f"{resumed.tail()}\nrestore lines: {restored}\nsweep folder: {kept}"
    check_every_trial_once(client, "storage", store.path, trials=trials)


def test_storage_reasons_in_error_texts_and_chains():
    pyarrow_text = "OSError: [Errno 30] Cannot create directory '/s/c'. Detail: [errno 30] Read-only file system"
    assert reason_in(pyarrow_text) == "read-only file system"
    assert reason_in("RuntimeError: ... [Errno 28] No space left on device: '/s/x'") == "no space left on device"
    assert reason_in("ValueError: loss is nan") is None

    full = OSError(errno.ENOSPC, "No space left on device", "/s/teachers")
    assert is_storage_error(full) and not is_storage_error(OSError(errno.ENOENT, "gone", "/x"))
    assert str(from_os_error(full)).startswith("storage /s/teachers stopped taking writes (no space left on device)")

    from ray.tune.error import TuneError

    try:
        try:
            raise from_os_error(full)
        except StorageFailed:
            raise TuneError("Traceback ...")  # as Tune wraps what a callback raised
    except TuneError as err:
        assert isinstance(found_in(err), StorageFailed)
    assert found_in(TuneError("a trial failed")) is None
