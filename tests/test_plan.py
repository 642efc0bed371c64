"""The plan a dry run prints: methods, counts in words, resources per worker and in all, totals, variables as
resolved, and warnings when a cluster meets storage or a store on this machine."""

from pathlib import Path

import pytest

from orchestrator import sweep

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def plan(tmp_path, monkeypatch, capsys):
    """The dry run's output for a shipped spec and arguments, run from an empty folder."""
    monkeypatch.chdir(tmp_path)
    for name in ("RAY_ADDRESS", "DUALKD_STORAGE", "MLFLOW_TRACKING_URI", "IMAGENET100_ROOT"):
        monkeypatch.delenv(name, raising=False)

    def dry_run(spec: str, *args: str) -> str:
        assert sweep.main([str(ROOT / spec), "--dry-run", *args]) == 0
        return capsys.readouterr().out

    return dry_run


def test_a_comparison_names_its_methods_and_totals(plan):
    out = plan("search_spaces/imagenet100/compare.yaml")
    assert out.splitlines()[0].startswith(
        "comparison imagenet100-compare: methods ce, kd, dml, dual_kd, ua_kd, ua_dual,"
    )
    assert "method ua_dual" not in out
    assert "per trial: 4 workers, each 8 CPU + 1 GPU (32 CPU + 4 GPU in all)" in out
    assert "in all: 18 trials x 100 epochs = 1800 trial-epochs; 2 trials at once reserve 64 CPU + 8 GPU" in out
    assert "from ${IMAGENET100_ROOT}" in out and "unset environment variable" in out


def test_one_epoch_is_singular_and_a_set_variable_is_shown(plan, monkeypatch):
    assert "1 epoch each" in plan("search_spaces/smoke.yaml") and "1 epochs" not in plan("search_spaces/smoke.yaml")
    monkeypatch.setenv("IMAGENET100_ROOT", "/data/in100")
    assert "from /data/in100 (${IMAGENET100_ROOT})" in plan("search_spaces/imagenet100/peer.yaml", "--skip-data-check")


def test_a_cluster_address_warns_of_local_storage_and_sqlite(plan, tmp_path):
    out = plan("search_spaces/smoke.yaml", "--address", "auto")
    assert "--address joins a cluster, but the storage is" in out and "DUALKD_STORAGE" in out
    assert "MLflow's store is sqlite:" in out
    shared = plan("search_spaces/smoke.yaml", "--address", "auto", "--set", f"storage={tmp_path}/shared")
    assert "but the storage is" not in shared
    assert "--address joins" not in plan("search_spaces/smoke.yaml")


def test_a_comparison_names_its_references_and_those_not_compared(plan):
    """A shipped spec's references [kd, ce, dual_kd] stay valid when `--set` narrows its methods: the plan says
    which are not compared (their columns stay empty)."""
    out = plan("search_spaces/compare.yaml")
    assert "(each paired, seed by seed, against kd, ce, dual_kd)" in out and "not compared" not in out
    narrowed = plan("search_spaces/compare.yaml", "--set", "compare.methods=[kd,ua_dual]")
    assert "(each paired, seed by seed, against kd; ce, dual_kd are not compared: their columns stay empty)" in narrowed
    one = plan("search_spaces/compare.yaml", "--set", "compare.methods=[kd,dual_kd,ua_dual]")
    assert "against kd, dual_kd; ce is not compared: its columns stay empty" in one
