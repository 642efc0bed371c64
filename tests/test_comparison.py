"""The comparison table, its writers and the uncertainty plots, on hand-made trials (no Ray, no MLflow)."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import ndtr, ndtri

from orchestrator.results import (
    IntervalLevel,
    analysis_plots,
    comparison_markdown,
    comparison_table,
    format_comparison,
    parent_metrics,
    write_comparison,
)
from orchestrator.results.comparison import PAPER_COMPRESSION, PAPER_TOP1, comparison_latex

STUDENTS = ["resnet18", "mobilenet_v2"]
METHODS = ["ce", "kd", "dml", "dual_kd", "ua_kd", "ua_dual"]
SIZES = {
    "teacher/params": 25_557_032,
    "teacher/params_1000": 25_557_032,
    "resnet18/params": 11_689_512,
    "resnet18/params_1000": 11_689_512,
    "resnet18/flops": 3_600_000_000,
    "mobilenet_v2/params": 3_504_872,
    "mobilenet_v2/params_1000": 3_504_872,
    "mobilenet_v2/flops": 600_000_000,
}
NO_TEACHER = {k: v for k, v in SIZES.items() if not k.startswith("teacher/")}
PNG = b"\x89PNG"


def md_cells(md: str) -> set[str]:
    """Every cell of the Markdown table in `md`, without its padding."""
    return {cell.strip() for line in md.splitlines() if line.startswith("|") for cell in line.strip("|").split("|")}


def trial(tid, method, seed, r18, mnv2, error=None, teacher=True):
    metrics = {
        "resnet18/val_top1": r18,
        "resnet18/val_top5": 0.99,
        "resnet18/val_ece": 0.05,
        "mobilenet_v2/val_top1": mnv2,
        "mobilenet_v2/val_top5": 0.98,
        "mobilenet_v2/val_ece": 0.04,
        **(SIZES if teacher else NO_TEACHER),
    }
    if teacher:
        metrics["teacher/val_top1"] = 0.96
    return {"trial_id": tid, "params": {"loss.method": method, "seed": seed}, "metrics": metrics, "error": error}


TRIALS = [
    trial("ua1", "ua_dual", 1, 0.95, 0.85),
    trial("kd0", "kd", 0, 0.90, 0.80),
    trial("dml0", "dml", 0, 0.93, 0.83, teacher=False),
    trial("kd1", "kd", 1, 0.92, 0.82),
    trial("ua0", "ua_dual", 0, 0.97, 0.87),
    trial("ua2", "ua_dual", 2, 0.10, 0.10, error="RuntimeError: worker died"),
    {"trial_id": "nores", "params": {"loss.method": "kd", "seed": 2}, "metrics": {}, "error": None},
]


@pytest.fixture(scope="module")
def table():
    return comparison_table(TRIALS, STUDENTS, ["kd", "ua_dual", "dml"])


def test_rows_order_and_columns(table):
    assert list(zip(table["method"], table["student"])) == [
        ("kd", "resnet18"),
        ("kd", "mobilenet_v2"),
        ("ua_dual", "resnet18"),
        ("ua_dual", "mobilenet_v2"),
        ("dml", "resnet18"),
        ("dml", "mobilenet_v2"),
    ]
    assert list(table.columns) == [
        "method",
        "student",
        "seeds",
        "top1_mean_%",
        "top1_std_%",
        "top5_mean_%",
        "ece_mean_%",
        "params",
        "flops_per_image",
        "compression",
        "compression_1000",
        *(
            f"vs_{ref}_{part}"
            for ref in ("kd", "ce")
            for part in ("mean_%", "ci_low_%", "ci_high_%", "excludes_0", "sign_flip_p", "pairs")
        ),
        "interval_kind",
        "interval_level",
        "interval_per_look",
        "teacher_top1_%",
        "paper_top1_%_quoted",
        "paper_compression_quoted",
    ]


def test_seed_statistics_skip_errored_and_empty_trials(table):
    r18 = table[table["student"] == "resnet18"].set_index("method")
    assert list(r18["seeds"]) == [2, 2, 1]  # the errored ua_dual and the result-less kd trial are left out
    assert r18.loc["kd", "top1_mean_%"] == pytest.approx(91.0)
    assert r18.loc["ua_dual", "top1_mean_%"] == pytest.approx(96.0)
    assert r18.loc["kd", "top1_std_%"] == pytest.approx(math.sqrt(2))  # sample std of 90, 92
    assert math.isnan(r18.loc["dml", "top1_std_%"])  # one seed
    assert r18.loc["kd", "top5_mean_%"] == pytest.approx(99.0)
    assert r18.loc["kd", "ece_mean_%"] == pytest.approx(5.0)
    assert r18.loc["ua_dual", "vs_kd_mean_%"] == pytest.approx(5.0)  # seeds 0 and 1: +7 and +3
    assert r18.loc["ua_dual", "vs_kd_pairs"] == 2
    half = 12.706 * 2 * math.sqrt(2) / math.sqrt(2)  # t(0.975, 1) * sd / sqrt(n)
    assert r18.loc["ua_dual", "vs_kd_ci_low_%"] == pytest.approx(5.0 - half, rel=1e-3)
    assert r18.loc["ua_dual", "vs_kd_excludes_0"] is not None and not r18.loc["ua_dual", "vs_kd_excludes_0"]
    assert math.isnan(r18.loc["kd", "vs_kd_mean_%"])  # the reference itself
    assert r18.loc["dml", "vs_kd_mean_%"] == pytest.approx(3.0)  # paired on seed 0 only: 93 - 90
    assert math.isnan(r18.loc["dml", "vs_kd_ci_low_%"])  # one pair: no interval
    assert r18["vs_ce_mean_%"].isna().all()  # no ce run
    assert list(table["teacher_top1_%"]) == pytest.approx([96.0] * 6)  # dml reports none: mean of the others


def test_sizes_and_compression(table):
    first = table.drop_duplicates("student").set_index("student")
    assert first.loc["resnet18", "params"] == 11_689_512
    assert first.loc["mobilenet_v2", "flops_per_image"] == 600_000_000
    assert first.loc["resnet18", "compression"] == pytest.approx(25_557_032 / 11_689_512)
    assert first.loc["resnet18", "compression"] == pytest.approx(2.186, abs=1e-3)
    assert first.loc["mobilenet_v2", "compression_1000"] == pytest.approx(7.292, abs=1e-3)
    dml = table[table["method"] == "dml"].set_index("student")
    assert dml.loc["resnet18", "compression"] == pytest.approx(2.186, abs=1e-3)  # the architecture's, not the run's


def test_quoted_columns_are_separate_and_nan_where_the_paper_is_silent(table):
    rows = table.set_index(["method", "student"])
    assert rows.loc[("kd", "resnet18"), "paper_top1_%_quoted"] == PAPER_TOP1[("kd", "resnet18")] == 81.80
    assert rows.loc[("ua_dual", "mobilenet_v2"), "paper_top1_%_quoted"] == 81.46
    assert rows.loc[("ua_dual", "mobilenet_v2"), "paper_compression_quoted"] == PAPER_COMPRESSION["mobilenet_v2"]
    assert math.isnan(rows.loc[("dml", "resnet18"), "paper_top1_%_quoted"])
    assert rows.loc[("kd", "resnet18"), "top1_mean_%"] != 81.80  # measured, not overwritten by the quote


def test_no_kd_run_gives_nan_differences_and_missing_methods_keep_a_row():
    df = comparison_table(TRIALS, STUDENTS, ["ua_dual", "ce"])
    assert df["vs_kd_mean_%"].isna().all() and (df["vs_kd_pairs"] == 0).all()
    ce = df[df["method"] == "ce"]
    assert list(ce["seeds"]) == [0, 0] and ce["top1_mean_%"].isna().all()


def test_text_markdown_latex_and_files(table, tmp_path):
    text = format_comparison(table)
    assert "ua_dual" in text and "91.00 ± 1.41" in text
    md = comparison_markdown(table)
    assert "91.00 ± 1.41" in md_cells(md) and "93.00" in md_cells(md)  # one seed: no ± part
    assert "ImageNet-100" in md and "1000-class heads" in md
    tex = comparison_latex(table)
    assert r"\begin{tabular}" in tex and r"$\pm$" in tex and r"paper\_top1\_\%\_quoted" in tex
    written = write_comparison(table, tmp_path)
    assert set(written) == {"comparison.csv", "comparison.md", "comparison.tex"}
    assert all(p.exists() and p.stat().st_size > 0 for p in written.values())
    assert "paper_compression_quoted" in written["comparison.csv"].read_text().splitlines()[0]


def predictions_for(n, classes, teacher, seed):
    g = torch.Generator().manual_seed(seed)
    pred = {"labels": torch.arange(n) % classes}
    if teacher:
        pred["teacher_logits"] = torch.randn(n, classes, generator=g) * 3
    for name in STUDENTS:
        pred[name] = {"confidence": torch.rand(n, generator=g), "correct": torch.rand(n, generator=g) > 0.3}
    return pred


def test_analysis_plots_write_every_kind(tmp_path):
    trials = TRIALS[:5]
    preds = {
        t["trial_id"]: predictions_for(40, 4, t["params"]["loss.method"] != "dml", i) for i, t in enumerate(trials)
    }
    preds["kd1"]["labels"] = preds["kd1"]["labels"].flip(0)  # another order: left out of the certainty bins
    histories = {t["trial_id"]: {f"{s}/val_top1": [(1, 0.5), (2, 0.7), (3, 0.8)] for s in STUDENTS} for t in trials}
    paths = analysis_plots(tmp_path, STUDENTS, preds, trials, histories, teacher_train_logits=torch.randn(100, 4))
    assert sorted(p.name for p in paths) == [
        "accuracy_by_certainty.png",
        "accuracy_vs_epoch.png",
        "reliability_mobilenet_v2.png",
        "reliability_resnet18.png",
        "teacher_entropy.png",
    ]
    assert all(p.read_bytes().startswith(PNG) for p in paths)


def test_analysis_plots_skip_missing_data(tmp_path):
    assert analysis_plots(tmp_path, STUDENTS, {}, [], {}) == []
    assert analysis_plots(tmp_path, [], {}, TRIALS, {}) == []
    only_val_teacher = {"kd0": predictions_for(20, 3, True, 0)}
    paths = analysis_plots(tmp_path / "v", STUDENTS, only_val_teacher, TRIALS, {})
    assert {p.name for p in paths} == {
        "teacher_entropy.png",
        "accuracy_by_certainty.png",
        "reliability_resnet18.png",
        "reliability_mobilenet_v2.png",
    }


def test_paired_difference_t_and_bootstrap():
    from scipy import stats

    from orchestrator.results import paired_difference

    method = {0: 91.0, 1: 93.0, 2: 92.5, 3: 94.0, 4: 92.0, 9: 50.0}  # seed 9 has no pair: left out
    reference = {0: 90.0, 1: 91.0, 2: 92.0, 3: 92.0, 4: 91.5}
    d = paired_difference(method, reference)
    diffs = [1.0, 2.0, 0.5, 2.0, 0.5]
    half = stats.t.ppf(0.975, 4) * stats.tstd(diffs) / math.sqrt(5)
    assert d.seeds == 5 and d.mean == pytest.approx(1.2)
    assert (d.low, d.high) == pytest.approx((1.2 - half, 1.2 + half))
    assert (d.low, d.high) == pytest.approx(tuple(stats.ttest_rel(diffs, [0] * 5).confidence_interval()))
    # the interval excludes 0, but 5 differences of one sign happen by chance 2/32 of the time: not decided
    assert d.low > 0 and d.sign_flip_p == 2 / 32 and d.excludes_zero is False
    six = paired_difference({**method, 5: 92.5}, {**reference, 5: 91.0})
    assert six.low > 0 and six.sign_flip_p == 2 / 64 and six.excludes_zero is True
    boot = paired_difference(method, reference, "bootstrap")
    assert boot.mean == pytest.approx(1.2) and 0.5 <= boot.low < 1.2 < boot.high <= 2.0  # within the observed range
    assert paired_difference(method, reference, "bootstrap") == boot  # seeded: the same resamples every time
    noisy = paired_difference({0: 91.0, 1: 89.0, 2: 92.0}, {0: 90.0, 1: 90.0, 2: 90.0})
    assert noisy.low < 0 < noisy.high and noisy.excludes_zero is False
    assert paired_difference({0: 1.0}, {0: 0.5}).excludes_zero is None  # one pair: no interval


def exact_bootstrap(diffs, level=0.95):
    """The ideal bootstrap of the mean (every one of the n^n resamples once) and its percentile and BCa ends.

    BCa as Efron & Tibshirani (1993) 14.3: z0 from the share of resampled means below the mean (ties
    counted half), the acceleration from the jackknife means.
    """
    diffs = np.asarray(diffs, dtype=float)
    n = len(diffs)
    means = np.array([diffs[list(ix)].mean() for ix in itertools.product(range(n), repeat=n)])
    z0 = ndtri(((means < diffs.mean()).mean() + (means <= diffs.mean()).mean()) / 2)
    u = (diffs.sum() - diffs) / (n - 1)
    u = u.mean() - u
    a = (u**3).sum() / (6 * (u**2).sum() ** 1.5)
    z = ndtri(np.array([0.5 - level / 2, 0.5 + level / 2]))
    return np.quantile(means, [0.5 - level / 2, 0.5 + level / 2]), np.quantile(
        means, ndtr(z0 + (z0 + z) / (1 - a * (z0 + z)))
    )


def test_bootstrap_is_bca_and_reaches_into_a_skewed_tail():
    from orchestrator.results import paired_difference

    diffs = [0.2, 0.5, 0.1, 0.3, 2.5]  # one seed far above the others
    (pct_low, pct_high), (bca_low, bca_high) = exact_bootstrap(diffs)
    assert (pct_low, pct_high) == pytest.approx((0.18, 1.62))
    boot = paired_difference(dict(enumerate(diffs)), dict.fromkeys(range(5), 0.0), "bootstrap")
    # 10,000 resamples land within a resampled mean's step of the ideal bootstrap's BCa ends ...
    assert (boot.low, boot.high) == pytest.approx((bca_low, bca_high), abs=0.05)
    # ... and the percentile interval's upper end is 0.4 short of them: the BCa one is wider here.
    assert boot.high - boot.low > pct_high - pct_low + 0.3


def test_intervals_of_equal_and_of_two_differences():
    from orchestrator.results import paired_difference

    for interval in ("t", "bootstrap"):  # equal differences estimate no spread: no interval, nothing decided
        same = paired_difference({0: 3.0, 1: 4.0, 2: 5.0}, {0: 1.0, 1: 2.0, 2: 3.0}, interval)
        assert same.mean == 2.0 and math.isnan(same.low) and math.isnan(same.high) and same.excludes_zero is None
    two = paired_difference({0: 1.0, 1: 2.0}, {0: 0.0, 1: 0.0}, "bootstrap")
    assert (two.low, two.high) == (1.0, 2.0)  # every resampled mean lies in [1, 2] ...
    assert two.excludes_zero is False  # ... but two differences of one sign happen by chance half the time
    half = 12.706 * math.sqrt(0.5) / math.sqrt(2)  # t(0.975, 1) * sd / sqrt(n)
    assert (paired_difference({0: 1.0, 1: 2.0}, {0: 0.0, 1: 0.0}).low) == pytest.approx(1.5 - half, rel=1e-3)


def test_paired_columns_in_every_table(tmp_path):
    trials = [
        trial(f"{m}{s}", m, s, r18, 0.8)
        for m, base in (("ce", 0.90), ("kd", 0.92))
        for s, r18 in enumerate([base, base + 0.01, base - 0.005])
    ]
    df = comparison_table(trials, STUDENTS, ["ce", "kd"])
    kd = df.set_index(["method", "student"]).loc[("kd", "resnet18")]
    assert kd["vs_ce_mean_%"] == pytest.approx(2.0) and kd["vs_ce_excludes_0"] is None  # +2 on every seed: no spread
    md = comparison_markdown(df)
    assert "+2.00" in md_cells(md) and "yes" not in md_cells(md) and "95% t interval" in md
    assert "vs_kd [95% t]" in md_cells(md) and "95 %" not in md and "CI" not in md
    assert r"$\neq$" in comparison_latex(df) and r"95\% t" in comparison_latex(df)
    boot = comparison_markdown(comparison_table(trials, STUDENTS, ["ce", "kd"], IntervalLevel("bootstrap")))
    assert "vs_ce [95% bootstrap BCa]" in md_cells(boot) and "95% bootstrap BCa interval" in boot


def test_teacher_uncertainty_summary():
    from orchestrator.teacher import teacher_uncertainty

    sure, unsure = torch.tensor([[20.0, 0.0, 0.0]] * 3), torch.zeros(1, 3)  # u = 0 three times, u = 1 once
    summary = teacher_uncertainty(torch.cat([sure, unsure]), threshold=0.8)
    assert summary["teacher_u/train_mean"] == pytest.approx(0.25, abs=1e-6)
    assert summary["teacher_u/train_share_above_0.3"] == summary["teacher_u/train_share_above_threshold"] == 0.25
    assert summary["teacher_u/train_p10"] == pytest.approx(0, abs=1e-6)
    assert "teacher_u/train_share_above_threshold" not in teacher_uncertainty(sure)


@pytest.mark.parametrize(
    "intervals, header, words",
    [
        (IntervalLevel(), "vs_kd [95% t]", "95% t interval"),
        (IntervalLevel("bootstrap"), "vs_kd [95% bootstrap BCa]", "95% bootstrap BCa interval"),
        (IntervalLevel("t", 1 - 0.05 / 6, per_look=True), "vs_kd [99.17% t per look]", "99.17% t interval per look"),
    ],
)
def test_every_output_names_its_intervals_kind_and_level(intervals, header, words, tmp_path):
    df = comparison_table(TRIALS, STUDENTS, ["kd", "ua_dual", "dml"], intervals)
    written = write_comparison(df, tmp_path)
    csv = pd.read_csv(written["comparison.csv"])
    assert (csv["interval_kind"] == intervals.kind).all() and (csv["interval_per_look"] == intervals.per_look).all()
    assert csv["interval_level"].to_numpy() == pytest.approx(intervals.level)
    md = written["comparison.md"].read_text()
    assert header in md_cells(md) and words in md and "[95% CI]" not in md
    assert header.replace("_", r"\_").replace("%", r"\%") in written["comparison.tex"].read_text()
    assert header in format_comparison(df)
    assert parent_metrics(df)["paired_interval_level"] == intervals.level  # the parent run's metric


def test_references_give_one_paired_column_set_each():
    """`compare.references` as data: a column set, a display column and a caption name per reference, the parent
    run's metrics too; the default gives the table it gave before the list existed."""
    df = comparison_table(TRIALS, STUDENTS, ["kd", "ua_dual", "dml"], references=["kd", "dml"])
    paired = [c for c in df.columns if c.startswith("vs_")]
    assert paired[0] == "vs_kd_mean_%" and paired[6] == "vs_dml_mean_%" and len(paired) == 12
    ua = df[(df["method"] == "ua_dual") & (df["student"] == "resnet18")].iloc[0]
    assert ua["vs_dml_mean_%"] == pytest.approx(97 - 93) and ua["vs_dml_pairs"] == 1  # dml has seed 0 only
    assert df.loc[df["method"] == "dml", "vs_dml_mean_%"].isna().all()
    md = comparison_markdown(df)
    assert "vs_dml ≠0" in md and "vs_ce" not in md
    assert "`vs_kd` and `vs_dml`: the paired difference in top-1 points against kd (dml) on" in md
    metrics = parent_metrics(df)
    assert metrics["ua_dual/resnet18/vs_dml_mean"] == pytest.approx(0.04) and not any("vs_ce" in k for k in metrics)
    methods = ["kd", "ua_dual", "dml"]
    default = comparison_table(TRIALS, STUDENTS, methods)
    pd.testing.assert_frame_equal(default, comparison_table(TRIALS, STUDENTS, methods, references=["kd", "ce"]))
    caption = "`vs_kd` and `vs_ce`: the paired difference in top-1 points against kd (ce) on"
    assert caption in comparison_markdown(default)
    three = comparison_markdown(comparison_table(TRIALS, STUDENTS, methods, references=["kd", "ce", "ua_dual"]))
    assert "`vs_kd`, `vs_ce` and `vs_ua_dual`: the paired difference in top-1 points against kd (ce, ua_dual)" in three
