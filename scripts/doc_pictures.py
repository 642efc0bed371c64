"""Remakes the docs' pictures from real runs: `python scripts/doc_pictures.py` (minutes to half an hour on a CPU).

It runs `search_spaces/smoke.yaml` (4 trials) and a small `search_spaces/compare.yaml` (3 methods x 2 seeds
of 2 epochs on 8 px digits, a ResNet-18 teacher of 3 epochs) in a fresh folder, and writes into `docs/images/`:
- `ray_dashboard.png`, `ray_dashboard_actors.png`: the Ray dashboard's jobs and actors pages while the sweep's
  trials run;
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
    "teacher.arch=resnet18",
    "--set",
    "teacher.epochs=3",
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
        self,
        url: str,
        out: Path,
        settle_s: float = 6,
        before: Optional[Callable] = None,
        cookies: tuple = (),
        height: int = 800,
    ) -> Path:
        page = self._browser.new_page(viewport={"width": 1400, "height": height})
        page.context.add_cookies([{"name": k, "value": v, "url": url} for k, v in cookies])
        page.goto(url, wait_until="load")
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


def sweep_with_dashboard(env: dict, browser: Browser, tmp: Path) -> list[Path]:
    """Runs the smoke sweep; once two trials run, shoots the Ray dashboard's jobs and actors pages (the sweep runs
    in another thread: its output must keep flowing meanwhile)."""
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
    shots: list[Path] = []
    while worker.is_alive():
        if running.wait(1) and "url" in found and not shots:
            token = ("ray-authentication-token", ray_token())
            for page, height in (("jobs", 520), ("actors", 640)):
                url = f"{found['url']}/#/{page}"
                shots.append(browser.shoot(url, tmp / f"{page}.png", 4, hide_paths, (token,), height))
    worker.join()
    return shots


def hide_paths(page) -> None:
    """This machine's paths in the page's text (the interpreter's, in a job's entrypoint) as plain names."""
    names = {sys.executable: "python", str(REPO) + "/": ""}
    page.evaluate(
        """names => {
            const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
            for (let node = walk.nextNode(); node; node = walk.nextNode())
                for (const [path, name] of Object.entries(names))
                    node.nodeValue = node.nodeValue.split(path).join(name);
        }""",
        names,
    )


RUNS_COLUMNS = ("loss.threshold", "loss.temperature", "resnet18/val_top1", "mobilenet_v2/val_top1", "students.epochs")


def show_runs_table(page) -> None:
    """On MLflow's runs page: the assistant and sidebar closed, a few settings and figures as columns, the
    sweep's parent run unfolded to its trials."""
    page.get_by_text(re.compile(r"^smoke-\d")).first.wait_for(timeout=120_000)
    page.get_by_role("button", name="Close").click()
    page.get_by_role("button", name="Toggle sidebar").click()
    page.get_by_role("button", name="Columns").click()
    search = page.get_by_placeholder("Search columns")
    for name in ("Source", "Models", "Dataset", *RUNS_COLUMNS):  # the first three are shown: a click hides them
        search.fill(name)
        time.sleep(0.7)
        page.get_by_text(name, exact=True).last.click()
    page.keyboard.press("Escape")
    page.locator(".ag-pinned-left-cols-container .ag-row").first.locator("button").first.click()
    page.mouse.click(5, 500)
    time.sleep(3)


def mlflow_runs_table(uri: str, experiment: str, browser: Browser, tmp: Path) -> Path:
    """`mlflow server` on the store, and a screenshot of the experiment's runs table."""
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
        page = f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
        return browser.shoot(page, tmp / "mlflow.png", settle_s=0, before=show_runs_table, height=480)
    finally:
        os.killpg(server.pid, 15)
        server.wait()


def newest(folder: Path, name: str) -> Path:
    return max(folder.glob(f"{name}-*"), key=lambda p: p.stat().st_mtime)


NOTES = {  # what the main entries of a sweep folder hold
    "train/": "each trial's epoch checkpoints (a restarted trial continues from its last)",
    "mlflow-journal/": "MLflow's writes, kept until sent (python -m orchestrator.sync)",
    ".tune-state-kept/": "Tune's state, kept for --resume",
    "best.yaml": "the best trial as a spec: python -m orchestrator.train best.yaml",
    "optuna.db": "the Optuna study",
    "results.csv": "one row per trial (below as results.md)",
    "spec.yaml": "the resolved spec the sweep ran",
}


def entry_name(path: Path) -> str:
    """A file's name, with the machine's name in TensorBoard's event files left out."""
    return "events.out.tfevents.*" if path.name.startswith("events.out.tfevents.") else path.name


def tree(folder: Path, prefix: str = "") -> list[str]:
    """The folder's files, drawn like `tree`; a trial's and a journal's folders folded to one line."""
    lines = []
    entries = sorted(folder.iterdir(), key=lambda p: (p.is_file(), p.name))
    for i, entry in enumerate(entries):
        last = i == len(entries) - 1
        name = entry_name(entry) + ("/" if entry.is_dir() else "")
        note = f"  # {NOTES[name]}" if name in NOTES else ""
        lines.append(f"{prefix}{'└── ' if last else '├── '}{name}{note}")
        inner = prefix + ("    " if last else "│   ")
        if entry.is_dir() and (entry.name.startswith("run_trial_") or entry.parent.name in ("train", "mlflow-journal")):
            files = sorted(entry_name(f) for f in entry.rglob("*") if f.is_file())
            shown = ", ".join(files[:4]) + (f", ... ({len(files)} files)" if len(files) > 4 else "")
            lines.append(f"{inner}└── {shown or '(empty)'}")
        elif entry.is_dir():
            lines.extend(tree(entry, inner))
    return lines


def example_page(folder: Path, work: Path, out: Path) -> None:
    """The docs page of a finished sweep's folder: its tree, results.md and best.yaml (WORK for the folder the
    script ran in)."""
    results = (folder / "results.md").read_text().strip()
    best = (folder / "best.yaml").read_text().strip().replace(str(work), "WORK")
    name = re.sub(r"-\d{8}-\d{6}$", "-DATE-TIME", folder.name)
    text = f"""# A finished sweep, file by file

Written by `python scripts/doc_pictures.py` from a real run of `search_spaces/smoke.yaml` with
`--set tune.num_trials=4` on a CPU (toy size: its numbers mean nothing; `WORK` stands for the folder it
ran in). Every sweep leaves this layout in `STORAGE/sweeps/NAME-DATE-TIME/`
([the sweep](sweep.md#what-happens)); pictures of its plots and of the MLflow runs table are in
[what a sweep looks like](sweep.md#what-a-sweep-looks-like).

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
        shrink(dashboard[0], images / "ray_dashboard.png")
        shrink(dashboard[1], images / "ray_dashboard_actors.png")
    else:
        print("  ray_dashboard*.png: not remade (no two trials were seen running at once)")
    shrink(mlflow, images / "mlflow_runs.png")
    shrink(sweep / "val_top1_vs_loss_threshold.png", images / "sweep_val_top1_vs_threshold.png")
    shrink(sweep / "optimization_history.png", images / "sweep_optimization_history.png")
    shrink(comparison / "accuracy_by_certainty.png", images / "compare_accuracy_by_certainty.png")
    shrink(comparison / "reliability_resnet18.png", images / "compare_reliability.png")
    example_page(sweep, work, Path(args.page))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
