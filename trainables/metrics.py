"""Evaluation maths: top-k accuracy and expected calibration error, as pure functions."""

from __future__ import annotations

import torch


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Bool[B]: whether the label is among the k highest logits (k is capped at the class count)."""
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)


def calibration_bins(confidence: torch.Tensor, correct: torch.Tensor, bins: int = 15) -> dict[str, torch.Tensor]:
    """Per equal-width confidence bin: count, summed confidence, summed correctness (for ECE and reliability)."""
    idx = (confidence.clamp(0, 1) * bins).long().clamp(max=bins - 1)
    count = torch.bincount(idx, minlength=bins).float()
    conf_sum = torch.bincount(idx, weights=confidence.float(), minlength=bins)
    acc_sum = torch.bincount(idx, weights=correct.float(), minlength=bins)
    return {"count": count, "confidence": conf_sum, "correct": acc_sum}


def expected_calibration_error(confidence: torch.Tensor, correct: torch.Tensor, bins: int = 15) -> float:
    """ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)| over equal-width confidence bins."""
    b = calibration_bins(confidence, correct, bins)
    total = b["count"].sum().clamp(min=1)
    return float((b["correct"] - b["confidence"]).abs().sum() / total)
