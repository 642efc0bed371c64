"""MLflow clients: one whose store exists (a new sqlite store is created by one process at a time), one that only
reads a store that exists (`read_store`), and the experiment a command's runs go to, tagged so that the UI opens
it on its runs table.
"""

from __future__ import annotations

from filelock import FileLock
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from orchestrator.spec import SpecError
from orchestrator.tracking.uris import artifact_location, sqlite_path

EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # the UI opens on the runs table


def open_client(uri: str) -> MlflowClient:
    """A client whose store exists: a new sqlite store is created by one process at a time.

    MLflow creates a sqlite store's schema on first use; two processes doing that at once (two sweeps
    started together in a fresh folder) collide (`duplicate column name: step`). A file lock beside the
    database serialises that first use; a store that exists passes the lock in milliseconds.
    """
    db = sqlite_path(uri)
    if db is None:
        return MlflowClient(tracking_uri=uri)
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{db}.lock", timeout=300):
        return MlflowClient(tracking_uri=uri)  # its store creates or upgrades the schema: under the lock


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The experiment's id, created if missing (another driver may create it at the same moment), tagged
    so that the UI opens it on its runs table."""
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location(uri), tags=EXPERIMENT_KIND)
        except MlflowException:  # another driver created it at the same moment
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    for key, value in EXPERIMENT_KIND.items():
        if found.tags.get(key) != value:
            client.set_experiment_tag(found.experiment_id, key, value)
    return found.experiment_id


def read_store(uri: str) -> MlflowClient:
    """A client of an MLflow store that exists, creating nothing (a dry run writes no file)."""
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise SpecError(
            f"no MLflow store at {db} to read the earlier sweep from: run from the folder the search ran in, "
            "or give its --tracking-uri"
        )
    return MlflowClient(tracking_uri=uri)
