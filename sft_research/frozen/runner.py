"""The frozen inputs of a fit, as the training module runs them: attached to every example before training
(cached, each process computing its share), or computed for each batch (on the fly), through one
:class:`FrozenContext`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from sft_research.data.collate import collate_frozen
from sft_research.data.tokenize import TokenizedExample
from sft_research.frozen.context import FrozenContext
from sft_research.frozen.inputs import FrozenInput
from sft_research.frozen.shares import Shares
from sft_research.runs.timings import timed


@dataclass
class FrozenConfig:
    """How frozen models serve the objective.

    Args:
        reference: the frozen reference model (a hub id or folder); None: the model at the start of this run.
        mode: ``cached`` computes frozen models' quantities once before training and keeps them on disk for later
            runs, each process computing its share of the batches and gathering the others'; ``on_the_fly`` keeps the
            frozen models in memory and runs them on every batch (the same loss, for checking and for data too large
            to cache).
        batch_size: examples per frozen forward pass (with their sequences: a pair's two); the processes share
            whole batches.
    """

    reference: str | None = None
    mode: Literal["cached", "on_the_fly"] = "cached"
    batch_size: int = 16


class FrozenInputs:
    """An objective's frozen inputs for one fit."""

    def __init__(self, inputs: tuple[FrozenInput, ...], context: FrozenContext):
        self.inputs, self.context = inputs, context

    @classmethod
    def for_fit(cls, module, chat_tokenizer) -> FrozenInputs:
        """The frozen inputs of ``module``'s objective, run as its ``frozen`` config says, on its devices: each process
        computes its share of a cached quantity's batches and gathers the others', every process loading the whole
        frozen model (:mod:`~sft_research.frozen.shares`)."""
        trainer = module.trainer
        config = module.frozen_config
        context = FrozenContext(
            module.pretrained,
            module.reference,
            chat_tokenizer,
            trainer.strategy.root_device,
            config.mode == "on_the_fly",
            config.batch_size,
            module.execution.logprob_chunk_size,
            Shares(trainer.global_rank, trainer.world_size),
        )
        return cls(module.objective.frozen_inputs, context)

    def sequences(self, trainer) -> int:
        """Sequences that frozen models scored for this fit, over every process (a collective)."""
        on_the_fly = torch.tensor(self.context.on_the_fly_sequences, device=trainer.strategy.root_device)
        if trainer.world_size > 1:
            on_the_fly = trainer.strategy.reduce(on_the_fly, reduce_op="sum")
        return self.context.sequences + int(on_the_fly)

    def on_the_fly(self, frozen: FrozenInput) -> bool:
        return self.context.on_the_fly or frozen.on_the_fly_only

    def attach(self, examples: list[TokenizedExample]) -> None:
        """Computes every cached input on ``examples`` (unless already attached) and attaches it to each."""
        for frozen in self.inputs:
            if self.on_the_fly(frozen) or all(frozen.name in example.frozen for example in examples):
                continue
            with timed("frozen-model passes"):
                values = frozen.compute(examples, self.context)
            for example, value in zip(examples, values):
                example.frozen[frozen.name] = value

    def for_batch(self, examples: list[TokenizedExample], label_positions: int, device: torch.device) -> dict:
        """The on-the-fly inputs of a batch's examples, padded to its ``label_positions`` as the collator pads."""
        values = {}
        for frozen in self.inputs:
            if self.on_the_fly(frozen):
                computed = frozen.compute(examples, self.context)
                values[frozen.name] = collate_frozen(computed, label_positions, device)
        return values


def batch_frozen(batch: dict[str, torch.Tensor]) -> dict:
    """The frozen inputs a collated batch holds: ``frozen/<input>``, or ``frozen/<input>/<tensor>`` for inputs of
    several tensors, which come back as a dict."""
    frozen: dict = {}
    for key, value in batch.items():
        if key.startswith("frozen/"):
            name, _, tensor = key.removeprefix("frozen/").partition("/")
            if tensor:
                frozen.setdefault(name, {})[tensor] = value
            else:
                frozen[name] = value
    return frozen


def frozen_tensor(frozen: dict, read: str) -> torch.Tensor:
    """A frozen input's tensor as a position output names it: ``<input>``, or ``<input>.<tensor>``."""
    name, _, tensor = read.partition(".")
    return frozen[name][tensor] if tensor else frozen[name]
