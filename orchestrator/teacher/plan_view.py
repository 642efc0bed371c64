"""The plan's view of the teacher's weight across `loss.threshold`, from the teacher cache alone: nothing is
trained, built or kept, and torch is imported only when the teacher is cached (`--dry-run` answers in seconds).
"""

from __future__ import annotations

import pickle

from orchestrator.spec import Spec
from orchestrator.teacher.shown_thresholds import THRESHOLD_KEY, thresholds_to_show
from trainables import storage
from trainables.failures import one_line
from trainables.teacher_cache import is_cached, teacher_dir

# What reading a cached teacher's files (`cached_logits`) can raise: a missing or unreachable file, a truncated or
# foreign one (torch's own errors are RuntimeErrors).
READ_ERRORS = (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError)


def cached_plan_lines(spec: Spec) -> list[str]:
    """The plan's view of the teacher's weight, from the teacher cache alone: nothing is trained, built or kept.

    `spec` is resolved (`Spec.resolved`), so it names the teacher folder the run will use. A teacher that is not
    cached yet, or whose files cannot be read, is one line; [] when no threshold is set or searched.
    """
    if not thresholds_to_show(spec):
        return []
    try:
        folder = teacher_dir(storage.join(spec.storage_location, "teachers"), spec)
    except OSError:  # a missing teacher.checkpoint, which names the teacher: the pre-flight reports it
        return []
    try:
        if not is_cached(folder):
            return [f"teacher weight by {THRESHOLD_KEY}: shown here once the teacher is trained (not cached yet)"]
        from orchestrator.teacher.cached_logits import train_logits_of  # torch loads only for a cached teacher
        from orchestrator.teacher.gating import plan_lines

        logits = train_logits_of(folder)
        lines = [] if logits is None else plan_lines(spec, logits)
    except READ_ERRORS as err:  # ValueError too: logits of the wrong shape
        return [f"teacher weight by {THRESHOLD_KEY}: cannot read the cached teacher at {folder}: {one_line(err)}"]
    return lines or [
        f"teacher weight by {THRESHOLD_KEY}: the cached teacher has no training-set logits "
        "(teacher.cache_soft_labels is off)"
    ]
