"""Sends a journal's lines (`orchestrator.tracking.journal`) to the MLflow tracking server, in order, for as long as it
takes: a server that does not answer is tried again with back-off, and nothing waits on it but this thread.

Each line is sent so that sending it twice changes nothing: a run is found by its key tag before it is
created, a metric point carries the timestamp it was written with (MLflow keeps one point per key,
timestamp, step and value), params and tags are set to the same values, artifacts overwrite themselves.
A line the server refuses for good (a changed param value, a deleted run) goes to `rejected.jsonl` and the
rest go on.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from orchestrator.tracking.journal import PARENT_TAG, RUN_KEY_TAG, JournalFiles

# A refusal that no retry changes. Anything else (no connection, a 5xx, a timeout, a locked database) is
# an outage, tried again.
PERMANENT = {
    "INVALID_PARAMETER_VALUE",
    "RESOURCE_DOES_NOT_EXIST",
    "RESOURCE_ALREADY_EXISTS",
    "BAD_REQUEST",
    "INVALID_STATE",
}
# MLflow's own retries last about 4 minutes per call by default; ours go on for ever, so each call is short.
# Its "View run at" line per finished run would interleave with the command's output.
CLIENT_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
MAX_DELAY = 30.0
BATCH = {"metrics": 1000, "params": 100, "tags": 100}  # MLflow's limits per log_batch


def dataset_input(data: dict) -> DatasetInput:
    """The run's data as an MLflow dataset input: its name, where it comes from, and a digest of its settings."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    settings = {k: v for k, v in data.items() if k != "loader_workers"}
    source = CodeDatasetSource({"dataset": data["name"], "root": str(data.get("root") or "embedded")})
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]
    name = data["name"] if not data.get("root") else f"{data['name']}:{Path(data['root']).name}"
    entity = MetaDataset(source, name=name, digest=digest)._to_mlflow_entity()
    return DatasetInput(entity, tags=[InputTag("mlflow.data.context", "training")])


def short_error(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0][:300]


def is_permanent(err: BaseException) -> bool:
    return isinstance(err, MlflowException) and err.error_code in PERMANENT


def chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class Sender:
    """Applies journal lines to a tracking store; `start()` runs it as a thread until `drain()`."""

    def __init__(self, files: JournalFiles, uri: str, say: Callable[[str], None] = print):
        for key, value in CLIENT_SETTINGS.items():
            os.environ.setdefault(key, value)
        self.files, self.uri, self.say = files, uri, say
        self.client = MlflowClient(tracking_uri=uri)
        self.ids = files.ids()
        self.failing: Optional[str] = None  # why the last try failed, while the server is away
        self.rejected = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # ---- one line ------------------------------------------------------------------------------
    def _create(self, record: dict) -> str:
        found = self.client.search_runs(
            [record["experiment_id"]], f"tags.`{RUN_KEY_TAG}` = '{record['run']}'", max_results=1
        )
        if found:
            return found[0].info.run_id
        tags = {k: self.ids.get(v, v) if k == PARENT_TAG else v for k, v in record["tags"].items()}
        return self.client.create_run(
            record["experiment_id"], start_time=record["start_time"], tags=tags, run_name=record["name"]
        ).info.run_id

    def apply(self, record: dict) -> None:
        op = record["op"]
        if op in ("create_run", "adopt"):
            self.ids[record["run"]] = self._create(record) if op == "create_run" else record["run_id"]
            self.files.save_ids(self.ids)
            return
        run_id = self.ids[record["run"]]
        if op == "log_batch":
            metrics = [Metric(k, v, ts, step) for k, v, ts, step in record.get("metrics", [])]
            params = [Param(k, v) for k, v in record.get("params", {}).items()]
            tags = [RunTag(k, v) for k, v in record.get("tags", {}).items()]
            for part in chunks(metrics, BATCH["metrics"]):
                self.client.log_batch(run_id, metrics=part)
            for part in chunks(params, BATCH["params"]):
                self.client.log_batch(run_id, params=part)
            for part in chunks(tags, BATCH["tags"]):
                self.client.log_batch(run_id, tags=part)
        elif op == "delete_tag":
            if record["key"] in self.client.get_run(run_id).data.tags:
                self.client.delete_tag(run_id, record["key"])
        elif op == "update_run":
            self.client.update_run(run_id, status=record["status"])
        elif op == "set_terminated":
            self.client.set_terminated(run_id, status=record["status"], end_time=record["end_time"])
        elif op == "log_artifact":
            self.client.log_artifact(run_id, str(self.files.folder / record["file"]), record.get("artifact_path"))
        elif op == "log_inputs":
            self.client.log_inputs(run_id, [dataset_input(record["data"])])
        else:
            raise ValueError(f"journal {self.files.folder}: unknown write {op!r}")

    def send_pending(self) -> int:
        """Send every unsent line in order; how many were sent. An outage raises (and the rest wait)."""
        start = self.files.sent()
        records = self.files.records(start)
        for offset, record in enumerate(records):
            try:
                self.apply(record)
            except MlflowException as err:
                if not is_permanent(err):
                    raise
                self._reject(record, err)
            self.files.mark_sent(start + offset + 1)
        return len(records)

    def _reject(self, record: dict, err: BaseException) -> None:
        self.rejected += 1
        with open(self.files.folder / "rejected.jsonl", "a") as f:
            f.write(json.dumps({"record": record, "error": short_error(err)}) + "\n")
        self.say(f"MLflow refused a write ({short_error(err)}): kept in {self.files.folder / 'rejected.jsonl'}")

    # ---- the thread ----------------------------------------------------------------------------
    def start(self) -> "Sender":
        self._thread = threading.Thread(target=self._run, name="mlflow-journal-sender", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        delay = 1.0
        while True:
            try:
                self.send_pending()
                if self.failing:
                    self.say(f"MLflow answers again: the journal's writes are being sent ({self.uri})")
                self.failing, delay = None, 1.0
            except Exception as err:  # noqa: BLE001 - an outage of any kind: kept, tried again
                if self.failing is None:
                    self.say(
                        f"MLflow does not answer ({short_error(err)}): training goes on, every write is kept "
                        f"in {self.files.folder} and sent when it answers"
                    )
                self.failing, delay = short_error(err), min(delay * 2, MAX_DELAY)
            if self._stop.wait(delay if self.failing else 0.5):
                return

    def wait(self, timeout: Optional[float]) -> int:
        """Wait until every line is sent, at most `timeout` seconds (None: as long as it takes); lines unsent."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (unsent := self.files.unsent()) and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.5)
        return unsent

    def drain(self, timeout: float) -> int:
        """Wait up to `timeout` seconds for every line to be sent, then stop the thread; lines left unsent."""
        unsent = self.wait(timeout)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return unsent
