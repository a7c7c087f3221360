"""The objective interface: what an objective needs from a batch, and what it gives back.

An objective's math lives in a pure function of tensors (see ``sft.py``); its :class:`Objective` class only
declares what it needs and maps an :class:`ObjectiveInputs` to a loss plus per-example diagnostics. The training
module reads the declarations, prepares the inputs, and never needs to know which objective it runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

import torch

from sft_research.frozen.inputs import FrozenInput
from sft_research.model.output_layer import PositionOutput


@dataclass
class ObjectiveInputs:
    """One micro-batch, as the objective sees it.

    Attributes:
        logps: ``[B, S, T]`` label-token log-probs under the policy (S = 1 for SFT records, 2 for chosen/rejected); 0
            where ``mask`` is false, unless the objective sets :attr:`Objective.reads_outside_mask`.
        mask: ``[B, S, T]`` bool, true on completion tokens.
        quality: ``[B]`` per-example quality scores (1.0 where the data has none).
        num_tokens: completion tokens in the whole optimizer batch, across micro-batches and processes (divided by
            the number of data-parallel processes, which average their gradients), so that token-mean losses do not
            depend on how the batch is split.
        num_examples: examples in the whole optimizer batch, counted the same way.
        frozen: the frozen-model inputs the objective declared in ``frozen_inputs``, by name: ``[B]`` for scalars,
            ``[B, S, T, ...]`` for per-position ones, a dict of those for inputs of several tensors.
        outputs: the policy's own per-position outputs the objective declared in ``position_outputs``, by name,
            ``[B, S, T, ...]``, with gradients (log-probs at other token ids, reductions over the vocabulary).
    """

    logps: torch.Tensor
    mask: torch.Tensor
    quality: torch.Tensor
    num_tokens: torch.Tensor
    num_examples: float
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
    """The loss of one micro-batch and per-example diagnostics (detached ``[B]`` tensors).

    Diagnostics are per example so that the module can gather them over micro-batches and devices exactly; it logs
    their mean, and their min and max for the names listed in ``Objective.spread_diagnostics``.
    """

    loss: torch.Tensor
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)


class Objective(ABC):
    """Base class of every training objective. Subclasses set the class attributes below and implement ``__call__``."""

    frozen_inputs: tuple[FrozenInput, ...] = ()
    """What the objective needs from frozen models (e.g. ``(ReferenceLogprobs(),)``), in ``ObjectiveInputs.frozen``."""
    position_outputs: tuple[PositionOutput, ...] = ()
    """What it needs from the policy's output layer besides the label log-probs, in ``ObjectiveInputs.outputs``: per
    position, computed chunk by chunk inside the output layer with gradients (:mod:`sft_research.model.output_layer`)."""
    sequences_per_example: int = 1
    """1 for SFT-style records, 2 for preference pairs (chosen, rejected)."""
    reads_outside_mask: bool = False
    """Whether it reads ``logps`` or ``outputs`` where ``mask`` is false. If not (no objective here does), the output
    layer runs at the completion positions only, and they are 0 elsewhere: prompts are most of a batch's tokens."""
    spread_diagnostics: tuple[str, ...] = ()

    @abstractmethod
    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput: ...


Normalization = Literal["tokens", "sequences"]


def normalize_token_losses(
    token_losses: torch.Tensor,
    mask: torch.Tensor,
    normalize: Normalization = "tokens",
    num_tokens: torch.Tensor | float | None = None,
    num_examples: float | None = None,
) -> torch.Tensor:
    """A micro-batch's share of the batch loss from ``[B, T]`` per-token losses (zero off the completion).

    * ``tokens``: their sum over the whole batch's completion tokens N (``num_tokens``, default ``mask.sum()``):
      every token counts the same (transformers' ``num_items_in_batch`` on one device, TRL's default);
    * ``sequences``: each sequence's sum over its own length, summed over the batch's examples (``num_examples``,
      default B): every sequence counts the same, however long. This is what one sequence per GPU with a token-mean
      loss averaged over GPUs computes (the official iw-SFT run), where a long trace otherwise weighs by its length.
    """
    if normalize == "sequences":
        per_sequence = token_losses.sum(-1) / mask.sum(-1).clamp(min=1)
        return per_sequence.sum() / (num_examples if num_examples is not None else token_losses.shape[0])
    return token_losses.sum() / (num_tokens if num_tokens is not None else mask.sum())
