"""The objective interface: what an objective needs from a batch, and what it gives back.

An objective's math lives in a pure function of tensors (see ``sft.py``); its :class:`Objective` class only
declares what it needs and maps an :class:`ObjectiveInputs` to unreduced losses, their reduction and per-example
diagnostics. The training module reads the declarations, prepares the inputs, and reduces the losses with the whole
batch's counts (:func:`reduce_losses`), so that no objective normalises itself and none needs to know how the batch
is split over micro-batches and processes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

import torch

from sft_research.frozen.inputs import FrozenInput
from sft_research.model.output_layer import PositionOutput

Normalization = Literal["tokens", "sequences"]
Reduction = Literal["tokens", "sequences", "examples"]


@dataclass
class ObjectiveInputs:
    """One micro-batch, as the objective sees it.

    Attributes:
        logps: ``[B, S, T]`` label-token log-probs under the policy (S = 1 for SFT records, 2 for chosen/rejected); 0
            where ``mask`` is false, unless the objective sets :attr:`Objective.reads_outside_mask`.
        mask: ``[B, S, T]`` bool, true on completion tokens.
        quality: ``[B]`` per-example quality scores (1.0 where the data has none).
        frozen: the frozen-model inputs the objective declared in ``frozen_inputs``, by name: ``[B]`` for scalars,
            ``[B, S, T, ...]`` for per-position ones, a dict of those for inputs of several tensors.
        outputs: the policy's own per-position outputs the objective declared in ``position_outputs``, by name,
            ``[B, S, T, ...]``, with gradients unless the output is a diagnostic (``grad = False``).
    """

    logps: torch.Tensor
    mask: torch.Tensor
    quality: torch.Tensor
    frozen: dict[str, torch.Tensor | dict[str, torch.Tensor]] = field(default_factory=dict)
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def ref_logps(self) -> torch.Tensor:
        """``[B, S, T]`` label-token log-probs under the frozen reference model (:class:`ReferenceLogprobs`)."""
        return self.frozen["ref_logps"]

    @property
    def baseline_score(self) -> torch.Tensor:
        """``[B]`` mean over the baseline models of each one's length-normalised log-likelihood of the response."""
        return self.frozen["baseline_score"]


@dataclass
class ObjectiveOutput:
    """A micro-batch's unreduced losses, how the module reduces them, and per-example diagnostics (detached ``[B]``).

    Attributes:
        losses: ``[B, T]`` per-token losses of the first (an SFT record's only) sequence, zero where its mask is false,
            for the reductions ``tokens`` and ``sequences``; ``[B]`` per-example losses for ``examples``.
        reduction: ``tokens``: their sum over the whole batch's completion tokens (every token counts the same);
            ``sequences``: each sequence's sum over its own length, summed over the batch's examples (every sequence
            counts the same); ``examples``: their sum over the batch's examples. See :func:`reduce_losses`.
        diagnostics: per example, so that the module can gather them over micro-batches and devices exactly; it logs
            their mean, and their min and max for the names listed in ``Objective.spread_diagnostics``.
        penalties: further ``(weight, losses)`` terms of the same shape and reduction, each reduced on its own and
            added with its weight (``reduce(losses) + weight * reduce(penalty)``), e.g. a KL penalty's λ.
    """

    losses: torch.Tensor
    reduction: Reduction
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)
    penalties: tuple[tuple[float, torch.Tensor], ...] = ()


@dataclass
class BatchLoss:
    """What the module makes of an :class:`ObjectiveOutput`: the micro-batch's share of the batch loss, and the
    diagnostics it logs (the objective's, and those the module computes for it, such as ``nll``)."""

    loss: torch.Tensor
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)


class Objective(ABC):
    """Base class of every training objective. Subclasses set the class attributes below and implement ``__call__``."""

    frozen_inputs: tuple[FrozenInput, ...] = ()
    """What the objective needs from frozen models (e.g. ``(ReferenceLogprobs(),)``), in ``ObjectiveInputs.frozen``."""
    position_outputs: tuple[PositionOutput, ...] = ()
    """What it needs from the policy's output layer besides the label log-probs, in ``ObjectiveInputs.outputs``: per
    position, computed chunk by chunk inside the output layer (:mod:`sft_research.model.output_layer`)."""
    sequences_per_example: int = 1
    """1 for SFT-style records, 2 for preference pairs (chosen, rejected)."""
    reads_outside_mask: bool = False
    """Whether it reads ``logps`` or ``outputs`` where ``mask`` is false. If not (no objective here does), the output
    layer runs at the completion positions only, and they are 0 elsewhere: prompts are most of a batch's tokens."""
    logs_nll: bool = False
    """Whether the module logs ``nll``, each example's token-mean NLL of its (first) completion, computed once for
    every objective that trains on SFT records."""
    spread_diagnostics: tuple[str, ...] = ()

    @abstractmethod
    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput: ...


def reduce_losses(
    losses: torch.Tensor,
    reduction: Reduction = "tokens",
    mask: torch.Tensor | None = None,
    num_tokens: torch.Tensor | float | None = None,
    num_examples: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """A micro-batch's share of the batch loss from its unreduced ``losses`` (see :class:`ObjectiveOutput`).

    ``num_tokens`` and ``num_examples`` count the whole optimizer batch, across micro-batches and processes (divided
    by the number of data-parallel processes, which average their gradients), so that the sum of the micro-batches'
    gradients is the batch's, however it is split; they default to this micro-batch's (``mask.sum()``, B). ``mask``
    (the first sequence's, ``[B, T]``) is needed by the per-token reductions only.

    * ``tokens``: transformers' ``num_items_in_batch`` on one device, TRL's default;
    * ``sequences``: what one sequence per GPU with a token-mean loss averaged over GPUs computes (the official
      iw-SFT run), where a long trace otherwise weighs by its length;
    * ``examples``: the batch mean of per-example losses (DPO, PoFT).
    """
    examples = num_examples if num_examples is not None else losses.shape[0]
    if reduction == "examples":
        return losses.sum() / examples
    if mask is None or losses.shape != mask.shape:
        raise ValueError(f"{reduction!r} reduces [B, T] per-token losses with their mask; got losses of shape {tuple(losses.shape)}")
    if reduction == "sequences":
        per_sequence = losses.sum(-1) / mask.sum(-1).clamp(min=1)
        return per_sequence.sum() / examples
    return losses.sum() / (num_tokens if num_tokens is not None else mask.sum())


def completion_nll(logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` each sequence's token-mean NLL over its completion, detached: the ``nll`` diagnostic."""
    with torch.no_grad():
        return -(logps * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def run_objective(
    objective: Objective, inputs: ObjectiveInputs, num_tokens: torch.Tensor | float, num_examples: torch.Tensor | float
) -> BatchLoss:
    """Runs ``objective`` on a micro-batch and reduces its losses with the whole batch's counts: the one place where
    losses are normalised, whichever objective runs."""
    output = objective(inputs)
    mask = inputs.mask[:, 0]
    loss = reduce_losses(output.losses, output.reduction, mask, num_tokens, num_examples)
    for weight, penalty in output.penalties:
        loss = loss + weight * reduce_losses(penalty, output.reduction, mask, num_tokens, num_examples)
    diagnostics = output.diagnostics
    if objective.logs_nll:
        diagnostics = {"nll": completion_nll(inputs.logps[:, 0], mask)} | diagnostics
    return BatchLoss(loss, diagnostics)
