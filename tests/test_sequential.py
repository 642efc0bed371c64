"""Seeds added until the paired interval decides: the decisions' validity under optional stopping
(simulated, on continuous and on lattice differences, for every shipped plan), the stopping rule on
hand-made trials, the spec keys, the sweep's budget (no Ray), and one tiny sequential comparison through
Ray Tune."""

from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from ray.tune.search import Searcher

from orchestrator.execution import SweepFolder
from orchestrator.results import (
    STOP_TAG,
    SequentialPlan,
    comparison_markdown,
    comparison_table,
    paired_difference,
    stop_reason,
    t_interval,
)
from orchestrator.results.sequential import (
    NOISES,
    coverage_table,
    deciding_looks,
    false_decision_rate,
    null_differences,
    shipped_plans,
)
from orchestrator.search import SweepSearch
from orchestrator.spec import SpecError, validate_spec
from orchestrator.tracking import TRIAL_TAG
from tests.conftest import tiny_spec_dict
from tests.servers import run_sweep_process

SIMULATIONS = 2000
SHIPPED = shipped_plans(Path(__file__).resolve().parents[1] / "search_spaces")
TESTED = {"3 to 10": SequentialPlan(3, 10), "2 to 6": SequentialPlan(2, 6), "5 to 20": SequentialPlan(5, 20)}


def plain_t(diffs, level):
    """A plain t interval excluding 0, equal differences ([mean, mean]) included: the rule before."""
    low, high = t_interval(diffs, level)
    tied = (np.ptp(diffs, axis=1) == 0) & (diffs.mean(axis=1) != 0)
    return tied | (low > 0) | (high < 0)


def test_every_shipped_comparison_is_simulated():
    assert SHIPPED["hard/sequential.yaml"] == SequentialPlan(3, 8)
    assert SHIPPED["compare.yaml"] == SequentialPlan(3, 3) and SHIPPED["hard/compare.yaml"] == SequentialPlan(6, 6)
    assert len(SHIPPED) >= 5


@pytest.mark.parametrize("name", [*SHIPPED, *TESTED])
@pytest.mark.parametrize("noise", NOISES)
def test_decisions_are_wrong_in_at_most_5_percent_of_null_comparisons(name, noise):
    plan = {**SHIPPED, **TESTED}[name]
    wrong = false_decision_rate(plan, plan.look_level, SIMULATIONS, seed=plan.max_seeds, noise=noise)
    seeds = f"{plan.first}-{plan.max_seeds} seeds"
    print(f"\n[figure] {SIMULATIONS} null comparisons, {name} ({seeds}), {noise} differences: {wrong:.2%} wrong")
    assert wrong <= 0.05


def test_the_coverage_table_has_a_row_per_plan_and_a_column_per_noise():
    table = coverage_table(
        {"3 to 8": SequentialPlan(3, 8), "5 seeds": SequentialPlan(5, 5)}, ("normal", "images_pm2"), 500
    )
    assert list(table.index) == ["3 to 8", "5 seeds"] and list(table.columns) == ["normal", "images_pm2"]
    assert ((table >= 0) & (table <= 0.05)).all().all() and (table.loc["5 seeds"] == 0).all()  # 5 seeds: too few


@pytest.mark.parametrize("first, max_seeds", [(3, 10), (2, 6), (5, 20)])
def test_the_simulation_sees_what_optional_stopping_does_to_a_fixed_seed_interval(first, max_seeds):
    naive = false_decision_rate(SequentialPlan(first, max_seeds), 0.95, SIMULATIONS, seed=first, decide=plain_t)
    assert naive > 0.08


@pytest.mark.parametrize("name, noise", [("compare.yaml", "images_sign1"), ("hard/sequential.yaml", "images_pm1")])
def test_the_simulation_sees_what_ties_did_to_the_rule_before(name, noise):
    plan = SHIPPED[name]
    before = false_decision_rate(plan, 1 - 0.05 / plan.looks, SIMULATIONS, seed=1, noise=noise, decide=plain_t)
    assert before > 0.07


