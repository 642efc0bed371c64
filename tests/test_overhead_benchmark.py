"""benchmarks/overhead.py's reading of a phase trace (`trainables.trace`), on traces written by `mark` itself."""

from pathlib import Path

import pytest

from tests.test_throughput import load_benchmark
from trainables import trace


def load_overhead():
    return load_benchmark("overhead")


def write_trace(path: Path, events: list[tuple[str, str, float]]) -> None:
    path.write_text("".join(f'{{"run": "{run}", "event": "{event}", "t": {t}}}\n' for run, event, t in events))


def test_mark_writes_only_where_the_variable_names_a_file(tmp_path, monkeypatch):
    monkeypatch.delenv(trace.TRACE_ENV, raising=False)
    trace.mark("t1", "trial_start")  # no file named: nothing written, nothing raised
    path = tmp_path / "trace.jsonl"
    monkeypatch.setenv(trace.TRACE_ENV, str(path))
    trace.mark("t1", "worker_start")
    trace.mark("t1", "epoch_start")
    events = load_overhead().read_trace(path)["t1"]
    assert [e["event"] for e in events] == ["worker_start", "epoch_start"]
    assert events[0]["t"] <= events[1]["t"]


def test_phases_of_two_trials_one_after_the_other(tmp_path):
    path = tmp_path / "trace.jsonl"
    write_trace(
        path,
        [
            ("", "tune_start", 0.0),
            ("teacher", "worker_start", 1.0),  # no trial: left out of the trials
            ("a", "trial_start", 12.0),
            ("a", "trainable_start", 12.5),
            ("a", "worker_start", 19.5),
            ("a", "epoch_start", 21.0),
            ("a", "epoch_end", 24.0),
            ("a", "reported", 25.0),
            ("a", "epoch_start", 25.0),
            ("a", "epoch_end", 27.0),
            ("a", "reported", 27.5),
            ("a", "trial_end", 29.0),
            ("b", "trial_start", 29.5),
            ("b", "trainable_start", 29.6),
            ("b", "worker_start", 36.0),
            ("b", "epoch_start", 37.0),
            ("b", "epoch_end", 40.0),
            ("b", "reported", 40.5),
            ("b", "trial_end", 42.0),
        ],
    )
    bench = load_overhead()
    runs = bench.read_trace(path)
    a, b = bench.phases(runs["a"]), bench.phases(runs["b"])
    # a: waited from Tune's start; b: from a's end (Tune calls on_trial_start once the actor runs)
    assert a == pytest.approx(
        {"start": 12.5, "workers": 7.0, "setup": 1.5, "epochs": 5.0, "reports": 1.5, "teardown": 1.5}
        | {"wall": 29.0, "overhead": 24.0}
    )
    assert b["start"] == pytest.approx(0.6) and b["wall"] == pytest.approx(13.0)
    assert b["overhead"] == pytest.approx(10.0)
    assert "wall" not in bench.phases(runs["teacher"])
