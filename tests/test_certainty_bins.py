"""The accuracy-by-certainty table on hand-made predictions (no Ray, no MLflow): the bins partition the val
set, per-bin accuracies recombine to the overall one, and the paired differences match a hand computation."""

import math

import pandas as pd
import pytest
import torch

from orchestrator.results import IntervalLevel, analysis_plots, paired_difference, write_certainty_table
from orchestrator.results.certainty_bins import (
    CSV,
    MD,
    accuracy_by_certainty_table,
    bin_accuracy,
    certainty_bins,
    certainty_markdown,
    equal_count_bins,
    shared_mistakes,
)
from trainables.losses import normalized_entropy

STUDENTS = ["resnet18", "mobilenet_v2"]


def trial(tid, method, seed):
    return {"trial_id": tid, "params": {"loss.method": method, "seed": seed}, "metrics": {"x": 1.0}, "error": None}


def random_predictions(n, classes, seed, teacher=True):
    g = torch.Generator().manual_seed(seed)
    pred = {"labels": torch.arange(n) % classes}
    if teacher:
        pred["teacher_logits"] = torch.randn(n, classes, generator=torch.Generator().manual_seed(99)) * 3
    for name in STUDENTS:
        pred[name] = {"confidence": torch.rand(n, generator=g), "correct": torch.rand(n, generator=g) > 0.4}
    return pred


@pytest.mark.parametrize("n", [1, 4, 5, 7, 23, 100, 101])
@pytest.mark.parametrize("bins", [1, 3, 5])
def test_bins_partition_the_val_set_in_equal_counts(n, bins):
    logits = torch.randn(n, 6, generator=torch.Generator().manual_seed(n)) * 2
    cb = certainty_bins(logits, bins)
    assert cb.bins == min(bins, n)
    assert cb.index.shape == (n,) and cb.index.min() >= 0 and cb.index.max() < cb.bins  # one bin per sample
    assert int(cb.count.sum()) == n
    assert int(cb.count.max() - cb.count.min()) <= 1
    # bin 0 is the least certain: every sample of a lower bin has w at most that of any higher bin
    for b in range(cb.bins - 1):
        assert cb.w[cb.index == b].max() <= cb.w[cb.index == b + 1].min()
    assert torch.allclose(cb.u, normalized_entropy(logits))


def test_equal_count_bins_split_ties_by_order():
    assert equal_count_bins(torch.ones(6), 3).tolist() == [0, 0, 1, 1, 2, 2]


def test_bin_accuracies_recombine_to_the_overall_accuracy():
    n = 103
    correct = torch.rand(n, generator=torch.Generator().manual_seed(1)) > 0.3
    cb = certainty_bins(torch.randn(n, 10, generator=torch.Generator().manual_seed(2)), 5)
    acc = bin_accuracy(correct, cb.index, cb.bins)
    assert (acc * cb.count.double()).sum().item() / n == pytest.approx(correct.double().mean().item(), abs=1e-12)

    trials = [trial(f"{m}{s}", m, s) for m in ("kd", "ua_dual") for s in range(3)]
    preds = {t["trial_id"]: random_predictions(n, 10, i) for i, t in enumerate(trials)}
    table = accuracy_by_certainty_table(trials, STUDENTS, preds)
    assert len(table) == (5 + 1) * 2 * 2 and set(table["seeds"]) == {3}
    for (method, name), rows in table.groupby(["method", "student"]):
        overall = sum(preds[f"{method}{s}"][name]["correct"].double().mean().item() * 100 for s in range(3)) / 3
        bins, every = rows[rows["bin"] != "all"], rows[rows["bin"] == "all"]
        recombined = (bins["top1_mean_%"] * bins["samples"]).sum() / bins["samples"].sum()
        assert recombined == pytest.approx(overall, abs=1e-9)
        assert every["samples"].tolist() == [n] and every["top1_mean_%"].item() == pytest.approx(overall, abs=1e-9)


