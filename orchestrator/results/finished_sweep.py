"""A sweep read back from its folder (`read_sweep`): the files a finished sweep writes there (results.csv, best.yaml
or the Pareto front's, comparison.csv, spec.yaml) as one `SweepResult`, and its MLflow parent run's id from the
sweep's journal. No Ray and no MLflow server: what the Python API (`orchestrator.search.api`) hands back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd
import yaml

from orchestrator.execution import SPEC_FILE, SweepFolder
from orchestrator.results.best_specs import PARETO_DIR
from orchestrator.spec import SpecError
from orchestrator.tracking import JOURNAL_FOLDER, SWEEP_TAG, TRIAL_TAG, JournalFiles, sent_run_id

RESULTS_FILE = "results.csv"  # the files of a finished sweep this reads (`search_outputs`, `comparison`)
BEST_FILE = "best.yaml"
PARETO_FILE = "pareto.csv"
COMPARISON_FILE = "comparison.csv"


@dataclass
class SweepResult:
    """One sweep as its folder holds it. A table the sweep did not write is None (a search has no comparison, a
    Pareto search no best.yaml, an interrupted sweep no results.csv)."""

    name: str  # the sweep folder's name: SPEC_NAME-DATE-TIME, MLflow's parent run name
    folder: Path  # the sweep folder on this machine (for a bucket: its local copy)
    location: str  # where the sweep lives: that folder, or its bucket URI
    spec: dict  # the resolved spec the sweep ran (spec.yaml)
    table: Optional[pd.DataFrame]  # one row per trial (results.csv)
    best: Optional[dict] = None  # the best trial's ready-to-train spec (best.yaml)
    best_file: Optional[Path] = None
    pareto: Optional[pd.DataFrame] = None  # a Pareto search's front (pareto.csv)
    pareto_files: dict[str, Path] = field(default_factory=dict)  # front trial (t03) -> its spec (pareto/t03.yaml)
    comparison: Optional[pd.DataFrame] = None  # a comparison's table (comparison.csv)
    tracking_uri: Optional[str] = None  # the MLflow server the sweep wrote to
    parent_run_id: Optional[str] = None  # None until that server has taken the parent run
    exit_code: Optional[int] = None  # a sweep run by the API: what the command would exit with (0: it finished)

    @property
    def finished(self) -> bool:
        """Whether the sweep wrote its results (a sweep whose every trial failed writes them too)."""
        return self.table is not None

    def __repr__(self) -> str:
        rows = "no results" if self.table is None else f"{len(self.table)} trials"
        return f"SweepResult({self.name!r}, {rows}, folder={str(self.folder)!r}, parent_run_id={self.parent_run_id!r})"


def _csv(path: Path) -> Optional[pd.DataFrame]:
    return pd.read_csv(path) if path.is_file() else None


def read_sweep(folder: SweepFolder, exit_code: Optional[int] = None) -> SweepResult:
    """The sweep in `folder` (a bucket's files fetched into its local copy first); a SpecError naming the fix when
    the folder is no sweep."""
    folder.fetch(SPEC_FILE, RESULTS_FILE, BEST_FILE, PARETO_FILE, COMPARISON_FILE)
    local = folder.local
    if not (local / SPEC_FILE).is_file():
        what = "is not there" if not local.exists() else f"holds no {SPEC_FILE}"
        raise SpecError(
            f"{folder.location} {what}, so it is no sweep folder (or its sweep stopped before its first trial): "
            "give a folder under STORAGE/sweeps, e.g. runs/sweeps/smoke-20250601-093000, or a sweep's name"
        )
    spec = yaml.safe_load((local / SPEC_FILE).read_text())
    best_file = local / BEST_FILE
    pareto = _csv(local / PARETO_FILE)
    front = pareto["trial"].tolist() if pareto is not None and "trial" in pareto else []
    folder.fetch(*(f"{PARETO_DIR}/{trial}.yaml" for trial in front))
    front_specs = {trial: local / PARETO_DIR / f"{trial}.yaml" for trial in front}
    journal = local / JOURNAL_FOLDER
    return SweepResult(
        name=folder.name,
        folder=local,
        location=folder.location,
        spec=spec,
        table=_csv(local / RESULTS_FILE),
        best=yaml.safe_load(best_file.read_text()) if best_file.is_file() else None,
        best_file=best_file if best_file.is_file() else None,
        pareto=pareto,
        pareto_files={trial: path for trial, path in front_specs.items() if path.is_file()},
        comparison=_csv(local / COMPARISON_FILE),
        tracking_uri=JournalFiles(journal).tracking_uri(),
        parent_run_id=sent_run_id(journal, {SWEEP_TAG: folder.name, TRIAL_TAG: "parent"}),
        exit_code=exit_code,
    )
