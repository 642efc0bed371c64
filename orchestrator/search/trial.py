"""The Tune function trainable: one trial = one `TorchTrainer` over the spec with the trial's values.

The trial's config holds only the sampled (or fixed) dotted-key values; the spec and the prepared
teacher come through `tune.with_parameters`. The TorchTrainer's name is the trial id, so a trial that
Tune restarts (resume, failure) finds its own checkpoints and continues from the last epoch.
Nothing runs after `fit()`: ASHA may stop the trial at any report before its last epoch's; the run is then aborted
and the trial's thread ends (`LeanTorchTrainer`), so Tune can hand the trial's actor to the next trial. A trial whose
workers failed in a way a restart cannot fix (a diverged loss, an unreadable image) fails with their one line, and
Tune's retry of it fails at once (see `trainables.failures`).
"""

from __future__ import annotations

import os
from typing import Any, Optional

import ray.tune

from orchestrator.execution import TuneReportCallback, build_trainer, failure_location, fit, hand_over_last_report
from orchestrator.spec import Spec, with_values
from trainables import failures, trace

# How long Tune's reset of a trial actor for the next trial waits for the last trial's thread: an aborted run's
# workers get up to 5 s to stop (Ray Train's patience) on a busy machine; a reset that waits in vain fails a trial.
ACTOR_HANDOVER_ENV, ACTOR_HANDOVER_S = "TUNE_FUNCTION_THREAD_TIMEOUT_S", "15"


def run_trial(
    config: dict[str, Any],
    spec: dict,
    teacher_dir: Optional[str],
    train_storage: str,
    banks: Optional[dict[int, Optional[str]]] = None,
) -> None:
    trial_spec = with_values(Spec.model_validate(spec), config)
    bank_dir = (banks or {}).get(trial_spec.seed)  # the bank of the trial's seed, built before any trial
    run_cfg = trial_spec.run_config().model_copy(update={"teacher_dir": teacher_dir, "bank_dir": bank_dir})
    # Tune's hand-over of this actor to the next trial waits this long for this thread (Ray's default is 2 s)
    os.environ.setdefault(ACTOR_HANDOVER_ENV, ACTOR_HANDOVER_S)
    name = ray.tune.get_context().get_trial_id()
    trace.mark(name, "trainable_start")
    failures.raise_recorded(failure_location(train_storage, name))
    fit(build_trainer(trial_spec, run_cfg, name=name, storage_path=train_storage, callbacks=[TuneReportCallback()]))
    trace.mark(name, "fit_end")
    hand_over_last_report()


def trial_trainable(
    spec: Spec, teacher_dir: Optional[str], train_storage: str, banks: Optional[dict[int, Optional[str]]] = None
):
    """`run_trial` bound to the spec, needing one TRAIN_DRIVER slot (its workers ask for their own CPUs).

    `banks`: the soft-label bank of each seed the trials train with (`orchestrator.teacher.prepare_teacher_and_banks`).
    """
    bound = ray.tune.with_parameters(
        run_trial, spec=spec.model_dump(), teacher_dir=teacher_dir, train_storage=train_storage, banks=banks
    )
    return ray.tune.with_resources(bound, {"TRAIN_DRIVER": 1})
