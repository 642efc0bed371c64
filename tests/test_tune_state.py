"""A Tune state that a full disk cut short is put back from the whole copy kept beside it (no Ray: files)."""

import json
import pickle

from orchestrator.tune_state import KEPT, repair_state

STATE = {"trial_data": [["trial", "meta"]], "runner_data": {"x": 1}}


def write_state(folder, cut: bool) -> None:
    text = json.dumps(STATE)
    (folder / "experiment_state-2026-01-01_00-00-00.json").write_text(text[: len(text) // 2] if cut else text)
    (folder / "searcher-state-2026-01-01_00-00-00.pkl").write_bytes(pickle.dumps({"trials": ["a"]}))


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
