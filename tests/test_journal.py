"""The MLflow journal and its sender on a real store: every write lands once, in order, with the runs' nesting;
sending again changes nothing; a server that is away keeps the writes until it is back; a cut line, a refused run,
another server and a second sender each leave every other write whole and sent once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from orchestrator.execution import StorageFailed
from orchestrator.tracking import (
    JOURNAL_FOLDER,
    PARENT_TAG,
    RUN_KEY_TAG,
    Journal,
    JournalFiles,
    Sender,
    SendLock,
    ensure_experiment,
    open_client,
    send_kept,
)
from tests.servers import MlflowServer, base_env
from trainables.config import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write_sweep(journal: Journal, experiment_id: str, artifact: Path) -> tuple[str, str]:
    parent = journal.create_run(experiment_id, "sweep", {"dualkd.trial_id": "parent"})
    journal.log_data(parent, {"name": "digits", "image_size": 8})
    child = journal.create_run(experiment_id, "t01 a=0.5", {PARENT_TAG: parent, "dualkd.trial_id": "x"})
    journal.log_batch(child, params=[Param("loss.alpha", "0.5")])
    for epoch in (1, 2, 3):
        journal.log_batch(
            child,
            metrics=[
                Metric("epoch", epoch, 1000 + epoch, epoch),
                Metric("resnet18/val_top1", 0.1 * epoch, 1000 + epoch, epoch),
            ],
        )
    journal.log_artifact(child, str(artifact))
    journal.log_text(parent, "name: x\n", "spec.yaml")
    journal.set_tag(parent, "error", "disk full")
    journal.delete_tag(parent, "error")
    journal.set_terminated(child)
    journal.set_terminated(parent)
    return parent, child


def server_state(client: MlflowClient, experiment_id: str) -> dict:
    runs = client.search_runs([experiment_id])
    state = {}
    for run in runs:
        history = {
            key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
            for key in run.data.metrics
        }
        state[run.info.run_name] = (
            run.info.status,
            dict(run.data.params),
            history,
            {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.") or k == PARENT_TAG},
            sorted(a.path for a in client.list_artifacts(run.info.run_id)),
        )
    return state


def test_a_journal_lands_every_write_once_and_sending_again_changes_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = open_client(uri)
    experiment_id = ensure_experiment(client, "journal", uri)
    artifact = tmp_path / "predictions.pt"
    artifact.write_bytes(b"records")
    journal = Journal(tmp_path / JOURNAL_FOLDER, uri)
    parent_key, child_key = write_sweep(journal, experiment_id, artifact)
    artifact.unlink()  # the journal kept its own copy
    assert journal.find({"dualkd.trial_id": "x"}) == child_key and journal.children(parent_key) == [child_key]
    assert journal.runs[child_key].metrics["epoch"] == 3 and "error" not in journal.runs[parent_key].tags

    files = JournalFiles(tmp_path / JOURNAL_FOLDER)
    assert Sender(files, uri).send_pending() == len(files.records()) and files.unsent() == 0
    first = server_state(client, experiment_id)
    child = first["t01 a=0.5"]
    assert child[0] == "FINISHED" and child[1] == {"loss.alpha": "0.5"}
    assert child[2]["epoch"] == [(1, 1.0), (2, 2.0), (3, 3.0)]
    ids = files.ids()
    assert child[3][PARENT_TAG] == ids[parent_key] and child[3][RUN_KEY_TAG] == child_key
    assert child[4] == ["predictions.pt"] and first["sweep"][4] == ["spec.yaml"]
    assert "error" not in first["sweep"][3]

    files.mark_sent(0)  # as if every line had to be sent again (a driver killed before it noted them)
    files.save_ids({})
    assert Sender(files, uri).send_pending() == len(files.records())
    assert server_state(client, experiment_id) == first
    assert len(client.search_runs([experiment_id])) == 2


def sync(folder: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "orchestrator.sync", str(folder), *args]
    return subprocess.run(cmd, cwd=REPO, env=base_env(), capture_output=True, text=True, timeout=300)


def test_a_cut_line_is_cut_back_when_the_journal_is_opened_and_never_glued_to(tmp_path):
    folder = tmp_path / JOURNAL_FOLDER
    journal = Journal(folder, "sqlite:///unused.db")
    key = journal.create_run("0", "run", {})
    journal.set_tag(key, "a", "1")
    whole = journal.files.records_path.read_bytes()
    with open(journal.files.records_path, "ab") as f:  # a crash (or a full disk) in the middle of a line
        f.write(b'{"op": "log_batch", "run": "')
    again = Journal(folder, "sqlite:///unused.db")
    assert again.files.records_path.read_bytes() == whole
    again.set_tag(key, "b", "2")
    with open(journal.files.records_path, "ab") as f:  # cut again, now behind the open writer's back
        f.write(b'{"op": "set_ter')
    again.set_tag(key, "c", "3")
    records = JournalFiles(folder).records()  # raises if any line were glued to half of another
    assert [r["op"] for r in records] == ["create_run", "log_batch", "log_batch", "log_batch"]
    assert Journal(folder, "sqlite:///unused.db").runs[key].tags.items() >= {"a": "1", "b": "2", "c": "3"}.items()


def test_a_failed_write_leaves_no_partial_line(tmp_path):
    """A file-size limit is what a full disk does to a write: part of the line lands, then the write fails."""
    folder = tmp_path / JOURNAL_FOLDER
    script = textwrap.dedent(
        f"""
        import resource, signal
        from orchestrator.tracking.journal import Journal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
        journal = Journal({str(folder)!r}, "sqlite:///unused.db")
        key = journal.create_run("0", "run", {{}})
        size = journal.files.size()
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, resource.RLIM_INFINITY))
        try:
            journal.set_tag(key, "big", "x" * 1000)
        except OSError as err:
            print("failed:", err.errno, size)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=base_env(), capture_output=True, text=True)
    assert done.stdout.startswith("failed: 27 "), done.stdout + done.stderr  # EFBIG
    size = int(done.stdout.split()[-1])
    files = JournalFiles(folder)
    assert files.size() == size and files.records_path.read_bytes().endswith(b"\n")
    assert [r["op"] for r in files.records()] == ["create_run"]


