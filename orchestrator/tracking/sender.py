"""Sends a journal's lines (`orchestrator.tracking.journal`) to the MLflow tracking server, in order, for as long as it
takes: a server that does not answer is tried again with back-off, and nothing waits on it but this thread.

Each line is sent so that sending it twice changes nothing: a run is found by its key tag before it is
created, a metric point carries the timestamp it was written with (MLflow keeps one point per key,
timestamp, step and value), params and tags are set to the same values, artifacts overwrite themselves.
A line the server refuses for good (a changed param value, a deleted experiment), or that fails here (an
artifact copy gone), goes to `rejected.jsonl` with why; when that line made its run, the run's later lines
follow it there. Every other run's lines go on. A server other than the journal's own gets the runs in the
experiment of the same name (found or created there), never under the first server's experiment id.

One process sends a journal at a time (`SendLock`, an flock on `send.lock`): a sweep's thread and an
`orchestrator.sync` take turns, each reading how far the server is under the lock, so no run is made twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from orchestrator.execution import StorageFailed, is_storage_error
from orchestrator.tracking.client import ensure_experiment
from orchestrator.tracking.journal import FILES, PARENT_TAG, REJECTED, RUN_KEY_TAG, SEND_LOCK, JournalFiles, SendState
from trainables.config import ConfigError

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


def is_outage(err: BaseException) -> bool:
    """An error that a later try may not meet: the server away or busy, its own disk full. Anything else is
    this line's (a refusal, a local error) and is not tried again."""
    import requests

    if isinstance(err, MlflowException):
        return not is_permanent(err)
    return isinstance(err, (ConnectionError, TimeoutError, requests.RequestException)) or is_storage_error(err)


def why(err: BaseException) -> str:
    return short_error(err) if isinstance(err, MlflowException) else f"{type(err).__name__}: {short_error(err)}"


class JournalBusy(ConfigError):
    """Another process is sending this journal."""


class NotSendable(ConfigError):
    """The journal cannot be sent to this server without the user (an older journal, its server away)."""


class SendLock:
    """One sender per journal, across processes: an flock on `send.lock`, which names its holder."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / SEND_LOCK

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "a process"
        except OSError:
            return "a process"

    @contextmanager
    def held(self, wait: float) -> Iterator[None]:
        """Hold the lock, waiting up to `wait` seconds for it; JournalBusy when another holds it longer."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._take(fd, time.monotonic() + wait)
            try:  # who holds it, for the line of the one that waits; a full disk only loses the note
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}: {' '.join(sys.argv)[:300]}".encode(), 0)
            except OSError:
                pass
            yield
        finally:
            os.close(fd)  # releases the lock

    def _take(self, fd: int, deadline: float) -> None:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise JournalBusy(
                        f"{self.holder()} is sending the writes of {self.path.parent}: wait until it ends (a sweep "
                        "sends for mlflow.send_timeout_s at its end), then run this again"
                    ) from None
                time.sleep(0.2)


def folder_fault(folder: Path, err: OSError) -> StorageFailed:
    """A journal folder that takes no writes: the disk's fault, not MLflow's, in one line naming it."""
    return StorageFailed(
        f"the MLflow journal {folder} takes no writes ({err.strerror or err}): free space or make it writable, "
        "then send it again (python -m orchestrator.sync); nothing in it is lost"
    )


def chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class Sender:
    """Applies journal lines to a tracking store; `start()` runs it as a thread until `drain()`."""

    def __init__(self, files: JournalFiles, uri: str, say: Callable[[str], None] = print):
        for key, value in CLIENT_SETTINGS.items():
            os.environ.setdefault(key, value)
        self.files, self.uri, self.say = files, uri, say
        self.client = MlflowClient(tracking_uri=uri)
        self.lock = SendLock(files.folder)
        self.state = SendState(uri)
        self.experiments: dict[str, str] = {}  # the journal's experiment id -> this server's
        self.failing: Optional[str] = None  # why the last try failed, while the server is away
        self.rejected = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def own_server(self) -> bool:
        return self.uri == self.files.tracking_uri()

    # ---- one line ------------------------------------------------------------------------------
    def _experiment(self, journal_id: str) -> str:
        """This server's experiment for the journal's: found or created by name; an older journal that names
        none asks its own server for the name."""
        if journal_id not in self.experiments:
            name = self.files.experiments().get(journal_id)
            if name is None and self.own_server():
                self.experiments[journal_id] = journal_id
                return journal_id
            name = name or self._name_on_own_server(journal_id)
            self.experiments[journal_id] = ensure_experiment(self.client, name, self.uri)
        return self.experiments[journal_id]

    def _name_on_own_server(self, journal_id: str) -> str:
        own = self.files.tracking_uri()
        try:
            return MlflowClient(tracking_uri=own).get_experiment(journal_id).name
        except Exception as err:  # noqa: BLE001 - whatever it is, the name cannot be had
            raise NotSendable(
                f"{self.files.folder} does not name its experiment (written by an older version) and {own} does not "
                f"tell it ({short_error(err)}): send it there first, or when it answers"
            ) from err

    def _create(self, record: dict) -> str:
        experiment_id = self._experiment(record["experiment_id"])
        found = self.client.search_runs([experiment_id], f"tags.`{RUN_KEY_TAG}` = '{record['run']}'", max_results=1)
        if found:
            return found[0].info.run_id
        tags = {k: self.state.ids.get(v, v) if k == PARENT_TAG else v for k, v in record["tags"].items()}
        return self.client.create_run(
            experiment_id, start_time=record["start_time"], tags=tags, run_name=record["name"]
        ).info.run_id

    def _adopted(self, record: dict) -> str:
        if not self.own_server():
            raise LookupError(f"an adopted run lives on {self.files.tracking_uri()}; it is not copied elsewhere")
        return record["run_id"]

    def _run_id(self, key: str) -> str:
        if key not in self.state.ids:
            raise LookupError(f"its run {key} was never made on {self.uri}")
        return self.state.ids[key]

    def apply(self, record: dict) -> None:
        op = record["op"]
        if op in ("create_run", "adopt"):
            self.state.ids[record["run"]] = self._create(record) if op == "create_run" else self._adopted(record)
            return
        run_id = self._run_id(record["run"])
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
            self._log_artifact(run_id, record)
        elif op == "log_inputs":
            self.client.log_inputs(run_id, [dataset_input(record["data"])])
        else:
            raise ValueError(f"unknown write {op!r}")

    def _log_artifact(self, run_id: str, record: dict) -> None:
        copy = self.files.folder / record["file"]
        if not copy.is_file():
            raise FileNotFoundError(f"its copy {copy} is gone (removed once {self.files.tracking_uri()} had it)")
        self.client.log_artifact(run_id, str(copy), record.get("artifact_path"))

    def send_one(self, record: dict) -> bool:
        """Send one line; False when it went to `rejected.jsonl` instead. An outage raises."""
        key = record.get("run")
        if key in self.state.refused:
            self._reject(record, f"its run was refused: {self.state.refused[key]}", quiet=True)
            return False
        try:
            self.apply(record)
            return True
        except Exception as err:  # noqa: BLE001 - sorted: an outage waits, anything else is this line's
            if is_outage(err) or isinstance(err, ConfigError):
                raise
            if record["op"] in ("create_run", "adopt") or (isinstance(err, LookupError) and key):
                self.state.refused[key] = why(err)
            self._reject(record, why(err))
            return False

    def send_pending(self, wait: float = 0.0) -> int:
        """Send every line this server does not have, in order; how many were handled (sent or rejected). An
        outage raises (and the rest wait); JournalBusy when another process holds the journal past `wait`."""
        with self.lock.held(wait):
            self.state = self.files.state(self.uri)
            done: list[Path] = []  # artifact copies the journal's own server has: removed once that is saved
            lines = self.files.read_from(self.state.offset)
            try:
                for end, record in lines:
                    if self.send_one(record) and record["op"] == "log_artifact" and self.own_server():
                        done.append((self.files.folder / record["file"]).parent)
                    self.state.offset = end
                    if record["op"] in ("create_run", "adopt"):
                        self._save()
            finally:
                self._save()
            for folder in done:
                if folder.parent == self.files.folder / FILES:
                    shutil.rmtree(folder, ignore_errors=True)
            return len(lines)

    def _save(self) -> None:
        try:
            self.files.save_state(self.state)
        except OSError as err:
            raise folder_fault(self.files.folder, err) from err

    def _reject(self, record: dict, reason: str, quiet: bool = False) -> None:
        """Keep the line in `rejected.jsonl` with why; one line says so (none for each later line of a refused run)."""
        self.rejected += 1
        line = json.dumps({"server": self.uri, "error": reason, "record": record}) + "\n"
        try:
            with open(self.files.folder / REJECTED, "a") as f:
                f.write(line)
        except OSError as err:
            raise folder_fault(self.files.folder, err) from err
        if not quiet:
            self.say(f"MLflow at {self.uri} did not take a write ({reason}): kept in {self.files.folder / REJECTED}")

    # ---- the thread ----------------------------------------------------------------------------
    def start(self) -> "Sender":
        self._thread = threading.Thread(target=self._run, name="mlflow-journal-sender", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        delay = 1.0
        while True:
            try:
                if self.files.size() > self.state.offset:  # new lines (or another sender moved on): read the tail
                    self.send_pending()
                if self.failing:
                    self.say(f"MLflow answers again: the journal's writes are being sent ({self.uri})")
                self.failing, delay = None, 1.0
            except Exception as err:  # noqa: BLE001 - an outage of any kind: kept, tried again
                if self.failing is None:
                    self.say(self._waiting_line(err))
                self.failing, delay = short_error(err), min(delay * 2, MAX_DELAY)
            if self._stop.wait(delay if self.failing else 0.5):
                return

    def _waiting_line(self, err: BaseException) -> str:
        if isinstance(err, (StorageFailed, JournalBusy)):
            return f"{err}; training goes on, the journal's writes are sent later"
        return (
            f"MLflow does not answer ({short_error(err)}): training goes on, every write is kept "
            f"in {self.files.folder} and sent when it answers"
        )

    def wait(self, timeout: Optional[float]) -> int:
        """Wait until every line is sent, at most `timeout` seconds (None: as long as it takes); lines unsent."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (unsent := self.files.unsent(self.uri)) and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.5)
        return unsent

    def drain(self, timeout: float) -> int:
        """Wait up to `timeout` seconds for every line to be sent, then stop the thread; lines left unsent."""
        unsent = self.wait(timeout)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return unsent
