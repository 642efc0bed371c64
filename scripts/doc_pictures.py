"""Remakes the docs' pictures from real runs: `python scripts/doc_pictures.py` (a few minutes on a CPU).

It runs `search_spaces/smoke.yaml` (4 trials) and a small `search_spaces/compare.yaml` (3 methods x 2 seeds
at the smoke test's size) in a fresh folder, and writes into `docs/images/`:
- `ray_dashboard.png`: the Ray dashboard's jobs page while the sweep's trials run;
- `mlflow_runs.png`: the sweep's MLflow runs table (`mlflow server` on its sqlite store);
- `sweep_val_top1_vs_threshold.png`, `sweep_optimization_history.png`: two of the sweep's own plots;
- `compare_accuracy_by_certainty.png`, `compare_reliability.png`: two of the comparison's plots;
and `docs/example-sweep.md`: the finished sweep folder's tree, its `results.md` and `best.yaml`.

Needs `pip install playwright` and a Chromium (`--chromium`, by default `/usr/bin/chromium`, Debian's
`chromium` package); Playwright's own browser download is not needed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[1]
SWEEP = ["search_spaces/smoke.yaml", "--set", "tune.num_trials=4"]
COMPARE = [
    "search_spaces/compare.yaml",
    "--set",
    "compare.methods=[ce, kd, ua_dual]",
    "--set",
    "compare.seeds=[0, 1]",
    "--set",
    "data.image_size=8",
    "--set",
    "data.train_subset=240",
    "--set",
    "teacher.arch=resnet18",
    "--set",
    "teacher.epochs=1",
    "--set",
    "students.epochs=2",
]
MAX_WIDTH = 1000  # pixels: the docs' column is narrower


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python scripts/doc_pictures.py",
        description="Run a small sweep and comparison and remake the docs' pictures and example sweep page.",
    )
    p.add_argument("--work", help="folder for the runs' storage and MLflow store (default: a temporary one)")
    p.add_argument("--images", default=str(REPO / "docs/images"), help="where the PNGs go (default: docs/images)")
    p.add_argument("--page", default=str(REPO / "docs/example-sweep.md"), help="the example sweep page to write")
    p.add_argument("--chromium", default="/usr/bin/chromium", help="the Chromium executable Playwright drives")
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_url(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


class Browser:
    """Headless Chromium through Playwright: one page per picture."""

    def __init__(self, chromium: str):
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])

    def shoot(
        self, url: str, out: Path, settle_s: float = 6, before: Optional[Callable] = None, cookies: tuple = ()
    ) -> Path:
        page = self._browser.new_page(viewport={"width": 1400, "height": 800})
        page.context.add_cookies([{"name": k, "value": v, "url": url} for k, v in cookies])
        page.goto(url, wait_until="networkidle")
        time.sleep(settle_s)  # the pages fill in from their APIs after load
        if before:
            before(page)
        page.screenshot(path=str(out))
        page.close()
        return out

    def close(self) -> None:
        self._browser.close()
        self._playwright.stop()


def shrink(src: Path, out: Path) -> Path:
    """A copy of `src` at most MAX_WIDTH wide, as a 256-colour PNG."""
    from PIL import Image

    with Image.open(src) as image:
        image = image.convert("RGB")
        if image.width > MAX_WIDTH:
            image = image.resize((MAX_WIDTH, round(image.height * MAX_WIDTH / image.width)), Image.LANCZOS)
        image.quantize(256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(f"  {out.relative_to(REPO) if out.is_relative_to(REPO) else out}: {out.stat().st_size // 1024} KB")
    return out


def run_sweep(args: list[str], env: dict, on_line: Callable[[str], None]) -> None:
    """`python -m orchestrator.sweep ARGS`, its output echoed and handed line by line to `on_line`."""
    cmd = [sys.executable, "-m", "orchestrator.sweep", *args]
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        sys.stdout.write(line)
        on_line(line)
    if proc.wait():
        raise SystemExit(f"the sweep failed (exit {proc.returncode})")


def ray_token() -> str:
    """The token the local Ray asks for (`ray get-auth-token`): the dashboard reads it from a cookie."""
    ray = Path(sys.executable).with_name("ray")
    cmd = [str(ray) if ray.exists() else "ray", "get-auth-token"]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


def sweep_with_dashboard(env: dict, browser: Browser, tmp: Path) -> Optional[Path]:
    """Runs the smoke sweep; once its trials run, shoots the Ray dashboard's jobs page from another thread's
    cue (the sweep's output must keep flowing meanwhile)."""
    found: dict[str, str] = {}
    running = threading.Event()

    def on_line(line: str) -> None:
        url = re.search(r"Ray dashboard: (http\S+)", line)
        if url:
            found["url"] = url.group(1)
        if "RUNNING" in line and re.search(r"[2-9] RUNNING", line):
            running.set()

    worker = threading.Thread(target=run_sweep, args=(SWEEP, env, on_line), daemon=True)
    worker.start()
    shot = None
    while worker.is_alive():
        if running.wait(1) and "url" in found and shot is None:
            token = ("ray-authentication-token", ray_token())
            shot = browser.shoot(f"{found['url']}/#/jobs", tmp / "dashboard.png", settle_s=4, cookies=(token,))
    worker.join()
    return shot


def mlflow_runs_table(uri: str, experiment: str, browser: Browser, tmp: Path) -> Path:
    """`mlflow server` on the store, and a screenshot of the experiment's runs table, its trials unfolded."""
    import mlflow

    experiment_id = mlflow.MlflowClient(uri).get_experiment_by_name(experiment).experiment_id
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1"]
        + ["--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_url(f"{base}/health", 120)

        def unfold(page) -> None:
            for button in page.get_by_role("button", name=re.compile("expand", re.I)).all()[:1]:
                button.click()
            time.sleep(2)

        page = f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
        return browser.shoot(page, tmp / "mlflow.png", before=unfold)
    finally:
        os.killpg(server.pid, 15)
        server.wait()


def newest(folder: Path, name: str) -> Path:
    return max(folder.glob(f"{name}-*"), key=lambda p: p.stat().st_mtime)


def tree(folder: Path, prefix: str = "") -> list[str]:
    """The folder's files, drawn like `tree`; a trial's checkpoints folded to one line."""
    lines = []
    entries = sorted(folder.iterdir(), key=lambda p: (p.is_file(), p.name))
    for i, entry in enumerate(entries):
        last = i == len(entries) - 1
        lines.append(f"{prefix}{'└── ' if last else '├── '}{entry.name}{'/' if entry.is_dir() else ''}")
        if entry.is_dir():
            inner = prefix + ("    " if last else "│   ")
            if entry.name.startswith(("checkpoint_", "TorchTrainer_")) or entry.parent.name == "train":
                count = sum(1 for _ in entry.rglob("*") if _.is_file())
                lines.append(f"{inner}└── ... ({count} files)")
            else:
                lines.extend(tree(entry, inner))
    return lines


def example_page(folder: Path, out: Path) -> None:
    """The docs page of a finished sweep's folder: its tree, results.md and best.yaml."""
    results = (folder / "results.md").read_text().strip()
    best = (folder / "best.yaml").read_text().strip()
    name = re.sub(r"-\d{8}-\d{6}$", "-DATE-TIME", folder.name)
    text = f"""# A finished sweep, file by file

Written by `python scripts/doc_pictures.py` from a real run of `search_spaces/smoke.yaml` with
`--set tune.num_trials=4` on a CPU (toy size: its numbers mean nothing). Every sweep leaves this layout in
`STORAGE/sweeps/NAME-DATE-TIME/` ([the sweep](sweep.md#what-happens)); pictures of its plots and of the
MLflow runs table are on [the sweep's page](sweep.md#what-a-sweep-looks-like).

```
{name}/
{chr(10).join(tree(folder))}
```

## results.md

{results}

## best.yaml

```yaml
{best}
```
"""
    out.write_text(text)
    print(f"  {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    work = Path(args.work or tempfile.mkdtemp(prefix="dualkd-pictures-")).resolve()
    images = Path(args.images)
    images.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    env = {**os.environ, "DUALKD_STORAGE": str(work / "runs"), "MLFLOW_TRACKING_URI": uri}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    tmp = work / "shots"
    tmp.mkdir(parents=True, exist_ok=True)
    browser = Browser(args.chromium)
    try:
        dashboard = sweep_with_dashboard(env, browser, tmp)
        sweep = newest(work / "runs/sweeps", "smoke")
        run_sweep(COMPARE, env, lambda line: None)
        comparison = newest(work / "runs/sweeps", "compare")
        mlflow = mlflow_runs_table(uri, "smoke", browser, tmp)
    finally:
        browser.close()
    print("pictures:")
    if dashboard:
        shrink(dashboard, images / "ray_dashboard.png")
    else:
        print("  ray_dashboard.png: not remade (no two trials were seen running at once)")
    shrink(mlflow, images / "mlflow_runs.png")
    shrink(sweep / "val_top1_vs_loss_threshold.png", images / "sweep_val_top1_vs_threshold.png")
    shrink(sweep / "optimization_history.png", images / "sweep_optimization_history.png")
    shrink(comparison / "accuracy_by_certainty.png", images / "compare_accuracy_by_certainty.png")
    shrink(comparison / "reliability_resnet18.png", images / "compare_reliability.png")
    example_page(sweep, Path(args.page))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
