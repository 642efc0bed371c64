"""Seeds added until the paired interval decides: the interval's validity under optional stopping
(simulated), the stopping rule on hand-made trials, the spec keys, the sweep's budget (no Ray), and one
tiny sequential comparison through Ray Tune."""

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from ray.tune.search import Searcher

from orchestrator.paired import paired_difference
from orchestrator.run_sweep import SweepSearch
from orchestrator.sequential import STOP_TAG, SequentialPlan, false_decision_rate, stop_reason, t_excludes_zero
from orchestrator.spec import SpecError, validate_spec
from orchestrator.sweep_folder import SweepFolder
from orchestrator.tracking import TRIAL_TAG
from tests.conftest import tiny_spec_dict
from tests.servers import run_sweep_process

SIMULATIONS = 2000


@pytest.mark.parametrize("first, max_seeds", [(3, 10), (2, 6), (5, 20)])
@pytest.mark.parametrize("noise", ["normal", "t3"])
def test_the_sequential_interval_wrongly_excludes_0_at_most_5_percent_of_null_comparisons(first, max_seeds, noise):
    plan = SequentialPlan(first, max_seeds)
    sequential = false_decision_rate(plan, plan.look_level, SIMULATIONS, seed=first, noise=noise)
    naive = false_decision_rate(plan, 0.95, SIMULATIONS, seed=first, noise=noise)
    print(
        f"\n[figure] {SIMULATIONS} null comparisons, seeds {first} to {max_seeds}, {noise} differences: "
        f"sequential interval wrong {sequential:.1%}, a plain 95 % t interval at every look wrong {naive:.1%}"
    )
    assert sequential <= 0.05
    assert naive > 0.08  # the simulation sees what optional stopping does to a fixed-seed interval


def test_the_simulated_interval_is_the_one_the_table_uses():
    plan = SequentialPlan(3, 10)
    diffs = np.random.default_rng(1).normal(0.5, 1.0, size=(300, 4))
    simulated = t_excludes_zero(diffs, plan.look_level)
    table = [
        paired_difference(dict(enumerate(row)), dict.fromkeys(range(4), 0.0), "t", plan.look_level).excludes_zero
        for row in diffs
    ]
    assert list(simulated) == table and 0 < simulated.sum() < len(table)


def compare_spec(**compare):
    return validate_spec({"name": "c", "compare": {"methods": ["ce", "kd", "ua_dual"], "seeds": [0, 1], **compare}})


def trials(gains: dict[int, float]) -> list[dict]:
    """kd at 0.70 on every seed, ua_dual at 0.70 + the seed's gain, ce at 0.60; both students alike."""
    out = []
    for seed, gain in gains.items():
        for method, top1 in (("ce", 0.6), ("kd", 0.7), ("ua_dual", 0.7 + gain)):
            out.append(
                {
                    "trial_id": f"{method}-{seed}",
                    "params": {"loss.method": method, "seed": seed},
                    "metrics": {"resnet18/val_top1": top1, "mobilenet_v2/val_top1": top1},
                    "error": None,
                }
            )
    return out


def test_the_rule_adds_seeds_until_decided_or_out_of_seeds_or_budget():
    spec = compare_spec(sequential={"against": "kd", "methods": ["ua_dual"], "max_seeds": 4}, budget_hours=2.0)
    assert stop_reason(trials({0: 0.02, 1: -0.01}), spec, 2, 0.5) is None
    clear = {0: 0.050, 1: 0.051, 2: 0.049}
    assert stop_reason(trials(clear), spec, 3, 0.5).startswith("decided at 3 seeds: every interval of ua_dual")
    assert stop_reason(trials({0: 0.02, 1: -0.01, 2: 0.0, 3: 0.01}), spec, 4, 0.5) == (
        "max_seeds 4 reached; undecided: ua_dual/resnet18, ua_dual/mobilenet_v2"
    )
    assert stop_reason(trials({0: 0.02, 1: -0.01}), spec, 2, 2.5).startswith("budget of 2 resource-hours spent")
    # what a fixed-seed t interval would call decided, the sequential one may not: it is wider
    close = {0: 0.030, 1: 0.050, 2: 0.040}
    assert paired_difference({s: g for s, g in close.items()}, dict.fromkeys(close, 0.0)).excludes_zero
    assert (
        stop_reason(
            trials(close), compare_spec(sequential={"against": "kd", "methods": ["ua_dual"], "max_seeds": 12}), 3, 0
        )
        is None
    )


