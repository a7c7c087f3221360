"""A training step whose loss or gradient is not finite: the report that names the step, the batch's examples and
the objective's diagnostics, and the error that stops the run with it."""

from __future__ import annotations

import torch


class NonFiniteError(FloatingPointError):
    """A training step produced a non-finite loss or gradient."""


def nonfinite_report(
    step: int, example_ids: list[int], loss: torch.Tensor, grad_norm: torch.Tensor, diagnostics: dict[str, list[torch.Tensor]]
) -> str:
    means = {name: torch.cat(values).mean().item() for name, values in diagnostics.items()}
    return (
        f"non-finite {'loss' if not torch.isfinite(loss) else 'gradient'} at step {step}: "
        f"loss={loss.item()}, grad_norm={grad_norm.item()}, example ids {example_ids}, diagnostics {means}"
    )
