"""An append-only, on-disk journal of every MLflow write a command makes, so that no outage of the tracking
server can stop training or lose a figure.

The writer appends one JSON line per write (flushed and synced before the call returns) and answers what
the command itself needs to read back (a run's tags, params, last epoch, children) from what it wrote.
`orchestrator.tracking.sender` sends the lines in order, whenever the server answers. Runs are named by keys the
client makes (the `dualkd.run_key` tag on the server), so a run created while the server is away gets its
server id when it is back, and sending a line twice changes nothing.

Each line is one binary append under an exclusive lock on the file; a write that fails is cut back
(`os.ftruncate`), and a line left unfinished by a crash is cut back before the next append, so a line is never
glued to half of another and every read of the file stays whole.

Layout of a journal folder: `records.jsonl` (the writes), `servers/HASH.json` (per tracking server: the byte
offset up to which it has the lines, run key -> its run id, the runs it refused), `experiments.json` (experiment
id -> name, so that another server gets the experiment by name), `tracking_uri` (the server it is written for),
`files/` (copies of the artifacts until that server has them), `rejected.jsonl` (the lines a server refused, with
why), `send.lock` (held by the one process sending). A journal of older versions (`sent`: a line count,
`ids.json`) is converted when it is opened.
"""

from __future__ import annotations

import fcntl
import hashlib
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
RECORDS, FILES, URI, EXPERIMENTS = "records.jsonl", "files", "tracking_uri", "experiments.json"
SERVERS, REJECTED, SEND_LOCK = "servers", "rejected.jsonl", "send.lock"
SENT, IDS = "sent", "ids.json"  # the older layout: lines sent (a count) and run ids, of the journal's own server
CHUNK = 1 << 16


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


@dataclass
class SendState:
    """How far one tracking server has the journal: sent up to byte `offset`; its run ids; the runs it refused
    (run key -> why), whose later lines are kept in `rejected.jsonl` instead of being sent."""

    uri: str
    offset: int = 0
    ids: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)


