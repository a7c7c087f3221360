"""Knowledge distillation from a teacher's next-token distribution: forward KL, reverse KL, or the generalized
Jensen-Shannon divergence between them.

Agarwal et al. (2024), "On-Policy Distillation of Language Models: Learning from Self-Generated Mistakes" (GKD),
arXiv 2306.13649, Eq. 1, on the training data (GKD's supervised setting, λ = 0); TRL's ``generalized_jsd_loss``
(``trl.experimental.gkd``) computes the same divergence from full logits.
"""

from __future__ import annotations

import math

import torch

from sft_research.frozen.distributions import FullDistribution, TopKDistribution
from sft_research.model.output_layer import PositionOutput, TokenLogprobs
from sft_research.objectives.base import Normalization, Objective, ObjectiveInputs, ObjectiveOutput


def generalized_jsd(student: torch.Tensor, teacher: torch.Tensor, beta: float) -> torch.Tensor:
    """Per position, the generalized JSD of two ``[..., V]`` log-prob distributions (GKD Eq. 1)::

        beta = 0:   KL(teacher || student)                                   (forward KL, supervised KD)
        beta = 1:   KL(student || teacher)                                   (reverse KL)
        otherwise:  beta KL(teacher || m) + (1 - beta) KL(student || m),   m = beta teacher + (1 - beta) student

    Returns ``[...]``.
    """
    if beta == 0:
        return (teacher.exp() * (teacher - student)).sum(-1)
    if beta == 1:
        return (student.exp() * (student - teacher)).sum(-1)
    mixture = torch.logsumexp(torch.stack([student + math.log1p(-beta), teacher + math.log(beta)]), dim=0)
    return beta * (teacher.exp() * (teacher - mixture)).sum(-1) + (1 - beta) * (student.exp() * (student - mixture)).sum(-1)


def with_rest(top_k: torch.Tensor) -> torch.Tensor:
    """``[..., K]`` log-probs of a distribution's top k tokens, with a last bucket for the rest of its mass."""
    rest = torch.log1p(-top_k.exp().sum(-1).clamp(max=1 - 1e-6))
    return torch.cat([top_k, rest[..., None]], dim=-1)


class TeacherDivergence(PositionOutput):
    """The divergence of the policy's next-token distribution from a frozen model's whole distribution, per position,
    computed chunk by chunk inside the policy's output layer (the teacher's logits are recomputed from its final hidden
    states there, so neither model's ``[tokens, vocab]`` logits exist whole)."""

    def __init__(self, name: str, teacher: FullDistribution, beta: float, temperature: float = 1.0):
        self.name, self.teacher, self.beta, self.temperature = name, teacher, beta, temperature
        self.reads = (f"{teacher.name}.hidden",)

    def __call__(self, logprobs, labels, frozen):
        teacher = self.teacher.logprobs(frozen[self.reads[0]])
        if self.temperature != 1:  # log_softmax(logprobs / T) is log_softmax(logits / T): the shift cancels
            logprobs, teacher = torch.log_softmax(logprobs / self.temperature, -1), torch.log_softmax(teacher / self.temperature, -1)
        return generalized_jsd(logprobs, teacher, self.beta)


class Distillation(Objective):
    """Distillation on the completion tokens: the generalized JSD (GKD) between the policy's next-token distribution
    and a teacher's, averaged over completion tokens.

    Args:
        teacher: the teacher model, with the policy's tokenizer (another one is refused); None: the run's reference.
        beta: 0 is the forward KL(teacher || policy), 1 the reverse KL(policy || teacher), in between GKD's JSD.
        temperature: both distributions at this temperature (the whole-distribution form only).
        top_k: None compares the whole distributions, the teacher running on every batch; k compares the teacher's k
            most likely tokens and one bucket for the rest of each distribution's mass, the teacher's top k computed
            once and cached. That is a lower bound of the whole distributions' divergence, for every ``beta``
            (merging tokens into one never raises an f-divergence: the data-processing inequality), equal only
            where the policy's tail is the teacher's scaled; e.g. 0.327 against 0.537 at beta 0.5, k 5 and 50 tokens
            (random logits of scale 2, ``tests/objectives/test_distillation.py``). It is not GKD's loss: TRL's
            ``generalized_jsd_loss`` has no top-k form.
        normalize: ``tokens`` or ``sequences`` (:func:`~sft_research.objectives.base.reduce_losses`).
    """

    logs_nll = True
    spread_diagnostics = ("distill/divergence",)

    def __init__(
        self,
        teacher: str | None = None,
        beta: float = 0.5,
        temperature: float = 1.0,
        top_k: int | None = None,
        normalize: Normalization = "tokens",
    ):
        if not 0 <= beta <= 1:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        if top_k is not None and temperature != 1:
            raise ValueError("a temperature needs the teacher's whole distribution (top_k: null)")
        self.beta, self.top_k, self.normalize = beta, top_k, normalize
        if top_k is None:
            teacher_input = FullDistribution("teacher", teacher)
            self.position_outputs = (TeacherDivergence("distill/divergence", teacher_input, beta, temperature),)
        else:
            teacher_input = TopKDistribution("teacher", teacher, k=top_k)
            self.position_outputs = (TokenLogprobs("distill/policy_top_k", ids="teacher.ids"),)
        self.frozen_inputs = (teacher_input,)

    def divergence(self, inputs: ObjectiveInputs) -> torch.Tensor:
        """``[B, T]`` divergence at every label position of the first sequence."""
        if self.top_k is None:
            return inputs.outputs["distill/divergence"][:, 0]
        policy = with_rest(inputs.outputs["distill/policy_top_k"][:, 0])
        teacher = with_rest(inputs.frozen["teacher"]["logps"][:, 0])
        return generalized_jsd(policy, teacher, self.beta)

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        mask = inputs.mask[:, 0]
        divergence = self.divergence(inputs) * mask
        diagnostics = {"distill/divergence": divergence.detach().sum(-1) / mask.sum(-1).clamp(min=1)}
        return ObjectiveOutput(divergence, self.normalize, diagnostics)