def small_example():
    """8 samples, 2 classes; the teacher's certainty rises with the sample index, so with 2 bins samples 0-3
    are bin 1 (least certain) and 4-7 bin 2. Two seeds of kd and ua_dual, one student."""
    margin = torch.tensor([0.0, 0.1, 0.2, 0.3, 1.0, 2.0, 3.0, 4.0])
    logits = torch.stack([margin, -margin], 1)
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    correct = {
        ("kd", 0): [1, 0, 0, 0, 1, 1, 1, 0],  # bin 1: 25 %, bin 2: 75 %
        ("kd", 1): [1, 1, 0, 0, 1, 1, 1, 1],  # 50 %, 100 %
        ("ua_dual", 0): [1, 1, 1, 0, 1, 1, 0, 0],  # 75 %, 50 %
        ("ua_dual", 1): [1, 1, 1, 1, 1, 1, 1, 1],  # 100 %, 100 %
    }
    trials = [trial(f"{m}{s}", m, s) for m, s in correct]
    preds = {
        f"{m}{s}": {"labels": labels, "teacher_logits": logits, "resnet18": {"correct": torch.tensor(c).bool()}}
        for (m, s), c in correct.items()
    }
    return trials, preds


def test_paired_difference_matches_a_hand_computation():
    trials, preds = small_example()
    table = accuracy_by_certainty_table(trials, ["resnet18"], preds, bins=2).set_index(["bin", "method"])
    assert table["samples"].tolist() == [4, 4, 4, 4, 8, 8]  # bins 1 and 2, then all
    assert table.loc[("1", "kd"), "top1_mean_%"] == pytest.approx(37.5)
    assert table.loc[("2", "ua_dual"), "top1_mean_%"] == pytest.approx(75.0)
    # bin 1: ua_dual - kd per seed = 75 - 25 = 50 and 100 - 50 = 50: mean 50, every seed alike: no spread, so
    # no interval and no decision
    one = table.loc[("1", "ua_dual")]
    assert one["vs_kd_mean_%"] == pytest.approx(50) and one["vs_kd_pairs"] == 2
    assert math.isnan(one["vs_kd_ci_low_%"]) and math.isnan(one["vs_kd_ci_high_%"])
    assert one["vs_kd_excludes_0"] is None and one["vs_kd_sign_flip_p"] == 0.5
    # bin 2: 50 - 75 = -25 and 100 - 100 = 0: mean -12.5, the paired t interval of those two differences
    two = table.loc[("2", "ua_dual")]
    expected = paired_difference({0: 50.0, 1: 100.0}, {0: 75.0, 1: 100.0})
    assert two["vs_kd_mean_%"] == pytest.approx(-12.5)
    assert (two["vs_kd_ci_low_%"], two["vs_kd_ci_high_%"]) == pytest.approx((expected.low, expected.high))
    half_width = 12.706204736 * 12.5 * math.sqrt(2) / math.sqrt(2)  # t(0.975, 1) * sd / sqrt(n); sd of (-25, 0)
    assert expected.high - expected.mean == pytest.approx(half_width, rel=1e-6)
    assert two["vs_kd_excludes_0"] is False
    for b in ("1", "2"):  # kd has no difference with itself
        kd = table.loc[(b, "kd")]
        assert math.isnan(kd["vs_kd_mean_%"]) and kd["vs_kd_excludes_0"] is None and kd["vs_kd_pairs"] == 0
    # the u range of each bin: bin 1 holds the high-u samples
    assert table.loc[("1", "kd"), "u_low"] >= table.loc[("2", "kd"), "u_high"]


def test_a_method_against_itself_differs_by_zero():
    trials, preds = small_example()
    for s in (0, 1):  # ua_dual as a copy of kd
        preds[f"ua_dual{s}"]["resnet18"] = dict(preds[f"kd{s}"]["resnet18"])
    table = accuracy_by_certainty_table(trials, ["resnet18"], preds, bins=2, intervals=IntervalLevel("bootstrap"))
    ua = table[table["method"] == "ua_dual"]
    assert (ua["vs_kd_mean_%"] == 0).all()
    assert ua["vs_kd_ci_low_%"].isna().all() and ua["vs_kd_excludes_0"].isna().all()  # no spread: no interval