@pytest.mark.parametrize(
    "compare, message",
    [
        ({"sequential": {"against": "ce", "methods": ["ua_dual"]}, "methods": ["kd", "ua_dual"]}, "is not among"),
        ({"sequential": {"against": "kd", "methods": ["dml"]}}, "name methods of compare.methods"),
        (
            {"sequential": {"against": "kd", "methods": ["ua_dual"], "max_seeds": 3}, "seeds": [0, 1, 2, 3]},
            "at most max_seeds",
        ),
        ({"sequential": {"against": "kd", "methods": ["ua_dual"]}, "interval": "bootstrap"}, "set compare.interval: t"),
        ({"budget_hours": 0}, "budget_hours"),
    ],
)
def test_sequential_settings_that_cannot_work_are_one_line(compare, message):
    with pytest.raises(SpecError) as err:
        compare_spec(**compare)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_sweep_proposes_no_trial_once_its_budget_is_spent(tmp_path):
    folder = SweepFolder(str(tmp_path), "b")
    folder.local.mkdir()
    search = SweepSearch(
        folder,
        2,
        units=4.0,
        budget_hours=1.0,
        metric="val",
        mode="max",
        seed=0,
        space={"loss.alpha": optuna.distributions.FloatDistribution(0.1, 0.9)},
    )
    assert isinstance(search.suggest("a"), dict)
    search.on_trial_result("a", {"val": 0.5, "epoch": 1, "time_total_s": 600.0})  # 4 units x 10 min
    assert isinstance(search.suggest("b"), dict) and search.hours_used == pytest.approx(2 / 3)
    search.on_trial_result("b", {"val": 0.5, "epoch": 1, "time_total_s": 300.0})
    assert search.hours_used == pytest.approx(1.0) and search.suggest("c") == Searcher.FINISHED
    search.save(str(tmp_path / "s.pkl"))
    restored = SweepSearch(
        folder,
        2,
        metric="val",
        mode="max",
        seed=0,
        space={"loss.alpha": optuna.distributions.FloatDistribution(0.1, 0.9)},
    )
    restored.restore(str(tmp_path / "s.pkl"))
    assert restored.suggest("d") == Searcher.FINISHED  # a resumed sweep keeps its clock


@pytest.mark.slow
def test_a_tiny_sequential_comparison_adds_a_seed_and_says_why_it_stopped(tmp_path):
    raw = tiny_spec_dict(
        tmp_path,
        name="tiny-seq",
        loss={"method": "dml"},  # ce and dml: no teacher to train
        compare={
            "methods": ["ce", "dml"],
            "seeds": [0, 1],
            "sequential": {"against": "ce", "methods": ["dml"], "max_seeds": 3},
        },
        tune={"max_concurrent_trials": 2},
    )
    path = tmp_path / "seq.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = run_sweep_process(path, tmp_path)
    assert "seeds [0, 1]: undecided, adding a seed" in out  # 2 seeds at 97.5 %: t(1) = 25.5 decides nothing here
    assert "seeds [0, 1, 2]: " in out and "resource-hours used: " in out
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny-seq").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get(TRIAL_TAG) == "parent"]
    children = [r for r in runs if r.data.tags.get(TRIAL_TAG) != "parent"]
    assert sorted((c.data.params["loss.method"], c.data.params["seed"]) for c in children) == [
        ("ce", "0"),
        ("ce", "1"),
        ("ce", "2"),
        ("dml", "0"),
        ("dml", "1"),
        ("dml", "2"),
    ]
    stopped = parent.data.tags[STOP_TAG]
    assert stopped.startswith(("max_seeds 3 reached; undecided: dml/", "decided at 3 seeds"))
    assert parent.data.tags["seeds_used"] == "0 1 2" and parent.data.metrics["seeds_used"] == 3
    folder = next((tmp_path / "runs" / "sweeps").glob("tiny-seq-*"))
    table = pd.read_csv(folder / "comparison.csv")
    assert (table["seeds"] == 3).all()
    caption = (folder / "comparison.md").read_text()
    assert "2 planned looks" in caption and "Seeds used: 3 (0, 1, 2)" in caption and stopped in caption


@pytest.mark.slow
def test_a_sweep_past_its_budget_starts_no_trial_and_ends_as_finished(tmp_path):
    raw = tiny_spec_dict(
        tmp_path,
        name="tiny-budget",
        loss={"method": "dml"},
        search={"loss.beta": {"type": "float", "low": 0.0, "high": 2.0}},
        tune={"num_trials": 4, "max_concurrent_trials": 1, "scheduler": "fifo", "budget_hours": 0.001},
    )  # 3.6 CPU-seconds: spent by the first trial
    path = tmp_path / "budget.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = run_sweep_process(path, tmp_path)
    assert "none started past 0.001 resource-hours" in out
    used = float(out.split("resource-hours used: ")[1].split()[0])
    assert used >= 0.001 and "0.000 of the budget's 0.001 left" in out
    folder = next((tmp_path / "runs" / "sweeps").glob("tiny-budget-*"))
    table = pd.read_csv(folder / "results.csv")
    assert len(table) == 1 and set(table["state"]) == {"completed"}
