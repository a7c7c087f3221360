"""Frozen inputs over the whole next-token distribution: a frozen model's top-k tokens (cached), or its full
distribution on every batch (for an exact KL or distillation)."""

from __future__ import annotations

import torch

from sft_research.checkpoints.names import load_tokenizer
from sft_research.errors import ConfigError
from sft_research.frozen.context import FrozenContext
from sft_research.frozen.inputs import FrozenInput
from sft_research.frozen.quantities import HiddenStatesQuantity, TopKQuantity
from sft_research.model.loading import ModelConfig


class FrozenModelInput(FrozenInput):
    """A frozen input from one frozen model: ``model`` (a hub id or folder), or the run's reference when None. A model
    other than the policy's start must share its tokenizer: distributions over next tokens are compared token by token."""

    def __init__(self, name: str, model: str | None = None):
        self.name, self.frozen_model = name, model

    def check(self, policy_start: str) -> None:
        if self.frozen_model is None:
            return
        ours, theirs = load_tokenizer(policy_start), load_tokenizer(self.frozen_model)
        if ours.get_vocab() != theirs.get_vocab():
            raise ConfigError(
                f"{type(self).__name__} {self.name!r}: {self.frozen_model} has another tokenizer than the model being trained "
                f"({policy_start}: {len(theirs)} against {len(ours)} tokens, or other ids): its next-token distribution cannot be "
                "compared with the policy's token by token"
            )

    def config(self, context: FrozenContext) -> ModelConfig:
        if self.frozen_model is None:
            return context.reference
        return ModelConfig(self.frozen_model, dtype=context.policy.dtype)


class TopKDistribution(FrozenModelInput):
    """``<name>``: the frozen model's k most likely next tokens at every label position, ``ids`` (int64) and their
    ``logps``, ``[S, L - 1, k]`` each, most likely first; small enough to cache.

    Args:
        name: its key in ``ObjectiveInputs.frozen``.
        model: the frozen model (None: the run's reference).
        k: tokens kept per position.
    """

    def __init__(self, name: str, model: str | None = None, k: int = 20):
        super().__init__(name, model)
        self.k = k

    def compute(self, examples, context: FrozenContext) -> list[dict[str, torch.Tensor]]:
        return context.quantity(self.config(context), examples, TopKQuantity(self.k), context.chat_tokenizer.tokenizer.pad_token_id)


class FullDistribution(FrozenModelInput):
    """``<name>``: the frozen model's final hidden states at every label position (``hidden``, ``[S, L - 1, H]``),
    computed on every batch with the model kept in memory (too large to cache), from which :meth:`logprobs` gives its
    whole next-token distribution chunk by chunk, inside the policy's output layer. A position output reads it as
    ``"<name>.hidden"``.

    Args:
        name: its key in ``ObjectiveInputs.frozen``.
        model: the frozen model (None: the run's reference).
    """

    on_the_fly_only = True

    def __init__(self, name: str, model: str | None = None):
        super().__init__(name, model)
        self.head: tuple[torch.nn.Module, ...] = ()  # a tuple keeps the frozen layer out of any module tree

    def compute(self, examples, context: FrozenContext) -> list[dict[str, torch.Tensor]]:
        model = context.model(self.config(context))
        self.head = (model.get_output_embeddings(),)
        return context.quantity(self.config(context), examples, HiddenStatesQuantity(), context.chat_tokenizer.tokenizer.pad_token_id)

    def logprobs(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[n, V]`` float32 next-token log-probs from ``[n, H]`` final hidden states of the frozen model."""
        return torch.log_softmax((hidden.to(self.head[0].weight.dtype) @ self.head[0].weight.T).float(), dim=-1)
