"""Standard supervised fine-tuning, optionally on quality-scored data."""

from __future__ import annotations

import torch

from sft_research.objectives.base import Objective, ObjectiveInputs, ObjectiveOutput


def sft_loss(
    logps: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor | None = None,
    num_tokens: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Mean negative log-likelihood of the completion tokens.

    ``L = -sum_{i,t} w_i * mask_it * logps_it / N``, with N the number of completion tokens. With ``weights`` (``[B]``)
    each example's tokens are scaled by its weight: SFT on quality-scored data, ``E[Q(tau) log p(tau)]`` in
    Qin & Springenberg (2025), arXiv 2507.12856, Sec. 3.

    Args:
        logps: ``[B, T]`` label-token log-probs (position t scores token t+1).
        mask: ``[B, T]`` bool, true on completion tokens.
        weights: optional ``[B]`` per-example weights.
        num_tokens: N; defaults to ``mask.sum()``. Pass the count of the whole optimizer batch when the batch is
            split into micro-batches, so that the sum of micro-batch gradients equals the full-batch gradient.
    """
    token_nll = -(logps * mask).sum(dim=-1)
    if weights is not None:
        token_nll = token_nll * weights
    if num_tokens is None:
        num_tokens = mask.sum()
    return token_nll.sum() / num_tokens


class SFT(Objective):
    """Standard SFT: token-mean NLL of the completion.

    Args:
        use_quality: weight each example by its ``quality`` score (SFT(Q)).
    """

    def __init__(self, use_quality: bool = False):
        self.use_quality = use_quality

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        logps, mask = inputs.logps[:, 0], inputs.mask[:, 0]
        weights = inputs.quality if self.use_quality else None
        loss = sft_loss(logps, mask, weights, inputs.num_tokens)
        with torch.no_grad():
            nll = -(logps * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        diagnostics = {"nll": nll}
        if weights is not None:
            diagnostics["quality"] = weights
        return ObjectiveOutput(loss, diagnostics)
