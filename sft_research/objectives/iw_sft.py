"""Importance-weighted SFT (iw-SFT), and its quality-scored form iw-SFT(Q).

Qin & Springenberg (2025), "Supervised Fine Tuning on Curated Data is Reinforcement Learning (and can be improved)",
arXiv 2507.12856; official LLM code ``emmyqin/iw_sft``, ``bounding_trainers.py`` (``IwSFTLoss``).
"""

from __future__ import annotations

import torch

from sft_research.frozen.inputs import ReferenceLogprobs
from sft_research.objectives.base import Normalization, Objective, ObjectiveInputs, ObjectiveOutput


def iw_sft_token_losses(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
    max_weight: float = 16.0,
    token_level: bool = False,
    token_clip: float = 0.8,
    quality: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The iw-SFT loss ``J = E_{tau in D+}[ sg(q(tau)/pi_ref(tau)) log p(tau; theta) ]`` with q the current policy, per
    token.

    Sequence level (the paper's LLM setting, official code ``sum_over_time=True``)::

        w_i = clip(exp(temperature * mean_{t in mask_i}(logps - ref_logps)), 0, max_weight)     (no gradient)
        loss_it = Q_i * w_i * mask_it * (-logps_it)

    Token level (``sum_over_time=False``): ``w_it = clip(exp(logps_it - ref_logps_it), 1 - token_clip, 1 + token_clip)``,
    multiplied per token. Q is the optional per-example quality (iw-SFT(Q)). Unlike the official code, whose
    ``[B, T, 1] *= [B, 1]`` broadcast is only right at batch size 1, the weights are applied per example for any
    batch size. The official run reduces them per sequence (``sequences`` in
    :func:`~sft_research.objectives.base.reduce_losses`): one sequence per GPU, whose per-device token-means are
    averaged over GPUs.

    Args:
        logps, ref_logps: ``[B, T]`` label-token log-probs under the policy and the frozen reference.
        mask: ``[B, T]`` bool, true on completion tokens.

    Returns:
        The ``[B, T]`` per-token losses and the detached weights (``[B]``, or ``[B, T]`` at token level).
    """
    with torch.no_grad():
        log_ratio = (logps - ref_logps) * mask
        if token_level:
            weights = torch.exp(log_ratio).clamp(1 - token_clip, 1 + token_clip) * mask
        else:
            mean_log_ratio = log_ratio.sum(-1) / mask.sum(-1).clamp(min=1)
            weights = torch.exp(temperature * mean_log_ratio).clamp(0, max_weight)
    token_nll = -logps * mask
    weighted = token_nll * weights if token_level else token_nll * weights[:, None]
    if quality is not None:
        weighted = weighted * quality[:, None]
    return weighted, weights


class IwSFT(Objective):
    """iw-SFT against a frozen reference (the initial model unless the module is given another).

    Args:
        temperature: scales the mean log-ratio before the exponential (official LLM run: 1.0).
        max_weight: upper clip of the sequence weight (official: 16).
        token_level: per-token ratios clipped to ``[1 - token_clip, 1 + token_clip]`` instead of sequence weights.
        token_clip: the token-level clip (official: 0.8).
        use_quality: multiply each example's terms by its quality score: iw-SFT(Q).
        normalize: ``tokens`` (every token of the batch counts the same) or ``sequences`` (every sequence does, as
            in the official run: one sequence per GPU, averaged over GPUs).
    """

    frozen_inputs = (ReferenceLogprobs(),)
    logs_nll = True
    spread_diagnostics = ("iw/weight",)

    def __init__(
        self,
        temperature: float = 1.0,
        max_weight: float = 16.0,
        token_level: bool = False,
        token_clip: float = 0.8,
        use_quality: bool = False,
        normalize: Normalization = "tokens",
    ):
        self.temperature, self.max_weight, self.normalize = temperature, max_weight, normalize
        self.token_level, self.token_clip, self.use_quality = token_level, token_clip, use_quality

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        logps, ref_logps, mask = inputs.logps[:, 0], inputs.ref_logps[:, 0], inputs.mask[:, 0]
        quality = inputs.quality if self.use_quality else None
        losses, weights = iw_sft_token_losses(
            logps, ref_logps, mask, self.temperature, self.max_weight, self.token_level, self.token_clip, quality
        )
        tokens = mask.sum(-1).clamp(min=1)
        if self.token_level:
            bounds = (weights <= 1 - self.token_clip) | (weights >= 1 + self.token_clip)
            weight, clipped = weights.sum(-1) / tokens, (bounds & mask).sum(-1) / tokens
        else:
            weight, clipped = weights, (weights >= self.max_weight).float()
        return ObjectiveOutput(losses, self.normalize, {"iw/weight": weight, "iw/clipped_fraction": clipped})
