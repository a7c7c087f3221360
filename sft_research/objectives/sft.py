"""Standard supervised fine-tuning, optionally on quality-scored data."""

from __future__ import annotations

import torch

from sft_research.objectives.base import Normalization, Objective, ObjectiveInputs, ObjectiveOutput


def sft_token_losses(logps: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The negative log-likelihood of the completion tokens, per token: ``loss_it = -w_i * mask_it * logps_it``
    (``[B, T]``).

    Reduced over the batch's completion tokens (:func:`~sft_research.objectives.base.reduce_losses`), this is
    ``L = -sum_{i,t} w_i * mask_it * logps_it / N``, N the number of completion tokens (``sequences``: each sequence's
    mean, averaged over sequences). With ``weights`` (``[B]``) each example's tokens are scaled by its weight: SFT on
    quality-scored data, ``E[Q(tau) log p(tau)]`` in Qin & Springenberg (2025), arXiv 2507.12856, Sec. 3.

    Args:
        logps: ``[B, T]`` label-token log-probs (position t scores token t+1).
        mask: ``[B, T]`` bool, true on completion tokens.
        weights: optional ``[B]`` per-example weights.
    """
    token_nll = -(logps * mask)
    if weights is not None:
        token_nll = token_nll * weights[:, None]
    return token_nll


class SFT(Objective):
    """Standard SFT: token-mean NLL of the completion.

    Args:
        use_quality: weight each example by its ``quality`` score (SFT(Q)).
        normalize: ``tokens`` (every token of the batch counts the same) or ``sequences`` (every sequence does).
    """

    logs_nll = True

    def __init__(self, use_quality: bool = False, normalize: Normalization = "tokens"):
        self.use_quality, self.normalize = use_quality, normalize

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        weights = inputs.quality if self.use_quality else None
        diagnostics = {"quality": weights} if weights is not None else {}
        return ObjectiveOutput(sft_token_losses(inputs.logps[:, 0], inputs.mask[:, 0], weights), self.normalize, diagnostics)
