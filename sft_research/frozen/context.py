"""How frozen models run for a fit: their quantities cached on disk, computed once with each process taking its
share of the batches, or computed on every batch with the models kept in memory (``on_the_fly``), and counted either
way."""

from __future__ import annotations

import torch

from sft_research.data.tokenize import ChatTokenizer, TokenizedExample
from sft_research.frozen.cache import Value, compute_quantity, frozen_quantity
from sft_research.frozen.quantities import FrozenQuantity, LabelLogprobsQuantity
from sft_research.frozen.shares import ALONE, Shares
from sft_research.model.loading import ModelConfig, load_model


class FrozenContext:
    """What computing a frozen input may use.

    Args:
        policy: the model being trained, at its start.
        reference: the frozen reference model (the run's ``reference``, by default the policy's start).
        chat_tokenizer: the training data's tokenizer and prompt format.
        device: where frozen models run.
        on_the_fly: run the frozen models on every batch, kept in memory, instead of once before training through
            the on-disk cache (a quantity too large to cache, such as hidden states, always runs on the fly).
        batch_size: sequences per frozen forward pass.
        chunk_size: positions per chunk of a frozen model's output layer.
        shares: the processes that share a cached quantity's computation, each taking its share of the batches
            and gathering the others' (:mod:`~sft_research.frozen.shares`).

    ``sequences`` counts the sequences frozen models scored (computed, or read from the cache, which a run on other
    data would have had to compute); ``on_the_fly_sequences`` those of them scored on this process's batches;
    ``computed_sequences`` those this process ran through a frozen model itself (its share of the cached quantities
    not read from the cache, and its batches' on the fly).
    """

    def __init__(
        self,
        policy: ModelConfig,
        reference: ModelConfig,
        chat_tokenizer: ChatTokenizer,
        device: torch.device | str = "cpu",
        on_the_fly: bool = False,
        batch_size: int = 16,
        chunk_size: int | None = 1024,
        shares: Shares = ALONE,
    ):
        self.policy, self.reference, self.chat_tokenizer, self.device = policy, reference, chat_tokenizer, torch.device(device)
        self.on_the_fly, self.batch_size, self.chunk_size, self.shares = on_the_fly, batch_size, chunk_size, shares
        self.sequences = self.on_the_fly_sequences = self.computed_sequences = 0
        self.models: dict[tuple[str, str], torch.nn.Module] = {}

    def quantity(self, model: ModelConfig, examples: list[TokenizedExample], quantity: FrozenQuantity, pad_token_id: int) -> list[Value]:
        """Per example, the quantity's named ``[S, L - 1, ...]`` tensors under the frozen ``model``."""
        count = sum(len(example.sequences) for example in examples)
        if self.on_the_fly or not quantity.cacheable:
            self.on_the_fly_sequences += count
            self.computed_sequences += count
            with torch.no_grad():
                return compute_quantity(self.model(model), examples, quantity, self.batch_size, pad_token_id, self.chunk_size)
        self.sequences += count
        values, computed = frozen_quantity(
            model, examples, quantity, pad_token_id, self.batch_size, self.device, chunk_size=self.chunk_size, shares=self.shares
        )
        self.computed_sequences += computed
        return values

    def label_logprobs(self, model: ModelConfig, examples: list[TokenizedExample], pad_token_id: int) -> list[torch.Tensor]:
        """Per example, ``[S, L - 1]`` label log-probs under the frozen ``model``."""
        return [value["logps"] for value in self.quantity(model, examples, LabelLogprobsQuantity(), pad_token_id)]

    def model(self, config: ModelConfig) -> torch.nn.Module:
        """A frozen model, loaded once and kept in memory on the context's device."""
        key = (config.name_or_path, config.dtype)
        if key not in self.models:
            self.models[key] = load_model(ModelConfig(config.name_or_path, dtype=config.dtype)).to(self.device).eval().requires_grad_(False)
        return self.models[key]
