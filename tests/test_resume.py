"""A sweep interrupted after its first trial (SIGINT), resumed, its resume interrupted after the second trial
(SIGKILL of the driver) and resumed again ends with every trial exactly once: in Tune's results, in MLflow and in
the Optuna study. A resume with an edited training setting is refused; one with a raised trial count runs the
added trial."""

import contextlib
import os
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from orchestrator.tracking import PARENT_TAG, TRIAL_TAG
from tests.conftest import share_teachers, tiny_spec_dict
from tests.servers import session

NUM_TRIALS = 3  # the first ends before the SIGINT, the second before the SIGKILL, the third is cut short


@pytest.fixture(scope="module")
def storage(tmp_path_factory, teacher_cache):
    return share_teachers(tmp_path_factory.mktemp("resume-storage"), teacher_cache)  # the tiny teacher, trained once


def finished_children(client, experiment):
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'")
    return [r for r in runs if r.data.tags.get(PARENT_TAG)]


def sweep_cmd(spec_path, *extra):
    return [sys.executable, "-m", "orchestrator.sweep", str(spec_path), *extra]


def interrupt_when_finished(cmd, tmp_path, env, client, name, finished, sig):
    """Run `cmd` until `finished` trials are FINISHED in MLflow, then send `sig` to its driver."""
    run = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 400
    while time.time() < deadline and run.poll() is None and len(finished_children(client, name)) < finished:
        time.sleep(2)
    assert run.poll() is None, "the sweep ended before it could be interrupted"
    assert len(finished_children(client, name)) >= finished, "no trial finished in time"
    run.send_signal(sig)
    try:
        run.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    assert run.returncode != 0  # interrupted, not finished
    if sig == signal.SIGKILL:  # the driver's Ray processes share its session: clear them out (as pkill -s would)
        for pid in session(run.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_interrupted_sweep_resumes_with_every_trial_once(tmp_path, storage):
    """One sweep, interrupted twice: SIGINT after its first trial, then its resume SIGKILLed (the driver) after the
    second; an edited training setting is refused, and the last resume raises the trial count and ends it."""
    name = "resume"
    raw = tiny_spec_dict(
        tmp_path,
        name=name,
        students={"epochs": 2},
        search={"loss.alpha": {"type": "float", "low": 0.2, "high": 0.8}},
        tune={"num_trials": NUM_TRIALS, "max_concurrent_trials": 1, "scheduler": "fifo"},
        mlflow={"experiment": name, "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    )
    raw["storage"] = str(storage)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    client = MlflowClient(tracking_uri=raw["mlflow"]["tracking_uri"])
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}

    interrupt_when_finished(sweep_cmd(spec_path), tmp_path, env, client, name, 1, signal.SIGINT)
    refused = subprocess.run(
        sweep_cmd(spec_path, "--resume", "--set", "loss.temperature=2.0"), cwd=tmp_path, env=env, capture_output=True
    )
    assert refused.returncode == 2 and b"loss.temperature: 4.0 -> 2.0" in refused.stderr
    interrupt_when_finished(sweep_cmd(spec_path, "--resume"), tmp_path, env, client, name, 2, signal.SIGKILL)

    trials = NUM_TRIALS + 1
    resumed = subprocess.run(
        sweep_cmd(spec_path, "--resume", "--set", f"tune.num_trials={trials}"),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"tune.num_trials: {NUM_TRIALS} -> {trials}" in resumed.stdout

    folder = next((storage / "sweeps").glob(f"{name}-*"))
    table = pd.read_csv(folder / "results.csv", dtype={"trial_id": str})  # an id like 1234e567 is no number
    assert len(table) == trials and table["trial_id"].is_unique
    assert set(table["state"]) == {"completed"}

    children = finished_children(client, name)
    trial_ids = [c.data.tags[TRIAL_TAG] for c in children]
    assert len(trial_ids) == trials and set(trial_ids) == set(table["trial_id"])
    exp = client.get_experiment_by_name(name)
    parents = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get(TRIAL_TAG) == "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"

    study = optuna.load_study(study_name=folder.name, storage=f"sqlite:///{folder / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == trials


def test_restored_searcher_keeps_the_studys_first_ending(tmp_path):
    """A killed driver's Tune state can predate the study: trial a ended and trial b was asked for after
    the searcher was saved. The restored searcher ignores a's re-run and fails the orphaned b."""
    from optuna.distributions import FloatDistribution

    from orchestrator.execution import SweepFolder
    from orchestrator.search import SweepSearch

    folder = SweepFolder(str(tmp_path), "sweep")
    folder.local.mkdir()
    space = {"loss.alpha": FloatDistribution(0.2, 0.8)}
    first = SweepSearch(folder, 1, space=space, metric="val", mode="max", seed=0)
    first.suggest("a")
    first.save(str(tmp_path / "searcher.pkl"))  # Tune's last saved state
    first.on_trial_result("a", {"val": 0.5, "epoch": 1, "training_iteration": 1})
    first.on_trial_complete("a", {"val": 0.6})
    first.suggest("b")  # then the driver is killed

    restored = SweepSearch(folder, 1, space=space, metric="val", mode="max", seed=0)
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_result("a", {"val": 0.1, "epoch": 1, "training_iteration": 1})  # Tune re-runs a
    restored.on_trial_complete("a", {"val": 0.2})
    restored.suggest("c")
    restored.on_trial_result("c", {"val": 0.3, "epoch": 1, "training_iteration": 1})
    restored.on_trial_complete("c", {"val": 0.4})

    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{folder.local / 'optuna.db'}")
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE"]
    assert [t.value for t in study.trials if t.value is not None] == [0.6, 0.4]
