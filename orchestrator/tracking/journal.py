"""An append-only, on-disk journal of every MLflow write a command makes, so that no outage of the tracking
server can stop training or lose a figure.

The writer appends one JSON line per write (flushed and synced before the call returns) and answers what
the command itself needs to read back (a run's tags, params, last epoch, children) from what it wrote.
`orchestrator.tracking.sender` sends the lines in order, whenever the server answers. Runs are named by keys the
client makes (the `dualkd.run_key` tag on the server), so a run created while the server is away gets its
server id when it is back, and sending a line twice changes nothing.

Layout of a journal folder: `records.jsonl` (the writes), `sent` (how many lines the server has),
`ids.json` (run key -> server run id), `files/` (copies of the artifacts until they are sent).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from orchestrator.execution import from_os_error, is_storage_error

JOURNAL_FOLDER = "mlflow-journal"
RUN_KEY_TAG = "dualkd.run_key"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's nesting tag; in the journal it names the parent by its key
RECORDS, SENT, IDS, FILES, URI = "records.jsonl", "sent", "ids.json", "files", "tracking_uri"


def now_ms() -> int:
    return int(time.time() * 1000)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass
class RunState:
    """What the journal says of one run: enough for the command's own reads."""

    name: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # the last value of each
    steps: dict[str, int] = field(default_factory=dict)  # the highest step of each
    status: str = "RUNNING"


