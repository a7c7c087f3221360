"""Held-out task accuracy: generated answers scored by the task's own verifier."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class TaskAccuracy(Metric):
    """Fraction of held-out answers that the verifier scores as fully right (score 1).

    Verifiers may give partial credit (reasoning-gym's numeric ones do, for answers that merely contain the right
    digits), which would blur an accuracy, so only a full score counts.
    """

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, scores: torch.Tensor) -> None:
        self.total += (scores >= 1.0).sum()
        self.count += scores.numel()

    def compute(self) -> torch.Tensor:
        return self.total / self.count
