"""Tests of trainables.losses (and trainables.methods, its presets) against independent, written-out computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainables import losses as L
from trainables import methods as M
from trainables.metric_names import train_key, train_keys

C = 10
BASE = dict(temperature=4.0, alpha=0.5, beta=1.0, weighting="entropy", threshold=None, peer_weighting="uniform")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(b: int = 8, c: int = C, seed: int = 0):
    g = _gen(seed)
    a = torch.randn(b, c, generator=g) * 2
    s = torch.randn(b, c, generator=g) * 2
    t = torch.randn(b, c, generator=g) * 3
    y = torch.randint(0, c, (b,), generator=g)
    return a, s, t, y


def _entropy_by_hand(logits: torch.Tensor) -> torch.Tensor:
    p = torch.softmax(logits.double(), dim=1)
    terms = torch.where(p > 0, -p * torch.log(p), torch.zeros_like(p))
    return (terms.sum(1) / math.log(logits.shape[1])).float()


def _kl_per_sample(student: torch.Tensor, target: torch.Tensor, t: float) -> torch.Tensor:
    p = torch.softmax(target / t, dim=1)
    return (p * (torch.log(p) - torch.log_softmax(student / t, dim=1))).sum(1)


# --------------------------------------------------------------------------- certainty


def test_one_hot_teacher_is_fully_trusted():
    z = torch.zeros(3, C)
    z[:, 0] = 100.0
    assert torch.allclose(L.normalized_entropy(z), torch.zeros(3), atol=1e-4)
    assert torch.allclose(L.teacher_certainty(z, "entropy"), torch.ones(3), atol=1e-4)
    assert torch.isfinite(L.normalized_entropy(z)).all()


def test_uniform_teacher_gets_zero_weight():
    z = torch.full((4, C), 3.7)
    assert torch.allclose(L.normalized_entropy(z), torch.ones(4), atol=1e-6)
    assert torch.allclose(L.teacher_certainty(z, "entropy"), torch.zeros(4), atol=1e-6)


def test_normalized_entropy_matches_definition_and_range():
    z = torch.randn(16, C, generator=_gen(1)) * 3
    u = L.normalized_entropy(z)
    assert torch.allclose(u, _entropy_by_hand(z), atol=1e-5)
    assert ((u >= 0) & (u <= 1)).all()


def test_weighting_none_is_ones_and_unknown_weighting_raises():
    z = torch.randn(5, C, generator=_gen(2))
    assert torch.equal(L.teacher_certainty(z, "none"), torch.ones(5))
    with pytest.raises(ValueError, match="weighting"):
        L.teacher_certainty(z, "bogus")


def test_certainty_carries_no_gradient():
    z = torch.randn(5, C, generator=_gen(3), requires_grad=True)
    for weighting in M.WEIGHTINGS:
        assert not L.teacher_certainty(z, weighting, 0.5).requires_grad


def _known_entropy_teacher():
    """Rows with peak logit k over zeros: u decreases as k grows; k = 0 is uniform."""
    peaks = torch.tensor([0.0, 0.2, 8.0, 12.0, 0.5, 20.0])
    z = torch.zeros(len(peaks), C)
    z[:, 3] = peaks
    return z


def test_threshold_gates_exactly_the_uncertain_samples():
    z = _known_entropy_teacher()
    u = _entropy_by_hand(z)
    tau = 0.8
    high = u > tau
    assert 0 < int(high.sum()) < len(u)  # the test data straddles tau
    for weighting in ("threshold", "entropy+threshold"):
        w = L.teacher_certainty(z, weighting, tau)
        assert torch.all(w[high] == 0)
        assert torch.all(w[~high] > 0)
    assert torch.all(L.teacher_certainty(z, "threshold", tau)[~high] == 1)
    assert torch.allclose(L.teacher_certainty(z, "entropy+threshold", tau)[~high], 1 - u[~high], atol=1e-5)
    assert L.gated_fraction(z, tau).item() == pytest.approx(int(high.sum()) / len(u))


def test_threshold_boundary_is_sharp():
    """Dense entropies: tau at each midpoint between neighbours splits the batch exactly there."""
    n = 201
    z = torch.zeros(n, C)
    z[:, 0] = torch.linspace(0.0, 10.0, n)
    u = _entropy_by_hand(z)
    order = torch.sort(u).values
    for i in range(5, n - 1, 23):
        tau = float((order[i] + order[i + 1]) / 2)
        assert float(order[i + 1] - order[i]) < 0.02  # neighbours are close: a shifted cut would show
        w = L.teacher_certainty(z, "entropy+threshold", tau)
        assert torch.equal(w == 0, u > tau)
        assert L.gated_fraction(z, tau).item() == pytest.approx((n - 1 - i) / n)


def test_threshold_none_gates_nothing():
    z = _known_entropy_teacher()
    assert L.gated_fraction(z, None).item() == 0.0
    assert torch.equal(L.teacher_certainty(z, "threshold", None), torch.ones(len(z)))
    u = _entropy_by_hand(z)
    assert torch.allclose(L.teacher_certainty(z, "entropy+threshold", None), 1 - u, atol=1e-5)


def test_threshold_one_gates_nothing_even_for_a_uniform_teacher():
    z = torch.full((3, C), 0.25)
    assert L.gated_fraction(z, 1.0).item() == 0.0
    assert torch.equal(L.teacher_certainty(z, "threshold", 1.0), torch.ones(3))


def test_threshold_outside_range_raises():
    with pytest.raises(ValueError, match="threshold"):
        L.teacher_certainty(torch.zeros(2, C), "threshold", 1.5)


# --------------------------------------------------------------------------- KD term


@pytest.mark.parametrize("temperature,alpha", [(1.0, 0.5), (4.0, 0.9), (2.5, 0.1), (8.0, 1.0)])
def test_weighting_none_equals_hinton_kd(temperature, alpha):
    _, s, t, y = _batch(seed=int(temperature * 10))
    got = L.student_loss(s, y, t, None, temperature=temperature, alpha=alpha, beta=0.0, weighting="none")
    hinton = (1 - alpha) * F.cross_entropy(s, y) + alpha * temperature * temperature * F.kl_div(
        F.log_softmax(s / temperature, 1), F.softmax(t / temperature, 1), reduction="batchmean"
    )
    assert torch.allclose(got["total"], hinton, rtol=1e-5, atol=1e-6)


def test_kd_term_weights_each_sample():
    _, s, t, _ = _batch(seed=4)
    w = torch.rand(s.shape[0], generator=_gen(5))
    expected = 9.0 * (w * _kl_per_sample(s, t, 3.0)).mean()
    assert torch.allclose(L.kd_term(s, t, 3.0, w), expected, rtol=1e-5)


def test_uncertainty_weighted_kd_uses_one_minus_u():
    _, s, t, y = _batch(seed=6)
    got = L.student_loss(s, y, t, None, temperature=2.0, alpha=1.0, beta=0.0, weighting="entropy")
    w = 1 - _entropy_by_hand(t)
    expected = 4.0 * (w * _kl_per_sample(s, t, 2.0)).mean()
    assert torch.allclose(got["kd"], expected, rtol=1e-5)
    assert torch.allclose(got["total"], expected, rtol=1e-5)


# --------------------------------------------------------------------------- gradients


def test_no_gradient_reaches_the_peer():
    a, b, t, y = _batch(seed=7)
    a.requires_grad_(True)
    b.requires_grad_(True)
    parts = L.student_loss(a, y, t, b, **{**BASE, "alpha": 0.0})
    parts["peer"].backward()
    assert b.grad is None or torch.count_nonzero(b.grad) == 0
    assert a.grad is not None and torch.count_nonzero(a.grad) > 0


def test_dual_peer_terms_move_only_their_own_student():
    a, b, t, y = _batch(seed=8)
    a.requires_grad_(True)
    b.requires_grad_(True)
    out = L.dual_student_loss(a, b, y, t, **{**BASE, "alpha": 0.0})
    out["b/peer"].backward()  # b's peer term targets a: it must not move a
    assert a.grad is None or torch.count_nonzero(a.grad) == 0
    assert b.grad is not None and torch.count_nonzero(b.grad) > 0


def test_dual_total_gradient_equals_each_students_own_loss():
    a, b, t, y = _batch(seed=9)
    a.requires_grad_(True)
    b.requires_grad_(True)
    L.dual_student_loss(a, b, y, t, **BASE)["total"].backward()
    a_alone = a.detach().clone().requires_grad_(True)
    L.student_loss(a_alone, y, t, b.detach(), **BASE)["total"].backward()
    assert torch.allclose(a.grad, a_alone.grad, atol=1e-7)


def test_teacher_gets_no_gradient():
    a, b, t, y = _batch(seed=10)
    a.requires_grad_(True)
    b.requires_grad_(True)
    t.requires_grad_(True)
    for weighting in M.WEIGHTINGS:
        t.grad = None
        out = L.dual_student_loss(
            a, b, y, t, **{**BASE, "weighting": weighting, "threshold": 0.9, "peer_weighting": "inverse"}
        )
        out["total"].backward()
        assert t.grad is None or torch.count_nonzero(t.grad) == 0


# --------------------------------------------------------------------------- peer weighting


def test_inverse_peer_weighting_uses_one_minus_w():
    a, b, t, y = _batch(seed=11)
    got = L.student_loss(
        a, y, t, b, temperature=3.0, alpha=0.0, beta=1.0, weighting="entropy", peer_weighting="inverse"
    )
    v = _entropy_by_hand(t)  # 1 - w = 1 - (1 - u) = u
    expected = 9.0 * (v * _kl_per_sample(a, b, 3.0)).mean()
    assert torch.allclose(got["peer"], expected, rtol=1e-5)
    uniform = L.student_loss(a, y, t, b, temperature=3.0, alpha=0.0, beta=1.0, weighting="entropy")
    assert torch.allclose(uniform["peer"], 9.0 * _kl_per_sample(a, b, 3.0).mean(), rtol=1e-5)


def test_inverse_peer_weighting_without_teacher_raises():
    a, b, _, y = _batch(seed=12)
    with pytest.raises(ValueError, match="inverse"):
        L.student_loss(
            a, y, None, b, temperature=2.0, alpha=0.0, beta=1.0, weighting="entropy", peer_weighting="inverse"
        )


def test_missing_logits_for_active_terms_raise():
    a, b, t, y = _batch(seed=13)
    with pytest.raises(ValueError, match="alpha"):
        L.student_loss(a, y, None, b, **BASE)
    with pytest.raises(ValueError, match="beta"):
        L.student_loss(a, y, t, None, **BASE)


def test_switched_off_terms_need_no_logits():
    a, _, _, y = _batch(seed=14)
    out = L.student_loss(a, y, None, None, temperature=4.0, alpha=0.0, beta=0.0, weighting="entropy")
    assert out["kd"].item() == 0.0 and out["peer"].item() == 0.0
    assert torch.allclose(out["total"], F.cross_entropy(a, y))


# --------------------------------------------------------------------------- presets


def _run(method: str, **overrides):
    settings = M.resolve_method({"method": method, **BASE, **overrides})
    a, b, t, y = _batch(seed=15)
    teacher = t if M.needs_teacher(settings) else None
    return settings, L.dual_student_loss(a, b, y, teacher, **settings), (a, b, t, y)


def test_preset_ce_is_cross_entropy_only():
    settings, out, (a, b, t, y) = _run("ce")
    assert not M.needs_teacher(settings)
    for name, logits in (("a", a), ("b", b)):
        assert out[f"{name}/kd"].item() == 0.0 and out[f"{name}/peer"].item() == 0.0
        assert torch.allclose(out[f"{name}/total"], F.cross_entropy(logits, y))
        assert torch.equal(out[f"{name}/total"], out[f"{name}/ce"])


def test_preset_kd_has_no_peer_and_uniform_teacher():
    settings, out, _ = _run("kd")
    assert settings["beta"] == 0 and settings["weighting"] == "none"
    assert out["a/peer"].item() == 0.0 and out["b/peer"].item() == 0.0
    assert out["a/kd"].item() > 0
    assert out["teacher_weight"].item() == 1.0


def test_preset_dml_has_no_teacher_term():
    settings, out, _ = _run("dml")
    assert not M.needs_teacher(settings)
    assert out["a/kd"].item() == 0.0 and out["b/kd"].item() == 0.0
    assert out["a/peer"].item() > 0 and out["b/peer"].item() > 0


def test_preset_dual_kd_trusts_the_teacher_everywhere():
    settings, out, (a, b, t, y) = _run("dual_kd")
    assert settings["weighting"] == "none"
    assert torch.equal(L.teacher_certainty(t, settings["weighting"], settings["threshold"]), torch.ones(len(t)))
    assert out["teacher_weight"].item() == 1.0
    assert out["a/kd"].item() > 0 and out["a/peer"].item() > 0


def test_preset_ua_kd_keeps_weighting_and_drops_peer():
    settings, out, (a, b, t, y) = _run("ua_kd")
    assert settings["weighting"] == "entropy" and settings["beta"] == 0
    assert out["a/peer"].item() == 0.0
    assert out["teacher_weight"].item() == pytest.approx((1 - _entropy_by_hand(t)).mean().item(), abs=1e-5)


def test_preset_ua_dual_keeps_every_setting():
    raw = {"method": "ua_dual", **BASE, "threshold": 0.7, "peer_weighting": "inverse"}
    assert M.resolve_method(raw) == {k: v for k, v in raw.items() if k != "method"}


def test_resolve_method_rejects_meaningless_combinations():
    with pytest.raises(ValueError, match="weighting"):
        M.resolve_method({"method": "ua_dual", **BASE, "weighting": "none"})
    with pytest.raises(ValueError, match="weighting"):
        M.resolve_method({"method": "ua_kd", **BASE, "weighting": "none"})
    with pytest.raises(ValueError, match="beta"):
        M.resolve_method({"method": "dml", **BASE, "beta": 0.0})
    with pytest.raises(ValueError, match="method"):
        M.resolve_method({"method": "nope", **BASE})
    with pytest.raises(ValueError, match="unknown"):
        M.resolve_method({"method": "kd", **BASE, "tempreature": 2.0})


@pytest.mark.parametrize(
    "method, names",
    [(m, n) for m in M.PRESETS for n in (["a"], ["a", "b"]) if len(n) == 2 or not M.needs_two_students(m)],
)
def test_metric_names_name_the_loss_parts(method, names):
    """`trainables.metric_names` names the parts without torch: they are the ones `students_loss` returns
    (a method with a peer trains two students)."""
    settings = M.resolve_method({"method": method, **BASE})
    a, b, t, y = _batch(seed=17)
    teacher = t if M.needs_teacher(settings) else None
    parts = L.students_loss([a, b][: len(names)], y, teacher, names=names, **settings)
    assert train_keys(names) == [train_key(k) for k in parts if k != "total"]


def test_needs_two_students_and_teacher():
    assert [m for m in M.PRESETS if M.needs_two_students(m)] == ["dml", "dual_kd", "ua_dual"]
    assert M.needs_teacher({"method": "kd", **BASE})
    assert not M.needs_teacher({"method": "ce", **BASE})
    assert not M.needs_teacher({"method": "dml", **BASE})
    assert M.needs_teacher({**BASE, "alpha": 0.0, "peer_weighting": "inverse"})
    assert not M.needs_teacher({**BASE, "alpha": 0.0, "beta": 0.0, "peer_weighting": "inverse"})


# --------------------------------------------------------------------------- dual loss


def test_dual_total_is_sum_of_student_totals_and_keys_present():
    a, b, t, y = _batch(seed=16)
    out = L.dual_student_loss(
        a, b, y, t, names=("resnet18", "mobilenet_v2"), **{**BASE, "threshold": 0.8, "weighting": "entropy+threshold"}
    )
    expected_keys = {f"{n}/{k}" for n in ("resnet18", "mobilenet_v2") for k in ("ce", "kd", "peer", "total")}
    assert expected_keys | {"total", "teacher_weight", "gated"} == set(out)
    assert torch.allclose(out["total"], out["resnet18/total"] + out["mobilenet_v2/total"])
    for n, own, other in (("resnet18", a, b), ("mobilenet_v2", b, a)):
        alone = L.student_loss(own, y, t, other, **{**BASE, "threshold": 0.8, "weighting": "entropy+threshold"})
        assert torch.allclose(out[f"{n}/total"], alone["total"])
        assert torch.allclose(out[f"{n}/total"], 0.5 * out[f"{n}/ce"] + 0.5 * out[f"{n}/kd"] + out[f"{n}/peer"])
    assert out["gated"].item() == pytest.approx((_entropy_by_hand(t) > 0.8).float().mean().item())


def test_dual_names_must_differ():
    a, b, t, y = _batch(seed=17)
    with pytest.raises(ValueError, match="names"):
        L.dual_student_loss(a, b, y, t, names=("x", "x"), **BASE)


def test_peer_warmup_ramps_beta_from_zero():
    assert L.peer_warmup_factor(0.0, 0) == 1.0  # off
    assert [L.peer_warmup_factor(e, 2) for e in (0.0, 0.5, 1.0, 2.0, 3.0)] == [0.0, 0.25, 0.5, 1.0, 1.0]
