"""Stops a run whose loss stopped being finite, with one line that says where and what to change.

A NaN loss otherwise trains on silently and ends far from its cause (in the calibration metrics of
NaN confidences). Checking each step's loss on the host would synchronise the GPU at every step, so
the guard notes on the device the first step at which each loss term went NaN or inf, and looks at
that note on the host only every `every` steps and at the end of an epoch. No Ray or MLflow here.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from trainables.failures import RunFailed

# The order in which a step's non-finite terms are named: the parts before their sum.
TERM_ORDER = ("ce", "kd", "peer", "total")


class LossDiverged(RunFailed):
    """The loss (or a student's outputs) became NaN or inf."""


def divergence_hint(lr: float, loss_settings: Mapping[str, Any]) -> str:
    """What to try, naming only the settings that act in this run."""
    options = [f"students.lr (now {lr:g})"]
    if loss_settings.get("beta", 0) > 0:
        options.append(f"loss.beta (now {loss_settings['beta']:g})")
    if loss_settings.get("alpha", 0) > 0 or loss_settings.get("beta", 0) > 0:
        options.append(f"loss.temperature (now {loss_settings['temperature']:g})")
    listed = options[0] if len(options) == 1 else ", ".join(options[:-1]) + " or " + options[-1]
    return f"try a lower {listed}"


def loss_terms(parts: Mapping[str, Tensor]) -> list[str]:
    """The per-student loss terms of `students_loss`'s output (`resnet18/kd`, ...), in naming order."""
    keys = [k for k in parts if "/" in k and k.split("/", 1)[1] in TERM_ORDER]
    return sorted(keys, key=lambda k: TERM_ORDER.index(k.split("/", 1)[1]))


class FiniteGuard:
    """Watches one epoch's loss terms; `check` raises `LossDiverged` naming the first bad step and term."""

    def __init__(self, epoch: int, steps: int, every: int, hint: str):
        self.epoch, self.steps, self.every, self.hint = epoch, steps, max(1, every), hint
        self.terms: Optional[list[str]] = None
        self.first: Optional[Tensor] = None  # per term: the first step it was not finite, else -1
        self.value: Optional[Tensor] = None  # per term: its value at that step

    def update(self, step: int, parts: Mapping[str, Tensor]) -> None:
        """Note step `step` (1-based) on the device; checks on the host when a check is due."""
        if self.terms is None:
            self.terms = loss_terms(parts)
        values = torch.stack([parts[k].detach().float() for k in self.terms])
        if self.first is None:
            self.first = torch.full_like(values, -1.0)
            self.value = torch.zeros_like(values)
        newly = ~torch.isfinite(values) & (self.first < 0)
        self.first = torch.where(newly, float(step), self.first)
        self.value = torch.where(newly, values, self.value)
        if step % self.every == 0 or step == self.steps:
            self.check()

    def check(self) -> None:
        """One host synchronisation: raise when any term has not been finite."""
        if self.first is None:
            return
        first = self.first.tolist()
        bad = [i for i, s in enumerate(first) if s >= 0]
        if not bad:
            return
        step = int(min(first[i] for i in bad))
        at_step = [i for i in bad if first[i] == step]
        values = self.value.tolist()
        raise LossDiverged(
            divergence_message(self.epoch, step, self.steps, {self.terms[i]: values[i] for i in at_step}, self.hint)
        )


def _describe(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def divergence_message(epoch: int, step: int, steps: int, bad: Mapping[str, float], hint: str) -> str:
    """`loss diverged in epoch 1, step 3 of 7: resnet18's kd loss is nan (also ...); try ...`."""
    first, *others = bad
    student, term = first.split("/", 1)
    also = f" (also {', '.join(others)})" if others else ""
    return (
        f"loss diverged in epoch {epoch}, step {step} of {steps}: {student}'s {term} loss is "
        f"{_describe(bad[first])}{also}; {hint}"
    )
