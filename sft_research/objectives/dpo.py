"""Direct Preference Optimization and the loss variants TRL users know (sigmoid, hinge, IPO).

Rafailov et al. (2023), "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
arXiv 2305.18290, Eq. 7; hinge as in SLiC (Zhao et al. 2023); IPO as in Azar et al. (2023), Eq. 17, with TRL's
per-token normalisation of the log-ratios.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from sft_research.frozen.inputs import ReferenceLogprobs
from sft_research.objectives.base import Objective, ObjectiveInputs, ObjectiveOutput

DPOLossType = Literal["sigmoid", "hinge", "ipo"]


def dpo_losses(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
    loss_type: DPOLossType = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO-family ``[B]`` per-example losses of ``[B]`` completion log-probs (summed over completion tokens); the loss
    is their batch mean (``examples`` in :func:`~sft_research.objectives.base.reduce_losses`).

    With ``h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)``:

    * ``sigmoid``: ``-(1 - eps) log sigma(beta h) - eps log sigma(-beta h)``, eps = ``label_smoothing``
      (conservative DPO; eps = 0 is the paper's Eq. 7);
    * ``hinge``: ``relu(1 - beta h)``;
    * ``ipo``: ``(h_bar - 1 / (2 beta))^2``, where ``h_bar`` divides each log-ratio by its completion length
      (``chosen_lengths``/``rejected_lengths``, then required).

    Returns:
        The ``[B]`` losses and the detached implicit rewards ``beta (policy - ref)`` of the chosen and rejected
        completions.
    """
    chosen_ratio, rejected_ratio = policy_chosen - ref_chosen.detach(), policy_rejected - ref_rejected.detach()
    if loss_type == "sigmoid":
        h = chosen_ratio - rejected_ratio
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * (chosen_ratio - rejected_ratio))
    elif loss_type == "ipo":
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("loss_type='ipo' needs chosen_lengths and rejected_lengths")
        h_bar = chosen_ratio / chosen_lengths - rejected_ratio / rejected_lengths
        losses = (h_bar - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected sigmoid, hinge or ipo")
    return losses, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach()


def preference_diagnostics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> dict[str, torch.Tensor]:
    """TRL's metric names for the implicit rewards."""
    return {
        "rewards/chosen": chosen_rewards,
        "rewards/rejected": rejected_rewards,
        "rewards/margins": chosen_rewards - rejected_rewards,
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
    }


class DPO(Objective):
    """DPO on preference pairs against a frozen reference (the model at the start of this run unless configured).

    Args:
        beta: the KL strength (paper: 0.1).
        loss_type: ``sigmoid``, ``hinge`` or ``ipo``.
        label_smoothing: eps of conservative DPO (``sigmoid`` only).
    """

    frozen_inputs = (ReferenceLogprobs(),)
    sequences_per_example = 2

    def __init__(self, beta: float = 0.1, loss_type: DPOLossType = "sigmoid", label_smoothing: float = 0.0):
        self.beta, self.loss_type, self.label_smoothing = beta, loss_type, label_smoothing

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        policy = (inputs.logps * inputs.mask).sum(-1)
        ref = (inputs.ref_logps * inputs.mask).sum(-1)
        lengths = inputs.mask.sum(-1)
        losses, chosen, rejected = dpo_losses(
            policy[:, 0],
            policy[:, 1],
            ref[:, 0],
            ref[:, 1],
            self.beta,
            self.loss_type,
            self.label_smoothing,
            lengths[:, 0],
            lengths[:, 1],
        )
        # TRL's logps/chosen and logps/rejected: the policy's summed completion log-probs.
        logps = {"logps/chosen": policy[:, 0].detach(), "logps/rejected": policy[:, 1].detach()}
        return ObjectiveOutput(losses, "examples", preference_diagnostics(chosen, rejected) | logps)
