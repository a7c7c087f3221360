"""Preference-oriented SFT (PoFT): prefer the model being trained over frozen baseline ("aligned") models.

Fan et al. (2025), "PoFT: Preference-Oriented Supervised Fine-Tuning", AAAI 2025, arXiv 2412.12865, Sec. 3.2;
official code ``Savannah120/alignment-handbook-PoFT``, ``scripts/run_poft.py`` (``PoFTTrainer.compute_loss``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sft_research.frozen.inputs import BaselineScores
from sft_research.objectives.base import Objective, ObjectiveInputs, ObjectiveOutput


def poft_losses(
    logps: torch.Tensor, mask: torch.Tensor, baseline_score: torch.Tensor, beta: float = 1.0, gamma: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Bradley-Terry loss that the target model beats the baselines on the same SFT pair (x, y), per example::

        r_theta_i = mean_{t in mask_i} logps_it                  (length-normalised log-likelihood of y)
        loss_i = -log sigmoid(beta * (r_theta_i - baseline_score_i) + gamma)

    ``baseline_score`` is ``r_bar = (1/M) sum_j r_j``, the baseline models' mean length-normalised log-likelihood of
    the same response. The paper has beta = 1 and gamma = 0; the official code hard-codes the same. The loss is their
    batch mean (``examples`` in :func:`~sft_research.objectives.base.reduce_losses`).

    Returns:
        The ``[B]`` losses and the detached effective weight ``sigmoid(baseline_score - r_theta)``: the factor PoFT
        puts on each example's SFT gradient.
    """
    r_theta = (logps * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    baseline_score = baseline_score.detach()
    losses = F.softplus(-(beta * (r_theta - baseline_score) + gamma))
    return losses, torch.sigmoid(baseline_score - r_theta).detach()


class PoFT(Objective):
    """PoFT against precomputed baseline scores.

    Args:
        baselines: the frozen baseline models (hub ids or folders), each scored with its own tokenizer and chat template
            on the response tokens; at least one of them must not be the model being fine-tuned (against its own start
            alone, PoFT's weight is 0.5 for every example, then falls fastest on the examples the model fits best).
        beta: scale of the reward difference (paper and code: 1).
        gamma: margin (paper and code: 0).
        baseline_chat_templates: chat templates (Jinja, or files) for some baselines, by name, in place of their own
            (see :class:`~sft_research.frozen.inputs.BaselineScores`).
    """

    spread_diagnostics = ("poft/effective_weight",)

    def __init__(self, baselines: list[str], beta: float = 1.0, gamma: float = 0.0, baseline_chat_templates: dict[str, str] | None = None):
        if not baselines:
            raise ValueError("PoFT needs at least one baseline model that is not the model being fine-tuned (see papers/poft.md)")
        self.baselines = list(baselines)
        self.frozen_inputs = (BaselineScores(self.baselines, baseline_chat_templates),)
        self.beta, self.gamma = beta, gamma

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        logps, mask = inputs.logps[:, 0], inputs.mask[:, 0]
        losses, weight = poft_losses(logps, mask, inputs.baseline_score, self.beta, self.gamma)
        r_theta = ((logps * mask).sum(-1) / mask.sum(-1).clamp(min=1)).detach()
        diagnostics = {
            "poft/effective_weight": weight,
            "poft/reward": r_theta,
            "poft/baseline_score": inputs.baseline_score,
            "nll": -r_theta,
        }
        return ObjectiveOutput(losses, "examples", diagnostics)
