"""What a fit spent, counted as it trains and written to ``compute.json`` beside its metrics: the benchmark harness
reads it, so that no arm wins by spending more."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import lightning as L
import torch

from sft_research.frozen.cache import sequences_fingerprint
from sft_research.frozen.shares import Shares
from sft_research.model.generation import GenerationCount
from sft_research.runs.atomic_files import atomic_write_text

RECORD = "compute.json"


@dataclass
class Compute:
    """What training spent; evaluation, the same for every arm, is not counted.

    Attributes:
        optimizer_steps: optimizer steps.
        tokens: real tokens of the sequences trained on (each through a forward and a backward pass).
        completion_tokens: those of them in the loss.
        policy_sequences: sequences through a forward and a backward pass of the model being trained.
        frozen_sequences: sequences scored by frozen models (references, baselines, teachers), computed in this fit or
            read from the on-disk cache (a fit on other data would have had to compute them).
        generated_tokens: tokens sampled from the model (an IRFT round's, counted by the source that generates the
            round's pairs as the fit reads them).
    """

    # Each with its label in the benchmark report's table.
    optimizer_steps: int = field(default=0, metadata={"label": "optimizer steps"})
    tokens: int = field(default=0, metadata={"label": "tokens trained"})
    completion_tokens: int = field(default=0, metadata={"label": "of them in the loss"})
    policy_sequences: int = field(default=0, metadata={"label": "policy fwd+bwd sequences"})
    frozen_sequences: int = field(default=0, metadata={"label": "frozen-model sequences"})
    generated_tokens: int = field(default=0, metadata={"label": "generated tokens"})

    def add(self, other: Compute) -> None:
        for quantity in fields(self):
            setattr(self, quantity.name, getattr(self, quantity.name) + getattr(other, quantity.name))


class ComputeRecord(L.Callback):
    """Counts every batch trained on (a batch skipped for a non-finite loss was computed too, but made no step) on
    each process, sums the processes at the end, and writes the fit's :class:`Compute` to its log folder, with the
    fingerprint of its training data as rendered (token ids, completion masks, quality). The counts are tensors on
    the device, read once at the end, and saved in training states so that a resumed fit goes on.

    ``computed_per_process`` lists, by rank, what each process computed of the work the processes share
    (:mod:`~sft_research.frozen.shares`): ``frozen_sequences``, the sequences it ran through frozen models (none for
    a quantity read from the cache), and ``generated_prompts`` and ``generated_tokens``, what it generated for a
    training data source that generates (an IRFT round's pairs)."""

    def __init__(self):
        self.counts = torch.zeros(3, dtype=torch.int64)  # tokens, completion tokens, sequences
        self.training_data: str | None = None

    def on_fit_start(self, trainer, module) -> None:
        if trainer.is_global_zero:
            self.training_data = sequences_fingerprint(trainer.datamodule.train_examples, training_targets=True)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        mask = batch["attention_mask"]
        step = torch.stack([mask.sum(), batch["loss_mask"].sum(), mask.any(-1).sum()])
        self.counts = self.counts.to(step.device) + step

    def state_dict(self) -> dict:
        return {"counts": self.counts.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.counts = state["counts"]

    def on_fit_end(self, trainer, module) -> None:
        # Collectives first, on every process: the sums, and the log folder.
        counts = trainer.strategy.reduce(self.counts.to(module.device), reduce_op="sum") if trainer.world_size > 1 else self.counts
        frozen = module.frozen.sequences(trainer) if module.frozen is not None else 0
        generated = getattr(getattr(trainer.datamodule, "train_source", None), "generated", GenerationCount())
        here = {
            "frozen_sequences": module.frozen.context.computed_sequences if module.frozen is not None else 0,
            "generated_prompts": generated.prompts,
            "generated_tokens": generated.tokens,
        }
        processes = Shares(trainer.global_rank, trainer.world_size).gather(here)
        computed = {name: [process[name] for process in processes] for name in here}
        log_dir = trainer.log_dir if trainer.logger is not None else None
        tokens, completion, sequences = (int(c) for c in counts.tolist())
        record = Compute(trainer.global_step, tokens, completion, sequences, frozen, sum(computed["generated_tokens"]))
        if trainer.is_global_zero and log_dir is not None:
            recorded = {**asdict(record), "computed_per_process": computed, "training_data": self.training_data}
            atomic_write_text(Path(log_dir) / RECORD, json.dumps(recorded, indent=1))


def read_compute(log_dir: Path) -> tuple[Compute, str]:
    """A fit's :class:`Compute` and the fingerprint of its training data, as it recorded them."""
    recorded = json.loads((log_dir / RECORD).read_text())
    return Compute(**{f.name: recorded[f.name] for f in fields(Compute)}), recorded["training_data"]
