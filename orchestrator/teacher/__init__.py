"""The frozen teacher on the driver: prepared once before any trial, how unsure it is, and what `loss.threshold`
gates of it.

- `preparation`: the teacher and its soft-label banks, trained by Ray Train runs or found in the cache, checked,
  and handed to the trials as cache folders (`prepare_teacher_and_banks`, `prepare_teacher`).
- `quality`: its training-set uncertainty (`teacher_uncertainty`, `UNSURE_U`) and its validation figures: the
  AUROC of u for its own errors, its top-1 on blind-spot classes (`teacher_val_summary`).
- `shown_thresholds`: which thresholds and weighting a spec's gating view shows (no torch).
- `gating`: the teacher's weight w and the share gated out across `loss.threshold` (`gating_curve`); its plot
  on the parent run is `orchestrator.results.teacher_gating`'s.
- `cached_logits`: the cached teacher's training-set logits (`train_logits_of`).
- `plan_view`: the plan's lines on the gating, from the cache alone (`cached_plan_lines`; torch only when the
  teacher is cached).
- `check`: `python -m orchestrator.teacher_check` (`check_teacher`).

Above it: `orchestrator.results` and `orchestrator.search`; below it: `orchestrator.execution` (the Ray Train runs)
and `orchestrator.spec`. torch is imported by the modules that need it, when first used through this face.
"""

from orchestrator import lazy_face

_MODULES = {  # module -> the names it offers the other packages (imported when first used)
    "preparation": (
        "prepare_teacher",
        "prepare_teacher_and_banks",
        "run_seeds",
        "ensure_teacher",
        "ensure_bank",
        "teacher_cache",
        "chance_warning",
    ),
    "quality": ("UNSURE_U", "teacher_uncertainty", "teacher_val_summary", "error_auroc", "summary_lines"),
    "shown_thresholds": ("THRESHOLD_KEY", "thresholds_to_show", "search_range", "shown_weighting"),
    "gating": ("GRID", "METRIC_PREFIX", "gating_curve", "shown_points", "plan_lines"),
    "cached_logits": ("train_logits_of",),
    "plan_view": ("cached_plan_lines", "READ_ERRORS"),
    "check": ("check_teacher",),
}
__getattr__, __dir__, __all__ = lazy_face(__name__, _MODULES)
