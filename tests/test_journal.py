"""The MLflow journal and its sender on a real store: every write lands once, in order, with the runs' nesting;
sending again changes nothing; a server that is away keeps the writes until it is back."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from orchestrator.tracking import (
    JOURNAL_FOLDER,
    PARENT_TAG,
    RUN_KEY_TAG,
    Journal,
    JournalFiles,
    Sender,
    ensure_experiment,
    open_client,
)
from tests.servers import MlflowServer, base_env

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