def test_null_differences_lie_on_the_lattice_and_tie():
    rng = np.random.default_rng(0)
    for noise in NOISES[2:]:
        diffs = null_differences(noise, (500, 3), rng)
        images = diffs / (100 / 360)
        assert np.allclose(images, np.round(images)) and abs(images.mean()) < 0.3
        assert (np.ptp(diffs, axis=1) == 0).any()  # some comparisons tie on every seed
    with pytest.raises(ValueError, match="unknown noise"):
        null_differences("images_blue", (1, 1), rng)


@pytest.mark.parametrize(
    "first, max_seeds, looks, level, first_decision",
    [(3, 8, 2, 0.975, 7), (3, 10, 4, 0.9875, 8), (2, 6, 1, 0.95, 6), (5, 5, 1, 0.95, None), (2, 3, 1, 0.95, None)],
)
def test_the_error_is_split_over_the_looks_that_can_decide(first, max_seeds, looks, level, first_decision):
    plan = SequentialPlan(first, max_seeds)
    assert deciding_looks(first, max_seeds, 0.95) == looks and plan.look_level == pytest.approx(level)
    assert plan.first_decision == first_decision
    assert f"{plan.looks} planned looks" in plan.describe()


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
    spec = compare_spec(sequential={"against": "kd", "methods": ["ua_dual"], "max_seeds": 8}, budget_hours=2.0)
    assert stop_reason(trials({0: 0.02, 1: -0.01}), spec, 2, 0.5) is None
    clear = {s: 0.050 + 0.001 * (s % 3) for s in range(7)}
    assert stop_reason(trials(dict(list(clear.items())[:6])), spec, 6, 0.5) is None  # 6 seeds: too few at 97.5 %
    assert stop_reason(trials(clear), spec, 7, 0.5).startswith("decided at 7 seeds: every difference of ua_dual")
    assert stop_reason(trials({s: 0.01 * (-1) ** s for s in range(8)}), spec, 8, 0.5) == (
        "max_seeds 8 reached; undecided: ua_dual/resnet18, ua_dual/mobilenet_v2"
    )
    assert stop_reason(trials({0: 0.02, 1: -0.01}), spec, 2, 2.5).startswith("budget of 2 resource-hours spent")
    # what a fixed-seed t interval would call decided, the sequential one may not: it is wider
    close = {s: 0.040 + 0.01 * (s % 3 - 1) for s in range(7)}
    assert paired_difference(close, dict.fromkeys(close, 0.0)).excludes_zero
    assert (
        stop_reason(
            trials(close), compare_spec(sequential={"against": "kd", "methods": ["ua_dual"], "max_seeds": 20}), 7, 0
        )
        is None
    )


def test_equal_differences_never_decide_a_sequential_comparison():
    spec = compare_spec(sequential={"against": "kd", "methods": ["ua_dual"], "max_seeds": 8})
    same = {s: 1 / 360 for s in range(8)}  # one validation image of 360 better on every seed
    for seeds in range(2, 8):
        assert stop_reason(trials(dict(list(same.items())[:seeds])), spec, seeds, 0) is None
    assert stop_reason(trials(same), spec, 8, 0).startswith("max_seeds 8 reached; undecided: ua_dual/resnet18")


def test_the_sequential_table_names_its_per_look_level():
    spec = compare_spec(sequential={"against": "kd", "methods": ["ua_dual"], "max_seeds": 8})
    plan = SequentialPlan(2, 8)
    table = comparison_table(trials({0: 0.02, 1: 0.03}), spec.students.names, spec.compare.methods, plan.intervals)
    md = comparison_markdown(table)
    assert "vs_kd [97.5% t per look]" in md and "97.5% t interval per look" in md and "[95% CI]" not in md
    assert set(table["interval_level"]) == {0.975} and set(table["interval_per_look"]) == {True}


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
    assert "seeds [0, 1]: undecided, adding a seed" in out  # 2 seeds: too few for any decision
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
    assert "vs_ce [95% t per look]" in caption and set(table["interval_per_look"]) == {True}


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
