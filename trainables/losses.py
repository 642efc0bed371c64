"""The one loss that every method is a setting of: uncertainty-aware dual-student distillation.

Pure torch functions, no framework state, so they can be unit-tested and reused outside Ray. The methods, as
presets of these settings, are `trainables.methods` (no torch there: the driver validates specs with it).
Notation (see docs/science.md, "The loss"): teacher logits z_t (frozen), student logits z_s, peer logits
z_r, temperature T, C classes.

- u(x) = H(softmax(z_t)) / log C in [0, 1]: the teacher's normalised uncertainty.
- w(x) = 1 - u(x) (or 1, or gated by a threshold): how much the teacher is trusted on x.
- KD(s)   = T^2 * mean_x[ w(x) * KL(softmax(z_t/T) || softmax(z_s/T)) ]
- Peer(s) = T^2 * mean_x[ v(x) * KL(softmax(z_r/T).detach() || softmax(z_s/T)) ], v = 1 or 1 - w.
- L(s)    = (1 - alpha) * CE(z_s, y) + alpha * KD(s) + beta * Peer(s); a step minimises L_a + L_b.

All divergences are computed in float32 (logits are upcast), so bf16 autocast cannot make the
entropy or the KL lose precision.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from trainables.methods import GATED_WEIGHTINGS, PEER_WEIGHTINGS, WEIGHTINGS, check_threshold

# --------------------------------------------------------------------------- teacher certainty


def _check_logits(logits: Tensor, name: str) -> None:
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"{name} must be shaped [batch, classes] with at least 2 classes, got {tuple(logits.shape)}")


def normalized_entropy(teacher_logits: Tensor) -> Tensor:
    """u(x) = H(softmax(z_t)) / log C per sample, in [0, 1]; 0 for one-hot, 1 for uniform.

    Uses log_softmax so that peaked logits (p = 0 for some classes) give 0 * finite, never NaN;
    the clamp only removes rounding just outside [0, 1].
    """
    _check_logits(teacher_logits, "teacher_logits")
    log_p = F.log_softmax(teacher_logits.float(), dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1)
    return (entropy / math.log(teacher_logits.shape[1])).clamp(0.0, 1.0)


def teacher_certainty(teacher_logits: Tensor, weighting: str = "entropy", threshold: Optional[float] = None) -> Tensor:
    """w(x) per sample: how much the teacher is trusted on each sample.

    `none` -> 1; `entropy` -> 1 - u; `threshold` -> 1 where u <= tau else 0;
    `entropy+threshold` -> 1 - u where u <= tau else 0. `threshold=None` gates nothing (tau = 1);
    it is ignored by `none` and `entropy`. Computed without grad: the teacher is frozen, and a
    weight that carried gradient would let the loss push the teacher toward uncertainty.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"loss.weighting must be one of {WEIGHTINGS}, got {weighting!r}: pick one of those")
    check_threshold(threshold)
    with torch.no_grad():
        z = teacher_logits.detach()
        if weighting == "none":
            _check_logits(z, "teacher_logits")
            return torch.ones(z.shape[0], device=z.device, dtype=torch.float32)
        u = normalized_entropy(z)
        w = torch.ones_like(u) if weighting == "threshold" else 1.0 - u
        if weighting in GATED_WEIGHTINGS and threshold is not None:
            w = torch.where(u > float(threshold), torch.zeros_like(w), w)
        return w


def gated_fraction(teacher_logits: Tensor, threshold: Optional[float]) -> Tensor:
    """Share of the batch whose teacher uncertainty u exceeds tau (0 when threshold is None)."""
    check_threshold(threshold)
    with torch.no_grad():
        if threshold is None:
            _check_logits(teacher_logits, "teacher_logits")
            return torch.zeros((), device=teacher_logits.device, dtype=torch.float32)
        return (normalized_entropy(teacher_logits.detach()) > float(threshold)).float().mean()


# --------------------------------------------------------------------------- divergence terms


def kd_term(
    student_logits: Tensor, target_logits: Tensor, temperature: float, weights: Optional[Tensor] = None
) -> Tensor:
    """T^2 * mean_x[ w(x) * KL(softmax(z_target/T) || softmax(z_s/T)) ].

    KL is summed over classes and averaged over the batch (PyTorch's `batchmean`), and T^2 keeps
    the gradient scale independent of T (Hinton et al. 2015). The target is detached here, so
    neither the teacher nor a peer student receives gradient from this term.
    """
    if temperature <= 0:
        raise ValueError(f"loss.temperature must be > 0, got {temperature}: set a positive temperature")
    _check_logits(student_logits, "student_logits")
    if target_logits.shape != student_logits.shape:
        raise ValueError(
            f"target logits {tuple(target_logits.shape)} must match student logits {tuple(student_logits.shape)}"
        )
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_t = F.log_softmax(target_logits.detach().float() / t, dim=1)
    per_sample = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(dim=1)
    if weights is not None:
        per_sample = per_sample * weights.detach().to(per_sample)
    return t * t * per_sample.mean()


def _zero(like: Tensor) -> Tensor:
    return torch.zeros((), device=like.device, dtype=torch.float32)


