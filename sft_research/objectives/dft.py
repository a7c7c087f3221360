"""Dynamic Fine-Tuning (DFT): SFT with each token's loss scaled by the token's own probability.

Wu et al. (2025), "On the Generalization of SFT: A Reinforcement Learning Perspective with Reward Rectification",
arXiv 2508.05629, Sec. 3; official code ``yongliang-wu/DFT``, ``verl/verl/trainer/fsdp_dft_trainer.py``.
"""

from __future__ import annotations

import torch

from sft_research.objectives.base import Objective, ObjectiveInputs, ObjectiveOutput


def dft_loss(logps: torch.Tensor, mask: torch.Tensor, num_tokens: torch.Tensor | float | None = None) -> torch.Tensor:
    """The token-level DFT objective ``L_DFT = E_{(x, y*)}[ -sum_t sg(pi(y*_t | y*_<t, x)) log pi(y*_t | y*_<t, x) ]``::

        loss = -sum_{i,t} mask_it * sg(exp(logps_it)) * logps_it / N

    The SFT gradient ``-grad log p`` is an on-policy policy gradient with the implicit reward ``1 / p``; weighting by
    the detached ``p`` cancels it, so each token's gradient becomes ``-grad p``: bounded, and small on tokens the
    model finds unlikely.

    Args:
        logps: ``[B, T]`` label-token log-probs (position t scores token t+1).
        mask: ``[B, T]`` bool, true on completion tokens.
        num_tokens: N; defaults to ``mask.sum()``. Pass the count of the whole optimizer batch when the batch is split
            into micro-batches, so that the sum of micro-batch gradients equals the full-batch gradient.
    """
    weights = logps.detach().exp()
    if num_tokens is None:
        num_tokens = mask.sum()
    return -(weights * logps * mask).sum() / num_tokens


class DFT(Objective):
    """DFT: the token-mean NLL of the completion, each token weighted by its detached probability. No arguments: the
    method has no hyperparameters."""

    spread_diagnostics = ("dft/token_prob",)

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        logps, mask = inputs.logps[:, 0], inputs.mask[:, 0]
        loss = dft_loss(logps, mask, inputs.num_tokens)
        with torch.no_grad():
            tokens = mask.sum(-1).clamp(min=1)
            nll = -(logps * mask).sum(-1) / tokens
            token_prob = (logps.exp() * mask).sum(-1) / tokens
        return ObjectiveOutput(loss, {"nll": nll, "dft/token_prob": token_prob})