def test_focus_classes_cover_only_their_samples():
    trials, preds = small_example()
    table = accuracy_by_certainty_table(trials, ["resnet18"], preds, bins=2, focus_classes={1})
    focus = table[table["bin"] == "classes 1"].set_index("method")
    assert len(focus) == 2 and (focus["samples"] == 4).all()
    # class 1 is the odd samples: kd seed 0 gets 0,0,1,0 and seed 1 gets 1,0,1,1; ua_dual 1,0,1,0 and 1,1,1,1
    assert focus.loc["kd", "top1_mean_%"] == pytest.approx((25 + 75) / 2)
    assert focus.loc["ua_dual", "top1_mean_%"] == pytest.approx((50 + 100) / 2)
    assert focus.loc["ua_dual", "vs_kd_mean_%"] == pytest.approx(25)
    u = normalized_entropy(preds["kd0"]["teacher_logits"])[1::2]
    assert (focus.loc["kd", "u_low"], focus.loc["kd", "u_high"]) == pytest.approx((u.min().item(), u.max().item()))
    assert "classes" not in set(accuracy_by_certainty_table(trials, ["resnet18"], preds, bins=2)["bin"])
    several = accuracy_by_certainty_table(trials, ["resnet18"], preds, bins=2, focus_classes=[1, 0])
    assert set(several["bin"]) == {"1", "2", "classes 0,1", "other classes", "all"}
    assert (several[several["bin"] == "classes 0,1"]["samples"] == 8).all()
    assert (several[several["bin"] == "other classes"]["samples"] == 0).all()
    others = table[table["bin"] == "other classes"].set_index("method")  # class 0: the even samples
    assert (others["samples"] == 4).all()
    assert others.loc["kd", "top1_mean_%"] + focus.loc["kd", "top1_mean_%"] == pytest.approx(
        2 * table[(table["bin"].isin(["1", "2"])) & (table["method"] == "kd")]["top1_mean_%"].mean()
    )
    every = table[table["bin"] == "all"].set_index("method")  # the whole split: the two halves' mean
    assert (every["samples"] == 8).all()
    assert every.loc["ua_dual", "top1_mean_%"] == pytest.approx(
        (focus.loc["ua_dual", "top1_mean_%"] + others.loc["ua_dual", "top1_mean_%"]) / 2
    )


def test_the_table_leaves_out_what_the_plot_leaves_out(tmp_path):
    trials, preds = small_example()
    trials += [trial("dml0", "dml", 0), trial("bad", "ua_dual", 7) | {"error": "boom"}]
    preds["dml0"] = {"labels": preds["kd0"]["labels"].flip(0), "resnet18": {"correct": torch.ones(8).bool()}}
    preds["bad"] = dict(preds["kd0"])
    table = accuracy_by_certainty_table(trials, ["resnet18"], preds, bins=2)
    assert table["method"].unique().tolist() == ["kd", "dml", "ua_dual"]  # the presets' order, no errored trial
    assert (table[table["method"] == "dml"]["seeds"] == 0).all()  # another val order: not binned
    assert (table[table["method"] == "ua_dual"]["seeds"] == 2).all()
    assert table[table["method"] == "dml"]["vs_kd_mean_%"].isna().all()


def test_write_certainty_table_beside_the_plot(tmp_path):
    trials = [trial(f"{m}{s}", m, s) for m in ("kd", "ua_dual") for s in range(2)]
    preds = {t["trial_id"]: random_predictions(40, 4, i) for i, t in enumerate(trials)}
    written = write_certainty_table(tmp_path, STUDENTS, preds, trials, IntervalLevel("bootstrap"))
    plots = analysis_plots(tmp_path, STUDENTS, preds, trials, {})
    assert set(written) == {CSV, MD} and (tmp_path / "accuracy_by_certainty.png") in plots
    csv = pd.read_csv(written[CSV], dtype={"bin": str})
    assert len(csv) == (5 + 1) * 2 * 2 and csv.loc[csv["bin"] != "all", "samples"].sum() == 40 * 2 * 2
    assert set(csv["interval_kind"]) == {"bootstrap"} and set(csv["interval_level"]) == {0.95}
    md = written[MD].read_text()
    assert "vs_kd [95% bootstrap BCa]" in md and "95% bootstrap BCa interval" in md and "| ua_dual" in md
    assert "[95% CI]" not in md and "95 %" not in md
    assert write_certainty_table(tmp_path / "none", STUDENTS, {}, trials) == {}
    no_teacher = {tid: random_predictions(40, 4, 0, teacher=False) for tid in preds}
    assert write_certainty_table(tmp_path / "none", STUDENTS, no_teacher, trials) == {}
    assert not (tmp_path / "none").exists()
    empty = accuracy_by_certainty_table(trials, STUDENTS, {})
    assert empty.empty and "vs_kd_mean_%" in empty.columns