def student_loss(
    student_logits: Tensor,
    labels: Tensor,
    teacher_logits: Optional[Tensor] = None,
    peer_logits: Optional[Tensor] = None,
    *,
    temperature: float,
    alpha: float,
    beta: float,
    weighting: str,
    threshold: Optional[float] = None,
    peer_weighting: str = "uniform",
    teacher_weights: Optional[Tensor] = None,
    label_smoothing: float = 0.0,
) -> dict[str, Tensor]:
    """One student's loss parts: {"ce", "kd", "peer", "total"} (scalars).

    total = (1 - alpha) * ce + alpha * kd + beta * peer. A switched-off term (alpha == 0, beta == 0)
    is a zero tensor and its logits are not needed. `teacher_weights` are precomputed w(x) (as from
    `teacher_certainty`), so two students share one computation; `label_smoothing` applies to ce.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"loss.weighting must be one of {WEIGHTINGS}, got {weighting!r}: pick one of those")
    if peer_weighting not in PEER_WEIGHTINGS:
        raise ValueError(
            f"loss.peer_weighting must be one of {PEER_WEIGHTINGS}, got {peer_weighting!r}: pick one of those"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"loss.alpha must be in [0, 1], got {alpha}: it splits weight between CE and the teacher")
    if beta < 0:
        raise ValueError(f"loss.beta must be >= 0, got {beta}: set a non-negative peer weight")
    if alpha > 0 and teacher_logits is None:
        raise ValueError(f"loss.alpha = {alpha} needs teacher logits: pass teacher_logits or set alpha to 0")
    if beta > 0 and peer_logits is None:
        raise ValueError(f"loss.beta = {beta} needs peer logits: pass peer_logits or set beta to 0")
    use_kd = alpha > 0
    use_peer = beta > 0
    inverse = use_peer and peer_weighting == "inverse"
    if inverse and teacher_logits is None and teacher_weights is None:
        raise ValueError("loss.peer_weighting 'inverse' needs teacher logits: pass teacher_logits or use 'uniform'")

    w = teacher_weights
    if w is None and (use_kd or inverse):
        w = teacher_certainty(teacher_logits, weighting, threshold)
    if w is not None:
        w = w.detach()

    ce = F.cross_entropy(student_logits.float(), labels, label_smoothing=label_smoothing)
    kd = kd_term(student_logits, teacher_logits, temperature, w) if use_kd else _zero(student_logits)
    if use_peer:
        v = (1.0 - w) if inverse else None
        peer = kd_term(student_logits, peer_logits, temperature, v)
    else:
        peer = _zero(student_logits)
    total = (1.0 - alpha) * ce + alpha * kd + beta * peer
    return {"ce": ce, "kd": kd, "peer": peer, "total": total}


def dual_student_loss(
    logits_a: Tensor,
    logits_b: Tensor,
    labels: Tensor,
    teacher_logits: Optional[Tensor],
    *,
    names: Sequence[str] = ("a", "b"),
    **settings: Any,
) -> dict[str, Tensor]:
    """Both students' parts as "{name}/ce|kd|peer|total", plus "total" (sum of the two), and
    "teacher_weight" (batch mean of w) and "gated" (share of samples the threshold removed).

    Each student's peer is the other, detached, so each network only moves itself (as in DML).
    """
    if len(names) != 2 or names[0] == names[1]:
        raise ValueError(
            f"names must be two distinct student names, got {tuple(names)}: e.g. ('resnet18', 'mobilenet_v2')"
        )
    return students_loss([logits_a, logits_b], labels, teacher_logits, names=names, **settings)


def students_loss(
    logits: Sequence[Tensor],
    labels: Tensor,
    teacher_logits: Optional[Tensor],
    *,
    names: Sequence[str],
    **settings: Any,
) -> dict[str, Tensor]:
    """The loss of one or two students trained together (the peer of each is the other one).

    w is computed once and shared. With no teacher (dml, ce without one), teacher_weight and
    gated are 0; gated is 0 too when the weighting does not gate (`none`, `entropy`).
    """
    if len(logits) not in (1, 2) or len(names) != len(logits):
        raise ValueError(f"one or two students with one name each, got {len(logits)} logits and names {names}")
    weighting = settings.get("weighting")
    threshold = settings.get("threshold")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"loss.weighting must be one of {WEIGHTINGS}, got {weighting!r}: pick one of those")

    if teacher_logits is not None:
        w = teacher_certainty(teacher_logits, weighting, threshold)
        teacher_weight = w.mean()
        gated = gated_fraction(teacher_logits, threshold if weighting in GATED_WEIGHTINGS else None)
    else:
        w = None
        teacher_weight = _zero(logits[0])
        gated = _zero(logits[0])

    out: dict[str, Tensor] = {}
    total = None
    for i, (name, own) in enumerate(zip(names, logits)):
        peer = logits[1 - i].detach() if len(logits) == 2 else None
        parts = student_loss(own, labels, teacher_logits, peer, teacher_weights=w, **settings)
        for key, value in parts.items():
            out[f"{name}/{key}"] = value
        total = parts["total"] if total is None else total + parts["total"]
    out["total"] = total
    out["teacher_weight"] = teacher_weight
    out["gated"] = gated
    return out


def peer_warmup_factor(epochs_done: float, warmup_epochs: float) -> float:
    """The share of beta in force after `epochs_done` (fractional) epochs: a linear ramp from 0 to 1.

    Early on both students are near uniform, and the T^2-scaled peer term can pull them to agree with
    each other faster than the labels teach them; the ramp lets CE and the teacher lead first.
    """
    return 1.0 if warmup_epochs <= 0 else min(1.0, epochs_done / warmup_epochs)
