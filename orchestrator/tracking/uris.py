"""Where the MLflow store is: the URI a command uses, a sqlite store's file and artifacts, and the page that shows
a sweep's runs. Strings only: MLflow is not imported here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tracking_uri(configured: Optional[str]) -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def sqlite_path(uri: str) -> Optional[Path]:
    """The database file of a `sqlite:///` URI, else None."""
    return Path(uri.removeprefix("sqlite:///")).resolve() if uri.startswith("sqlite:///") else None


def artifact_location(uri: str) -> Optional[str]:
    """A sqlite store's artifacts go beside its database file, not into `./mlruns` of whichever folder
    the driver runs in (MLflow's default: a Ray job's temporary folder, or a second machine's)."""
    db = sqlite_path(uri)
    if db is None:
        return None  # a tracking server decides (and serves) where artifacts go
    return (db.parent / "mlruns").as_uri()


def absolute_uri(uri: str) -> str:
    """A relative sqlite store made absolute, for processes that run in other folders."""
    db = sqlite_path(uri)
    return f"sqlite:///{db}" if db else uri


def where_to_look(uri: str, experiment_id: str) -> str:
    """How to open the experiment's runs table. MLflow 3.17's UI opens an experiment on its GenAI overview in
    a browser that never chose "Model training", whatever the experiment's kind tag says: link the table."""
    page = f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{page}"
    return f"mlflow ui --backend-store-uri {uri}, then http://127.0.0.1:5000/{page}"
