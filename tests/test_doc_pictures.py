"""`scripts/doc_pictures.py`, which remakes the docs' pictures from real runs (minutes: never run here), answers
`--help` without loading Ray, torch, MLflow or Playwright; every picture it writes is linked from the docs."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "doc_pictures.py"


def test_help_loads_nothing_heavy():
    probe = (
        "import runpy, sys\n"
        f"sys.argv = [{str(SCRIPT)!r}, '--help']\n"
        "try:\n"
        f"    runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted({'ray', 'torch', 'mlflow', 'playwright'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "usage: python scripts/doc_pictures.py" in out
    assert out.strip().endswith("[]")


def test_every_picture_it_makes_is_in_the_docs():
    made = set(re.findall(r'images / "([a-z_]+\.png)"', SCRIPT.read_text()))
    assert len(made) >= 4
    linked = set(re.findall(r"\(images/([a-z_]+\.png)\)", "".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))))
    assert made <= linked
    assert all((ROOT / "docs" / "images" / name).stat().st_size < 250_000 for name in made)
