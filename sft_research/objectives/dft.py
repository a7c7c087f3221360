"""Dynamic Fine-Tuning (DFT): SFT with each token's loss scaled by the token's own probability.

Wu et al. (2025), "On the Generalization of SFT: A Reinforcement Learning Perspective with Reward Rectification",
arXiv 2508.05629, Sec. 3; official code ``yongliang-wu/DFT``, ``verl/verl/trainer/fsdp_dft_trainer.py``.
"""

from __future__ import annotations

import torch

from sft_research.objectives.base import Normalization, Objective, ObjectiveInputs, ObjectiveOutput


def dft_token_losses(logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The token-level DFT objective ``L_DFT = E_{(x, y*)}[ -sum_t sg(pi(y*_t | y*_<t, x)) log pi(y*_t | y*_<t, x) ]``,
    per token: ``loss_it = -mask_it * sg(exp(logps_it)) * logps_it`` (``[B, T]``); reduced over the batch's completion
    tokens (:func:`~sft_research.objectives.base.reduce_losses`), ``-sum_{i,t} mask_it * sg(exp(logps_it)) * logps_it / N``.

    The SFT gradient ``-grad log p`` is an on-policy policy gradient with the implicit reward ``1 / p``; weighting by
    the detached ``p`` cancels it, so each token's gradient becomes ``-grad p``: bounded, and small on tokens the
    model finds unlikely.

    Args:
        logps: ``[B, T]`` label-token log-probs (position t scores token t+1).
        mask: ``[B, T]`` bool, true on completion tokens.
    """
    weights = logps.detach().exp()
    return -(weights * logps * mask)


class DFT(Objective):
    """DFT: the token-mean NLL of the completion, each token weighted by its detached probability. The method has no
    hyperparameters.

    Args:
        normalize: ``tokens`` (every token of the batch counts the same) or ``sequences`` (every sequence does).
    """

    logs_nll = True
    spread_diagnostics = ("dft/token_prob",)

    def __init__(self, normalize: Normalization = "tokens"):
        self.normalize = normalize

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        logps, mask = inputs.logps[:, 0], inputs.mask[:, 0]
        with torch.no_grad():
            token_prob = (logps.exp() * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        return ObjectiveOutput(dft_token_losses(logps, mask), self.normalize, {"dft/token_prob": token_prob})