def test_a_journal_of_the_older_layout_is_converted_and_sent_from_where_it_was(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = open_client(uri)
    experiment_id = ensure_experiment(client, "journal", uri)
    folder = tmp_path / JOURNAL_FOLDER
    journal = Journal(folder, uri)
    key = journal.create_run(experiment_id, "run", {})
    run_id = client.create_run(experiment_id, tags={RUN_KEY_TAG: key}, run_name="run").info.run_id
    journal.set_tag(key, "a", "1")
    (folder / "sent").write_text("1")  # what the older sender wrote: one line sent, the run's id
    (folder / "ids.json").write_text(json.dumps({key: run_id}))
    files = JournalFiles(folder)
    assert files.unsent() == 1 and files.ids() == {key: run_id}
    Journal(folder, uri)  # converted on open
    assert not (folder / "sent").exists() and not (folder / "ids.json").exists() and files.unsent() == 1
    assert Sender(files, uri).send_pending() == 1
    assert client.get_run(run_id).data.tags["a"] == "1" and len(client.search_runs([experiment_id])) == 1


def test_a_refused_run_or_a_failed_line_keeps_only_its_own_lines_back(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = open_client(uri)
    kept, gone = ensure_experiment(client, "kept", uri), ensure_experiment(client, "gone", uri)
    journal = Journal(tmp_path / JOURNAL_FOLDER, uri)
    journal.name_experiment(kept, "kept")
    journal.name_experiment(gone, "gone")
    artifact = tmp_path / "predictions.pt"
    artifact.write_bytes(b"records")
    refused = journal.create_run(gone, "refused", {})
    sent = journal.create_run(kept, "sent", {})
    for key in (refused, sent):  # the two runs' lines interleave
        journal.log_metric(key, "epoch", 1, step=1)
        journal.log_artifact(key, str(artifact))
    lost = journal.create_run(kept, "lost copy", {})
    journal.log_artifact(lost, str(artifact))
    journal.set_tag(lost, "after", "yes")
    for key in (refused, sent, lost):
        journal.set_terminated(key)
    client.delete_experiment(gone)  # deleted mid-sweep: the server refuses the run for good
    copies = {r["run"]: journal.folder / r["file"] for r in journal.files.records() if r["op"] == "log_artifact"}
    copies[lost].unlink()  # a local error on one line

    sender = Sender(journal.files, uri, say=lambda line: None)
    assert sender.send_pending() == len(journal.files.records()) and journal.files.unsent() == 0
    runs = {run.info.run_name: run for run in client.search_runs([kept])}
    assert set(runs) == {"sent", "lost copy"} and not client.search_runs([gone])
    assert runs["sent"].info.status == "FINISHED" and runs["sent"].data.metrics == {"epoch": 1.0}
    assert [a.path for a in client.list_artifacts(runs["sent"].info.run_id)] == ["predictions.pt"]
    assert runs["lost copy"].data.tags["after"] == "yes" and runs["lost copy"].info.status == "FINISHED"
    assert not client.list_artifacts(runs["lost copy"].info.run_id)

    rejected = [json.loads(line) for line in (journal.folder / "rejected.jsonl").read_text().splitlines()]
    by_run = {}
    for entry in rejected:
        by_run.setdefault(entry["record"]["run"], []).append(entry)
    assert [e["record"]["op"] for e in by_run[refused]] == ["create_run", "log_batch", "log_artifact", "set_terminated"]
    assert "must be in the 'active' state" in by_run[refused][0]["error"]
    assert all(e["error"].startswith("its run was refused: ") for e in by_run[refused][1:])
    assert [e["record"]["op"] for e in by_run[lost]] == ["log_artifact"] and "FileNotFoundError" in by_run[lost][0][
        "error"
    ]
    assert sent not in by_run
    assert not copies[sent].exists() and copies[refused].exists()  # a sent copy is removed, a refused one kept
    assert Sender(journal.files, uri).send_pending() == 0  # sending again: nothing new, nothing rejected twice


def test_a_journal_folder_that_takes_no_writes_is_named_as_the_fault(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = open_client(uri)
    journal = Journal(tmp_path / JOURNAL_FOLDER, uri)
    journal.create_run(ensure_experiment(client, "journal", uri), "run", {})
    (journal.folder / "servers").write_text("")  # where the sender notes its progress cannot be written
    with pytest.raises(StorageFailed, match=f"the MLflow journal {journal.folder} takes no writes"):
        Sender(journal.files, uri).send_pending()


def test_sync_to_another_server_sends_every_write_to_the_experiment_of_that_name(tmp_path):
    """Issue 27's journal check: a finished sweep's journal, its server away and a cut line appended, goes whole
    to another, empty server; a second sync has nothing to send."""
    first, other = f"sqlite:///{tmp_path / 'first.db'}", f"sqlite:///{tmp_path / 'other.db'}"
    experiment_id = ensure_experiment(open_client(first), "journal", first)
    client = open_client(other)
    unrelated = ensure_experiment(client, "unrelated", other)
    assert unrelated == experiment_id  # the first server's id names another experiment here
    artifact = tmp_path / "predictions.pt"
    artifact.write_bytes(b"records")
    journal = Journal(tmp_path / "sweep" / JOURNAL_FOLDER, first)
    journal.name_experiment(experiment_id, "journal")
    write_sweep(journal, experiment_id, artifact)  # a finished sweep whose first server never took a write
    with open(journal.files.records_path, "ab") as f:  # and a line its driver's crash cut short
        f.write(b'{"op": "set_tag", "ru')

    sent = sync(tmp_path / "sweep", "--tracking-uri", other)
    assert sent.returncode == 0 and sent.stdout.startswith(f"sent {len(journal.files.records())} writes"), sent.stderr
    found = client.get_experiment_by_name("journal")
    assert found is not None and not client.search_runs([unrelated])
    state = server_state(client, found.experiment_id)
    assert set(state) == {"sweep", "t01 a=0.5"} and state["t01 a=0.5"][2]["epoch"] == [(1, 1.0), (2, 2.0), (3, 3.0)]
    assert state["t01 a=0.5"][4] == ["predictions.pt"]
    assert journal.files.unsent() == len(journal.files.records())  # the first server's place is its own
    again = sync(tmp_path / "sweep", "--tracking-uri", other)
    assert again.returncode == 0 and again.stdout.startswith("nothing to send"), again.stderr
    assert server_state(client, found.experiment_id) == state


def test_a_second_sender_waits_or_says_who_sends_and_no_run_is_made_twice(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = open_client(uri)
    experiment_id = ensure_experiment(client, "journal", uri)
    artifact = tmp_path / "predictions.pt"
    artifact.write_bytes(b"records")
    journal = Journal(tmp_path / "sweep" / JOURNAL_FOLDER, uri)
    write_sweep(journal, experiment_id, artifact)

    with SendLock(journal.folder).held(0):  # this process sends, as a sweep's thread would
        refused = sync(tmp_path / "sweep", "--wait", "1")
        with pytest.raises(ConfigError, match=f"pid {os.getpid()} .* is sending the writes of"):
            send_kept(str(tmp_path / "sweep"), wait=0.5)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert f"pid {os.getpid()} " in refused.stderr and not client.search_runs([experiment_id])

    cmd = [sys.executable, "-m", "orchestrator.sync", str(tmp_path / "sweep"), "--wait", "240"]
    both = [subprocess.Popen(cmd, cwd=REPO, env=base_env(), stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = sorted(p.communicate(timeout=300)[0] for p in both)
    assert [p.returncode for p in both] == [0, 0], outs
    assert outs[0].startswith("nothing to send") and outs[1].startswith("sent "), outs
    assert sorted(r.info.run_name for r in client.search_runs([experiment_id])) == ["sweep", "t01 a=0.5"]


@pytest.mark.slow
def test_writes_wait_for_a_server_that_is_away_and_sync_sends_them_once(tmp_path):
    (tmp_path / "mlflow").mkdir()
    server = MlflowServer(tmp_path / "mlflow")
    try:
        client = MlflowClient(tracking_uri=server.uri)
        experiment_id = ensure_experiment(client, "journal", server.uri)
        server.stop()
        artifact = tmp_path / "predictions.pt"
        artifact.write_bytes(b"records")
        journal = Journal(tmp_path / "sweep" / JOURNAL_FOLDER, server.uri)
        started = time.time()
        write_sweep(journal, experiment_id, artifact)
        assert time.time() - started < 5, "a write waited for the server"
        sender = Sender(journal.files, server.uri).start()
        assert sender.drain(3) == len(journal.files.records())  # nothing reaches a stopped server
        sync = [sys.executable, "-m", "orchestrator.sync", str(tmp_path / "sweep")]
        away = subprocess.run(sync, cwd=REPO, env=base_env(), capture_output=True, text=True, timeout=300)
        assert away.returncode == 1 and "does not answer" in away.stderr and "Traceback" not in away.stderr

        server.start()
        sent = subprocess.run(sync, cwd=REPO, env=base_env(), capture_output=True, text=True, timeout=300)
        assert sent.returncode == 0 and sent.stdout.startswith(f"sent {len(journal.files.records())} writes")
        state = server_state(client, experiment_id)
        assert state["t01 a=0.5"][2]["epoch"] == [(1, 1.0), (2, 2.0), (3, 3.0)]
        again = subprocess.run(sync, cwd=REPO, env=base_env(), capture_output=True, text=True, timeout=300)
        assert again.returncode == 0 and again.stdout.startswith("nothing to send")
        assert server_state(client, experiment_id) == state
    finally:
        server.stop()
