"""Checks on the driver before Ray starts (and in `--dry-run`): inputs that would otherwise fail late.

A missing data folder, checkpoint or weights file is otherwise found inside a Ray Train worker after
Ray, the teacher and a worker group have started; an unwritable storage after the first epoch; a
`tune.metric` that no epoch reports only when Tune reads the first result. Each problem is one line.
On a cluster whose driver does not see the workers' data, `skip_data_check` (`--skip-data-check`)
skips the checks of what only the workers read. A bucket data root is refused: the image folder
reader opens local paths only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from orchestrator.data_tools import IMAGE_SUFFIXES
from orchestrator.spec.loading import with_values
from orchestrator.spec.schema import Spec, SpecError
from trainables import storage
from trainables.config import ConfigError, RunConfig
from trainables.metric_names import epoch_metric_names


class PreflightError(ConfigError):
    """One or more problems found before starting, one a line: each is printed as `error: ...`."""


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _expanded(path: Optional[str]) -> Optional[str]:
    """The path with ~ and $VARS expanded; None when unset or when a variable is unset (reported elsewhere)."""
    if not path:
        return None
    expanded = os.path.expandvars(os.path.expanduser(path))
    return None if "$" in expanded else expanded


def _has_image(folder: Path) -> bool:
    """Whether the class folder holds an image (ImageFolder reads its subfolders too); stops at the first."""
    return any(
        name.lower().endswith(IMAGE_SUFFIXES) for _, _, files in os.walk(folder, followlinks=True) for name in files
    )


def data_root_problems(root: str) -> list[str]:
    """An imagefolder root: train/ and val/ with the same class folders, each holding an image."""
    base = Path(root)
    hint = "an imagefolder root holds train/<class>/ and val/<class>/"
    if not base.is_dir():
        return [f"data.root {root} not found: {hint} (--skip-data-check when only the workers see it)"]
    missing = [split for split in ("train", "val") if not (base / split).is_dir()]
    if missing:
        return [f"data.root {root} has no {' or '.join(f'{m}/' for m in missing)} folder: {hint}"]
    classes = {split: sorted(p.name for p in (base / split).iterdir() if p.is_dir()) for split in ("train", "val")}
    if not classes["train"]:
        return [f"data.root {root}: train/ holds no class folders: {hint}"]
    if classes["train"] != classes["val"]:
        only_train = sorted(set(classes["train"]) - set(classes["val"]))
        only_val = sorted(set(classes["val"]) - set(classes["train"]))
        parts = [
            f"{len(names)} only in {split}/ (e.g. {names[0]})"
            for split, names in (("train", only_train), ("val", only_val))
            if names
        ]
        return [
            f"data.root {root}: train/ and val/ hold different classes ({', '.join(parts)}): "
            "both need the same class folders"
        ]
    empty = [
        f"{split}/{name}"
        for split in ("train", "val")
        for name in classes[split]
        if not _has_image(base / split / name)
    ]
    if empty:
        return [
            f"data.root {root}: {len(empty)} class folders hold no images (e.g. {empty[0]}): "
            "add images or remove the folders"
        ]
    return []


def check_data(cfg: RunConfig, skip: bool, found: Findings) -> None:
    if cfg.data.name != "imagefolder":
        return
    root = _expanded(cfg.data.root)
    if root is None:
        return
    if storage.is_uri(root):
        found.problems.append(
            f"data.root {root} is a bucket, and imagefolder reads only local paths: copy the "
            "images to a folder every node mounts at the same path (local or shared disk) and "
            "set data.root to it"
        )
    elif skip:
        found.notes.append(
            "data check skipped (--skip-data-check): the workers will find any problem with data.root and init_weights"
        )
    else:
        found.problems.extend(data_root_problems(root))


def weight_files(cfg: RunConfig, skip_worker_files: bool) -> dict[str, str]:
    """Setting -> file of the checkpoints and weights to look for (the workers' own only unless skipped)."""
    files = {"teacher.checkpoint": cfg.teacher.checkpoint}  # read on the driver, when the teacher is prepared
    if not skip_worker_files:
        files["teacher.init_weights"] = cfg.teacher.init_weights
        files.update({f"students.init_weights.{arch}": path for arch, path in cfg.students.init_weights.items()})
    return {key: path for key, path in files.items() if _expanded(path)}


def check_files(cfg: RunConfig, skip: bool, found: Findings) -> None:
    for key, path in weight_files(cfg, skip).items():
        if not Path(_expanded(path)).is_file():
            found.problems.append(f"{key} {path} not found: give an existing weights file, or remove {key}")


def _existing_ancestor(location: str) -> Path:
    path = Path(location)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_storage(location: str, create: bool, found: Findings) -> None:
    """A test write where outputs go. A dry run writes nothing on a local disk: the nearest existing
    folder must let this user create the rest; a bucket gets a probe that is deleted at once."""
    try:
        if create or storage.is_uri(location):
            storage.check_writable(location)
        else:
            ancestor = _existing_ancestor(location)
            if not ancestor.is_dir():
                raise NotADirectoryError(f"{ancestor} is not a folder")
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise PermissionError(f"{ancestor} is not writable by this user")
    except OSError as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        found.problems.append(
            f"storage {location} is not writable ({reason}): fix the path, the bucket or its credentials"
        )


def run_settings(spec: Spec) -> RunConfig:
    """The spec's run settings with paths as written: an unset variable stays (and its checks are skipped)."""
    return RunConfig.model_validate(spec.model_dump(include=set(RunConfig.model_fields)))


def trial_configs(spec: Spec) -> list[RunConfig]:
    """The run settings whose reports Tune reads: the spec's, each comparison trial's, each searched choice."""
    values = [dict(v) for v in spec.variants()]
    for key, param in spec.search.items():
        values += [{key: choice} for choice in getattr(param, "choices", [])]
    configs = []
    for v in values:
        try:
            configs.append(run_settings(with_values(spec, v)))
        except SpecError:
            continue  # a combination the spec rejects is never a trial
    return configs or [run_settings(spec)]


def check_metric(spec: Spec, found: Findings) -> None:
    """Each of `tune.metric` (and `tune.scheduler_metric`) must be in every epoch's report of every trial:
    Tune, Optuna and ASHA read them each epoch."""
    names = [epoch_metric_names(cfg) for cfg in trial_configs(spec)]
    common = [n for n in names[0] if all(n in other for other in names[1:])]
    keys = [("tune.metric", metric) for metric, _ in spec.tune.objectives]
    keys += [("tune.scheduler_metric", spec.tune.scheduler_metric)] if spec.tune.scheduler_metric else []
    for key, metric in keys:
        if metric not in common:
            found.problems.append(
                f"{key} {metric!r} is not reported by every trial's epochs: use one of {', '.join(common)}"
            )


def tracking_problem(uri: str, experiment: str, create: bool) -> Optional[str]:
    """What keeps a tracking server from taking this command's runs, else None: it must answer, take the
    credentials in MLFLOW_TRACKING_USERNAME/PASSWORD (its basic-auth app), and let them write the experiment
    (checked by setting its kind tag, which the sweep sets anyway; not with `create` False). Each call is
    tried once: a server that is away is a problem to fix before Ray starts."""
    import requests

    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    auth = (user, password) if user and password else None
    api = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments"
    try:
        got = requests.get(f"{api}/get-by-name", params={"experiment_name": experiment}, auth=auth, timeout=15)
        if got.status_code == 200 and create:
            experiment_id = got.json()["experiment"]["experiment_id"]
            got = requests.post(
                f"{api}/set-experiment-tag",
                auth=auth,
                timeout=15,
                json={
                    "experiment_id": experiment_id,
                    "key": "mlflow.experimentKind",
                    "value": "custom_model_development",
                },
            )
    except requests.RequestException as err:
        return (
            f"MLflow tracking server {uri} does not answer ({type(err).__name__}): start it, or fix "
            "--tracking-uri / MLFLOW_TRACKING_URI"
        )
    if got.status_code == 401:
        return (
            f"MLflow tracking server {uri} refused the credentials: set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD to a user of its basic-auth app" + ("" if auth else " (none are set)")
        )
    if got.status_code == 403:
        return (
            f"MLflow user {user!r} may not write experiment {experiment!r} on {uri}: ask its admin for EDIT "
            "permission, or use another experiment (mlflow.experiment)"
        )
    if got.status_code not in (200, 404):  # 404: the experiment does not exist yet, and will be created
        return f"MLflow tracking server {uri} answered HTTP {got.status_code}: check the URI (the server's root)"
    return None


def check_tracking(uri: Optional[str], experiment: str, create: bool, found: Findings) -> None:
    """An `http(s)://` tracking server's answer; in a dry run (not `create`) a note, as the server may be one
    that only the cluster reaches."""
    problem = tracking_problem(uri, experiment, create) if uri and uri.startswith(("http://", "https://")) else None
    if problem:
        (found.problems if create else found.notes).append(problem if create else f"{problem} (before the real run)")


def preflight(
    spec: Spec,
    outputs: str,
    *,
    create: bool,
    skip_data_check: bool = False,
    metric: bool = True,
    tracking_uri: Optional[str] = None,
) -> list[str]:
    """Every check; raises `PreflightError` listing the problems, else returns notes to print.

    `outputs` is where this command writes (STORAGE/sweeps or STORAGE/single); without `create` (a
    dry run) nothing is created there.
    """
    found = Findings()
    cfg = run_settings(spec)
    check_data(cfg, skip_data_check, found)
    check_files(cfg, skip_data_check, found)
    check_storage(outputs, create, found)
    check_tracking(tracking_uri, spec.mlflow.experiment or spec.name, create, found)
    if metric:
        check_metric(spec, found)
    if found.problems:
        raise PreflightError("\n".join(found.problems))
    return found.notes
