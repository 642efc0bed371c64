"""A Tune state that a full disk cut short is put back from the whole copy kept beside it (no Ray: files)."""

import json
import pickle

from orchestrator.search import KEPT, repair_state

STATE = {"trial_data": [["trial", "meta"]], "runner_data": {"x": 1}}


def write_state(folder, cut: bool) -> None:
    text = json.dumps(STATE)
    (folder / "experiment_state-2026-01-01_00-00-00.json").write_text(text[: len(text) // 2] if cut else text)
    (folder / "searcher-state-2026-01-01_00-00-00.pkl").write_bytes(pickle.dumps({"trials": ["a"]}))
    (folder / "search_gen_state-2026-01-01_00-00-00.json").write_bytes(pickle.dumps({"counter": 1}))  # Tune's pickle


def test_a_cut_state_is_put_back_from_the_kept_copy(tmp_path):
    write_state(tmp_path, cut=True)
    (tmp_path / KEPT).mkdir()
    write_state(tmp_path / KEPT, cut=False)
    line = repair_state(str(tmp_path))
    assert line is not None and "put back" in line and "experiment_state-2026-01-01_00-00-00.json" in line
    assert json.loads((tmp_path / "experiment_state-2026-01-01_00-00-00.json").read_text()) == STATE


def test_a_whole_state_is_left_alone_and_a_cut_one_without_a_copy_is_said(tmp_path):
    write_state(tmp_path, cut=False)
    assert repair_state(str(tmp_path)) is None
    write_state(tmp_path, cut=True)
    line = repair_state(str(tmp_path))
    assert line is not None and "no whole copy" in line and "first epoch" in line


def test_a_bucket_is_not_touched():
    assert repair_state("s3://bucket/sweeps/x") is None


def test_a_running_experiment_keeps_a_whole_copy_of_every_state_file(ray_local, tmp_path):
    """Real Tune with its own searcher: the kept folder holds each state file Tune wrote, and each loads."""
    import time

    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from orchestrator.search import KeepTuneState, reads_whole, state_files

    def trainable(config):
        for step in range(3):
            time.sleep(0.5)
            tune.report({"x": config["a"] * step})

    tuner = tune.Tuner(
        trainable,
        param_space={"a": tune.uniform(0, 1)},
        tune_config=tune.TuneConfig(num_samples=2, search_alg=OptunaSearch(metric="x", mode="max")),
        run_config=tune.RunConfig(name="kept", storage_path=str(tmp_path), callbacks=[KeepTuneState()], verbose=0),
    )
    tuner.fit()
    written = {p.name for p in state_files(tmp_path / "kept")}
    kept = state_files(tmp_path / "kept" / KEPT)
    assert {p.name for p in kept} == written and len(written) == 3
    assert all(reads_whole(p) for p in kept)
