"""One run of a spec's fixed values, no search: what `python -m orchestrator.train` does. The sweep's path without
the Tuner: the teacher prepared (or taken from the cache), one `TorchTrainer` of the students, one MLflow run in
the spec's experiment with the settings, every epoch, the model sizes and the final predictions.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from orchestrator.execution import build_trainer, check_outputs_persist, fit, start_ray, working_in
from orchestrator.spec import Spec, load_spec, preflight
from orchestrator.teacher import prepare_teacher
from orchestrator.tracking import EpochLogger, RunLog, TrackedRun, absolute_uri, git_commit, tracking_uri, where_to_look
from trainables import storage


def final_summary(spec: Spec, metrics: dict) -> str:
    lines = []
    for name in spec.students.names:
        lines.append(
            f"  {name:<16} top-1 {metrics[f'{name}/val_top1']:.4f}  top-5 {metrics[f'{name}/val_top5']:.4f}"
            f"  ECE {metrics[f'{name}/val_ece']:.4f}"
        )
    if "teacher/val_top1" in metrics:
        lines.append(f"  {'teacher':<16} top-1 {metrics['teacher/val_top1']:.4f}  ({spec.teacher.arch})")
    return "\n".join(lines)


def train_once(
    spec_file: str,
    overrides: list[str],
    *,
    address: Optional[str] = None,
    mlflow_uri: Optional[str] = None,
    skip_data_check: bool = False,
) -> int:
    """`python -m orchestrator.train` once its arguments are parsed: the spec read, resolved and checked, the
    teacher prepared, one run trained and tracked; the exit status."""
    spec = load_spec(spec_file, overrides)
    uri = tracking_uri(mlflow_uri or spec.mlflow.tracking_uri)
    check_outputs_persist(spec.storage_setting, uri)
    uri = absolute_uri(uri)  # Ray Train's controller logs the epochs, from its own folder
    spec_text = Path(spec_file).read_text()
    spec = spec.resolved()  # paths fixed before Ray starts
    outputs = storage.join(spec.storage_location, "single")
    for note in preflight(spec, outputs, create=True, skip_data_check=skip_data_check, metric=False, tracking_uri=uri):
        print(f"note: {note}")
    commit = git_commit()  # before Ray starts: a job's working folder may be re-unpacked when it connects
    run_name = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder = (storage.cache_root() / "single" if storage.is_uri(outputs) else Path(outputs)) / run_name
    with working_in(folder):  # the run's MLflow journal is kept here too
        start_ray(address)
        started = time.time()
        run_cfg = prepare_teacher(spec)
        tracked = TrackedRun(uri, spec.mlflow.experiment or spec.name, spec.data.model_dump(), folder, spec.mlflow.tags)
        try:
            code = train_tracked(spec, tracked, run_cfg, run_name, outputs, spec_text, commit, started)
        except BaseException:
            tracked.close(5, folder)
            raise
        tracked.close(spec.mlflow.send_timeout_s, folder)
        return code


def train_tracked(
    spec: Spec,
    tracked: TrackedRun,
    run_cfg,
    run_name: str,
    outputs: str,
    spec_text: str,
    commit: Optional[str],
    started: float,
) -> int:
    """The run itself, once its MLflow run (journaled) exists."""
    tracked.create(run_name, {})
    tracked.log_spec(spec.model_dump(), spec_text, commit)
    print(
        f"MLflow: run '{run_name}' in experiment '{spec.mlflow.experiment or spec.name}': "
        f"{where_to_look(tracked.uri, tracked.experiment_id)}"
    )
    trainer = build_trainer(
        spec,
        run_cfg,
        name=run_name,
        storage_path=outputs,
        callbacks=[EpochLogger(tracked.uri, tracked.journal.folder, tracked.run_id)],
    )
    try:
        result = fit(trainer)  # RunFailed: the workers' one line, exit 2
    except KeyboardInterrupt:
        tracked.finish("KILLED")
        raise
    except Exception as err:
        tracked.journal.set_tag(tracked.run_id, "error", str(err).splitlines()[0][:500] if str(err) else "failed")
        tracked.finish("FAILED")
        raise
    if result.checkpoint is not None:
        RunLog(tracked.journal, tracked.run_id).log_predictions(result.checkpoint.path, spec.storage_location)
    tracked.finish()
    metrics = result.metrics
    print(
        f"\n{spec.name}: method {spec.loss.method}, {metrics['epoch']} epochs in {time.time() - started:.0f} s"
        f" ({result.path})"
    )
    print(final_summary(spec, metrics))
    return 0
