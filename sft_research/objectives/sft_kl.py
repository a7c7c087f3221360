"""SFT with a KL penalty to the base model at every completion token, a fix for forgetting: the fine-tuned model is
held near the base model's next-token distribution on the training data, as KL-regularised RL holds its policy near
the reference (the penalty RL's Razor, arXiv 2509.04259, finds predictive of forgetting).

    L = NLL(y | x) + λ · mean_t KL(π_θ(· | x, y_<t) || π_0(· | x, y_<t))      (direction ``reverse``)

with π_0 the frozen reference (the model at the start of the run unless ``model.frozen.reference`` names another);
``forward`` takes KL(π_0 || π_θ) instead.
"""

from __future__ import annotations

from typing import Literal

from sft_research.frozen.distributions import FullDistribution
from sft_research.objectives.base import Normalization, Objective, ObjectiveInputs, ObjectiveOutput
from sft_research.objectives.distillation import TeacherDivergence
from sft_research.objectives.sft import sft_token_losses


class SFTWithKL(Objective):
    """SFT plus ``kl_weight`` times the KL to the base model's whole next-token distribution, per completion token.
    The base model runs on every batch (its distributions are too large to cache).

    Args:
        kl_weight: λ.
        direction: ``reverse``, KL(policy || base), or ``forward``, KL(base || policy).
        normalize: ``tokens`` or ``sequences``, for both terms.
    """

    logs_nll = True
    spread_diagnostics = ("kl/base",)

    def __init__(self, kl_weight: float = 0.1, direction: Literal["reverse", "forward"] = "reverse", normalize: Normalization = "tokens"):
        if kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight}")
        self.kl_weight, self.normalize = kl_weight, normalize
        base = FullDistribution("base")
        self.frozen_inputs = (base,)
        self.position_outputs = (TeacherDivergence("kl/base", base, beta=1.0 if direction == "reverse" else 0.0),)

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        logps, mask = inputs.logps[:, 0], inputs.mask[:, 0]
        kl = inputs.outputs["kl/base"][:, 0] * mask
        # The KL is reduced apart and added with its weight: the NLL term stays SFT's loss, to its last bit.
        diagnostics = {"kl/base": kl.detach().sum(-1) / mask.sum(-1).clamp(min=1)}
        return ObjectiveOutput(sft_token_losses(logps, mask), self.normalize, diagnostics, penalties=((self.kl_weight, kl),))