def complete_end(fd: int) -> int:
    """The byte just after the file's last newline: where its last complete line ends."""
    end = os.fstat(fd).st_size
    while end > 0:
        start = max(0, end - CHUNK)
        found = os.pread(fd, end - start, start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        end = start
    return 0


def cut_partial(fd: int) -> int:
    """Cut an unfinished last line (a crash or a full disk mid-write); the file's length after."""
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        size = complete_end(fd)
        os.ftruncate(fd, size)
    return size


class JournalFiles:
    """The journal folder's files: reading and appending lines, and how far each server has them."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @property
    def records_path(self) -> Path:
        return self.folder / RECORDS

    def exists(self) -> bool:
        return self.records_path.is_file()

    def size(self) -> int:
        return self.records_path.stat().st_size if self.exists() else 0

    # ---- the lines -----------------------------------------------------------------------------
    def append_line(self, data: bytes) -> None:
        """Append one whole line, synced; on any failure the file is cut back to where it was.

        The lock keeps another process's append (Ray Train's controller) out while a partial line is cut."""
        fd = os.open(self.records_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            end = cut_partial(fd)
            try:
                written = os.write(fd, data)
                while written < len(data):  # a short write: the next one raises why (ENOSPC, EFBIG)
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, end)
                raise
        finally:
            os.close(fd)

    def repair(self) -> None:
        """Cut a last line that a crash left unfinished (nothing after it is ever glued to it)."""
        if self.exists():
            fd = os.open(self.records_path, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                cut_partial(fd)
            finally:
                os.close(fd)

    def read_from(self, offset: int) -> list[tuple[int, dict]]:
        """The complete lines from byte `offset` on, each with the offset just after it (an unfinished last line
        is left for later)."""
        if not self.exists():
            return []
        with open(self.records_path, "rb") as f:
            f.seek(offset)
            data = f.read()
        lines, end = [], offset
        for line in data.split(b"\n")[:-1]:
            end += len(line) + 1
            lines.append((end, json.loads(line)))
        return lines

    def records(self, start: int = 0) -> list[dict]:
        """The complete lines from line `start` on (a line still being written is left for later)."""
        return [record for _, record in self.read_from(0)[start:]]

    def offset_of_line(self, count: int) -> int:
        """The byte offset just after the first `count` lines."""
        lines = self.read_from(0)[: max(count, 0)]
        return lines[-1][0] if lines else 0

    def count_lines(self, offset: int) -> int:
        """How many complete lines there are from byte `offset` on (reads only that tail)."""
        if not self.exists():
            return 0
        with open(self.records_path, "rb") as f:
            f.seek(offset)
            return f.read().count(b"\n")

    # ---- how far each server has them ----------------------------------------------------------
    def tracking_uri(self) -> Optional[str]:
        path = self.folder / URI
        return path.read_text().strip() if path.is_file() else None

    def state_path(self, uri: str) -> Path:
        return self.folder / SERVERS / f"{hashlib.sha256(uri.encode()).hexdigest()[:16]}.json"

    def state(self, uri: Optional[str]) -> SendState:
        """What `uri` has of the journal; for the journal's own server of an older journal, its `sent` and
        `ids.json`."""
        uri = uri or ""
        path = self.state_path(uri)
        if path.is_file():
            saved = json.loads(path.read_text())
            return SendState(uri, saved["offset"], saved["ids"], saved.get("refused", {}))
        if uri == self.tracking_uri() and ((self.folder / SENT).is_file() or (self.folder / IDS).is_file()):
            sent = self.folder / SENT
            ids = self.folder / IDS
            return SendState(
                uri,
                self.offset_of_line(int(sent.read_text() or 0)) if sent.is_file() else 0,
                json.loads(ids.read_text()) if ids.is_file() else {},
            )
        return SendState(uri)

    def save_state(self, state: SendState) -> None:
        path = self.state_path(state.uri)
        path.parent.mkdir(exist_ok=True)
        write_atomic(
            path, json.dumps({"uri": state.uri, "offset": state.offset, "ids": state.ids, "refused": state.refused})
        )
        if state.uri == self.tracking_uri():  # an older journal's files are converted now
            for old in (SENT, IDS):
                (self.folder / old).unlink(missing_ok=True)

    def upgrade(self) -> None:
        """Convert an older journal's `sent` and `ids.json` for the server it was written for."""
        if (self.folder / SENT).is_file() or (self.folder / IDS).is_file():
            self.save_state(self.state(self.tracking_uri()))

    def unsent(self, uri: Optional[str] = None) -> int:
        """How many lines `uri` (default: the journal's own server) does not have yet."""
        return self.count_lines(self.state(uri or self.tracking_uri()).offset)

    # the journal's own server, as older versions named it
    def sent(self) -> int:
        return len(self.read_from(0)) - self.unsent()

    def mark_sent(self, count: int) -> None:
        state = self.state(self.tracking_uri())
        state.offset = self.offset_of_line(count)
        self.save_state(state)

    def ids(self) -> dict[str, str]:
        return self.state(self.tracking_uri()).ids

    def save_ids(self, ids: dict[str, str]) -> None:
        state = self.state(self.tracking_uri())
        state.ids = dict(ids)
        self.save_state(state)

    # ---- experiments ---------------------------------------------------------------------------
    def experiments(self) -> dict[str, str]:
        path = self.folder / EXPERIMENTS
        return json.loads(path.read_text()) if path.is_file() else {}

    def name_experiment(self, experiment_id: str, name: str) -> None:
        names = self.experiments()
        if names.get(experiment_id) != name:
            write_atomic(self.folder / EXPERIMENTS, json.dumps({**names, experiment_id: name}))


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
        self.files.upgrade()  # before the URI changes: an older journal's progress is its earlier server's
        write_atomic(self.files.folder / URI, tracking_uri)  # what `orchestrator.sync` sends to
        self.files.repair()
        self._lock = threading.Lock()
        self.runs: dict[str, RunState] = {}
        for record in self.files.records():
            apply_to_state(self.runs, record)

    @property
    def folder(self) -> Path:
        return self.files.folder

    def append(self, op: str, **fields: Any) -> None:
        record = {"op": op, **fields}
        line = (json.dumps(record, default=str) + "\n").encode()
        with self._lock:
            try:
                self.files.append_line(line)
            except OSError as err:
                if is_storage_error(err):  # the sweep stops with the storage's one line, as for a trial's
                    raise from_os_error(OSError(err.errno, err.strerror, str(self.files.records_path))) from err
                raise
            apply_to_state(self.runs, record)

    def name_experiment(self, experiment_id: str, name: str) -> None:
        """Note the experiment's name: a server other than this one gets the runs in the experiment of that name."""
        self.files.name_experiment(experiment_id, name)

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


def sent_run_id(folder: Path, tags: dict[str, str]) -> Optional[str]:
    """The server's id of the first run in journal `folder` whose tags hold all of these, read without opening the
    journal for writing (a finished sweep is only looked at); None when no such run, or its server has not taken
    it yet (`python -m orchestrator.sync` sends it)."""
    files = JournalFiles(folder)
    if not files.exists():
        return None
    runs: dict[str, RunState] = {}
    for record in files.records():
        apply_to_state(runs, record)
    key = next((key for key, run in runs.items() if all(run.tags.get(k) == v for k, v in tags.items())), None)
    return files.ids().get(key) if key else None


_opened: dict[Path, Journal] = {}


def open_journal(folder: Path, tracking_uri: str) -> Journal:
    """One Journal per folder and process: the driver's tracker and its Tune callback share what they wrote."""
    key = Path(folder).resolve()
    if key not in _opened:
        _opened[key] = Journal(key, tracking_uri)
    return _opened[key]
