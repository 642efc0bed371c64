"""What every command (door) shares: its spec arguments (`spec_parser`) and how it ends (`run_main`): one line
for a user mistake, and for anything else one line that names it, with the traceback kept in a file (in the
folder the command works in, `orchestrator.execution.working_in`, when it has one).

Starting or joining Ray is `orchestrator.execution.ray_start`'s (a command that needs Ray calls it): this
module imports no Ray, MLflow or torch.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Optional

from orchestrator.execution import from_os_error, is_storage_error, stop_own_ray, working_folder
from trainables.config import ConfigError

USER_ERRORS = (ConfigError,)  # raised on purpose for a user mistake (MissingInput among them); nothing else
INTERNAL_ERROR = 1
PACKAGES = ("orchestrator", "trainables")  # whose frames an internal error's line names
_PROJECT = Path(__file__).parent.parent  # the folder that holds them


def summary(doc: str) -> str:
    """A door's `--help` description: its docstring's first paragraph on one line, without the usage it may open
    with (argparse prints the usage above it); the next paragraph when the first was only the usage."""
    paragraphs = [" ".join(p.split()) for p in doc.strip().split("\n\n")]
    first = re.sub(r"^`python -m [^`]*`[:.]?\s*", "", paragraphs[0])
    text = first or (paragraphs[1] if len(paragraphs) > 1 else "")
    return text[:1].upper() + text[1:]


def spec_parser(
    prog: str, description: str, *, tracking: bool = True, data_check: bool = True
) -> argparse.ArgumentParser:
    """The arguments a spec-running command takes: the spec, `--set` overrides, `--address`, and unless it
    logs nothing (`tracking`) or reads its data on this machine (`data_check`), `--tracking-uri` and
    `--skip-data-check`."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("spec", help="a YAML spec, e.g. search_spaces/peer.yaml")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set students.epochs=3 (repeatable; values read as YAML)",
    )
    p.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    if tracking:
        p.add_argument(
            "--tracking-uri",
            help="MLflow tracking URI (default: the spec's, else MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
        )
    if data_check:
        p.add_argument(
            "--skip-data-check",
            action="store_true",
            help="do not look for data.root and init_weights on this machine (only the workers see them)",
        )
    return p


def run_main(main: Callable[[Optional[list[str]]], int]) -> None:
    """Run a command's main; a user mistake prints `error: ...` (one line per problem) and exits 2, no traceback.

    Anything else is not the user's mistake: one line names it, where it happened and its path, and the
    traceback goes to a file that line names (exit 1)."""
    try:
        code = main(None)
    except USER_ERRORS as err:
        code = _report(err)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except Exception as err:  # noqa: BLE001 - reported with its traceback kept
        code = _report(from_os_error(err)) if is_storage_error(err) else _report_internal(err)
    sys.exit(code)


def project_path(filename: str) -> Optional[str]:
    """`orchestrator/search/driver.py` for a file of this project's packages, else None. Pure path arithmetic: the
    working folder may be gone (a frame of ours has an absolute file name, one of `<frozen ...>` none)."""
    path = Path(filename)
    for package in PACKAGES:
        if path.is_relative_to(_PROJECT / package):
            return path.relative_to(_PROJECT).as_posix()
    return None


def internal_error_line(err: BaseException, traceback_file: Path) -> str:
    """`TYPE in FUNCTION (FILE:LINE), called from OUR_FILE:LINE: MESSAGE (path: P); traceback in F`."""
    frames = traceback.extract_tb(err.__traceback__)
    where = ""
    if frames:
        last = frames[-1]
        where = f" in {last.name} ({Path(last.filename).name}:{last.lineno})"
        ours = [f for f in frames[:-1] if f.filename != __file__ and project_path(f.filename)]
        if ours:
            where += f", called from {project_path(ours[-1].filename)}:{ours[-1].lineno}"
    message = (str(err).splitlines() or [""])[0]
    path = getattr(err, "filename", None)
    if path is not None and str(path) not in message:
        message += f" (path: {path})"
    return (
        f"{type(err).__name__}{where}: {message or '(no message)'}; an internal error, not a mistake in "
        f"the spec: the traceback is in {traceback_file}"
    )


def _traceback_file() -> Path:
    folder = working_folder()
    if folder is not None and folder.is_dir():
        return folder / f"error-{time.strftime('%Y%m%d-%H%M%S')}.txt"
    handle, name = tempfile.mkstemp(prefix="dualkd-error-", suffix=".txt")
    os.close(handle)
    return Path(name)


def _report_internal(err: BaseException) -> int:
    _disconnect_ray()
    text = "".join(traceback.format_exception(err))
    try:
        target = _traceback_file()
        target.write_text(text)
    except OSError:  # nowhere to write it: print it, then
        print(text, file=sys.stderr)
        target = Path("stderr above")
    print(f"error: {internal_error_line(err, target)}", file=sys.stderr)
    return INTERNAL_ERROR


def _report(err: BaseException) -> int:
    _disconnect_ray()
    for line in str(err).splitlines() or [type(err).__name__]:
        print(f"error: {line}", file=sys.stderr)
    return 2


def _disconnect_ray() -> None:
    """Ray prints its workers' last log lines when it disconnects: do that first, so the error line comes last."""
    stop_own_ray()
    sys.stdout.flush()