class JournalFiles:
    """The journal folder's files: reading and appending lines, the sent count and the run ids."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @property
    def records_path(self) -> Path:
        return self.folder / RECORDS

    def exists(self) -> bool:
        return self.records_path.is_file()

    def records(self, start: int = 0) -> list[dict]:
        """The complete lines from line `start` on (a line still being written is left for later)."""
        if not self.exists():
            return []
        with open(self.records_path, "rb") as f:
            lines = f.read().split(b"\n")[:-1]  # the part after the last newline is incomplete
        return [json.loads(line) for line in lines[start:]]

    def sent(self) -> int:
        path = self.folder / SENT
        return int(path.read_text()) if path.is_file() else 0

    def mark_sent(self, count: int) -> None:
        write_atomic(self.folder / SENT, str(count))

    def ids(self) -> dict[str, str]:
        path = self.folder / IDS
        return json.loads(path.read_text()) if path.is_file() else {}

    def save_ids(self, ids: dict[str, str]) -> None:
        write_atomic(self.folder / IDS, json.dumps(ids))

    def unsent(self) -> int:
        return len(self.records()) - self.sent()

    def tracking_uri(self) -> Optional[str]:
        path = self.folder / URI
        return path.read_text().strip() if path.is_file() else None


def apply_to_state(runs: dict[str, RunState], record: dict) -> None:
    """What one journal line changes in the runs as the command sees them."""
    op, key = record["op"], record.get("run")
    if op in ("create_run", "adopt"):
        runs[key] = RunState(
            name=record.get("name", ""),
            tags=dict(record.get("tags", {})),
            params=dict(record.get("params", {})),
            metrics=dict(record.get("metrics", {})),
            status=record.get("status", "RUNNING"),
        )
        return
    run = runs.setdefault(key, RunState())
    if op == "log_batch":
        run.params.update(record.get("params", {}))
        run.tags.update(record.get("tags", {}))
        for name, value, _, step in record.get("metrics", []):
            if step >= run.steps.get(name, -1):
                run.metrics[name], run.steps[name] = value, step
    elif op == "delete_tag":
        run.tags.pop(record["key"], None)
    elif op in ("update_run", "set_terminated"):
        run.status = record["status"]


class Journal:
    """The writer: MlflowClient's write calls (the subset this project makes), each one a journal line.

    `run_id` arguments are run keys from `create_run` or `adopt`. One process writes at a time; a second
    (Ray Train's controller in `orchestrator.train`) may append while the first waits on it.
    """

    def __init__(self, folder: Path, tracking_uri: str):
        self.files = JournalFiles(folder)
        self.tracking_uri = tracking_uri
        self.files.folder.mkdir(parents=True, exist_ok=True)
        (self.files.folder / FILES).mkdir(exist_ok=True)
        write_atomic(self.files.folder / URI, tracking_uri)  # what `orchestrator.sync` sends to
        self._lock = threading.Lock()
        self.runs: dict[str, RunState] = {}
        for record in self.files.records():
            apply_to_state(self.runs, record)

    @property
    def folder(self) -> Path:
        return self.files.folder

    def append(self, op: str, **fields: Any) -> None:
        record = {"op": op, **fields}
        line = json.dumps(record, default=str) + "\n"
        with self._lock, open(self.files.records_path, "a") as f:
            end = f.tell()
            try:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            except OSError as err:  # a full disk: no half line may stay, or the next line would be glued to it
                f.truncate(end)
                if is_storage_error(err):  # the sweep stops with the storage's one line, as for a trial's
                    raise from_os_error(err) from err
                raise
            apply_to_state(self.runs, record)

    # ---- reads, from what was written ----------------------------------------------------------
    def find(self, tags: dict[str, str]) -> Optional[str]:
        """The first run whose tags hold all of these."""
        return next((key for key, run in self.runs.items() if all(run.tags.get(k) == v for k, v in tags.items())), None)

    def children(self, parent: str) -> list[str]:
        return [key for key, run in self.runs.items() if run.tags.get(PARENT_TAG) == parent]

    # ---- writes --------------------------------------------------------------------------------
    def create_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
        key = uuid.uuid4().hex
        self.append(
            "create_run",
            run=key,
            experiment_id=experiment_id,
            name=run_name,
            tags={**tags, RUN_KEY_TAG: key},
            start_time=now_ms(),
        )
        return key

    def adopt(self, run, parent: Optional[str] = None) -> str:
        """A run found on the server (a journal lost with its machine) under a new key; `parent`: its parent's
        key, which the journal's nesting tag holds."""
        key = uuid.uuid4().hex
        tags = {**run.data.tags, **({PARENT_TAG: parent} if parent else {})}
        self.append(
            "adopt",
            run=key,
            run_id=run.info.run_id,
            name=run.info.run_name or "",
            tags=tags,
            params=run.data.params,
            metrics=run.data.metrics,
            status=run.info.status,
        )
        return key

    def log_batch(self, run_id: str, metrics: Iterable = (), params: Iterable = (), tags: Iterable = ()) -> None:
        self.append(
            "log_batch",
            run=run_id,
            metrics=[[m.key, m.value, m.timestamp, m.step] for m in metrics],
            params={p.key: p.value for p in params},
            tags={t.key: t.value for t in tags},
        )

    def log_metric(self, run_id: str, key: str, value: float, step: int = 0) -> None:
        self.append("log_batch", run=run_id, metrics=[[key, float(value), now_ms(), step]])

    def set_tag(self, run_id: str, key: str, value: Any) -> None:
        self.append("log_batch", run=run_id, tags={key: str(value)})

    def delete_tag(self, run_id: str, key: str) -> None:
        self.append("delete_tag", run=run_id, key=key)

    def update_run(self, run_id: str, status: str) -> None:
        self.append("update_run", run=run_id, status=status)

    def set_terminated(self, run_id: str, status: str = "FINISHED") -> None:
        self.append("set_terminated", run=run_id, status=status, end_time=now_ms())

    def log_artifact(self, run_id: str, local_path: str, artifact_path: Optional[str] = None) -> None:
        """A copy of the file is kept in the journal until it is sent: the original may be a temporary one."""
        source = Path(local_path)
        copy = Path(FILES) / uuid.uuid4().hex / source.name
        (self.folder / copy).parent.mkdir(parents=True)
        shutil.copyfile(source, self.folder / copy)
        self.append("log_artifact", run=run_id, file=copy.as_posix(), artifact_path=artifact_path)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._log_content(run_id, text, artifact_file)

    def log_dict(self, run_id: str, dictionary: dict, artifact_file: str) -> None:
        self._log_content(run_id, json.dumps(dictionary, indent=2, default=str), artifact_file)

    def _log_content(self, run_id: str, text: str, artifact_file: str) -> None:
        copy = Path(FILES) / uuid.uuid4().hex / Path(artifact_file).name
        (self.folder / copy).parent.mkdir(parents=True)
        (self.folder / copy).write_text(text)
        folder = str(Path(artifact_file).parent)
        self.append("log_artifact", run=run_id, file=copy.as_posix(), artifact_path=None if folder == "." else folder)

    def log_data(self, run_id: str, data: dict) -> None:
        """The run's dataset input (`orchestrator.tracking.sender.dataset_input` of these data settings)."""
        self.append("log_inputs", run=run_id, data=data)


_opened: dict[Path, Journal] = {}


def open_journal(folder: Path, tracking_uri: str) -> Journal:
    """One Journal per folder and process: the driver's tracker and its Tune callback share what they wrote."""
    key = Path(folder).resolve()
    if key not in _opened:
        _opened[key] = Journal(key, tracking_uri)
    return _opened[key]