def test_each_reference_gets_its_paired_columns():
    trials, preds = small_example()
    table = accuracy_by_certainty_table(trials, ["resnet18"], preds, bins=2, references=["kd", "ua_dual"])
    table = table.set_index(["bin", "method"])
    assert table.loc[("1", "kd"), "vs_ua_dual_mean_%"] == pytest.approx(-50)  # the mirror of ua_dual - kd
    assert math.isnan(table.loc[("1", "ua_dual"), "vs_ua_dual_mean_%"])
    md = certainty_markdown(table.reset_index())
    assert "vs_ua_dual [95% t]" in md and "vs_kd ≠0" in md
    assert "`vs_kd` and `vs_ua_dual`: per seed the method's top-1 in the bin minus kd's (ua_dual's) in the" in md
    alone = certainty_markdown(accuracy_by_certainty_table(trials, ["resnet18"], preds, bins=2))
    assert "`vs_kd`: per seed the method's top-1 in the bin minus kd's in the same bin" in alone


def test_shared_mistakes_count_both_students_wrong_with_one_class():
    """Two-student methods: the share of images both students get wrong with the same class, per row, mean over
    seeds; a trial saved before the class was (no `predicted`) is left out, one-student methods have none."""
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    predicted = {  # (method, seed): (resnet18, mobilenet_v2)
        ("dual_kd", 0): ([0, 1, 2, 2, 0, 1, 0, 1], [0, 1, 2, 0, 0, 1, 0, 2]),  # sample 2 shared; 3 wrong apart
        ("dual_kd", 1): ([1, 1, 0, 1, 0, 2, 0, 1], [1, 1, 0, 1, 0, 2, 0, 1]),  # samples 0 and 5 shared
        ("kd", 0): ([1, 1, 0, 1, 0, 1, 0, 1], [1, 1, 0, 1, 0, 1, 0, 1]),
    }
    logits = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    preds = {
        f"{m}{s}": {"labels": labels, "teacher_logits": logits}
        | {n: {"correct": torch.tensor(c) == labels, "predicted": torch.tensor(c)} for n, c in zip(STUDENTS, pair)}
        for (m, s), pair in predicted.items()
    }
    preds["dual_kd2"] = {k: ({"correct": v["correct"]} if k in STUDENTS else v) for k, v in preds["dual_kd1"].items()}
    trials = [trial(tid, tid[:-1], int(tid[-1])) for tid in preds]
    table = accuracy_by_certainty_table(trials, STUDENTS, preds, bins=1, focus_classes={1})
    dual = table[table["method"] == "dual_kd"].set_index(["bin", "student"])["both_wrong_same_%"]
    assert dual[("1", "resnet18")] == dual[("1", "mobilenet_v2")] == pytest.approx((12.5 + 25) / 2)
    assert dual[("classes 1", "resnet18")] == pytest.approx((0 + 25) / 2)
    assert dual[("other classes", "resnet18")] == pytest.approx((25 + 25) / 2)
    assert dual[("all", "mobilenet_v2")] == pytest.approx((12.5 + 25) / 2)
    assert table.loc[table["method"] == "kd", "both_wrong_same_%"].isna().all()
    md = certainty_markdown(table)
    assert "both wrong, same class %" in md and "| 18.75" in md and "both students are wrong with the same" in md
    assert shared_mistakes(preds["dual_kd0"], STUDENTS, labels).nonzero().flatten().tolist() == [2]
    assert shared_mistakes(preds["dual_kd2"], STUDENTS, labels) is None
    assert shared_mistakes(preds["dual_kd0"], STUDENTS, labels.flip(0)) is None  # another val order
