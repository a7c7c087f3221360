"""Held-out task accuracy: batched greedy generation, scored by the task's own verifier."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchmetrics import Metric


@dataclass
class GenerationConfig:
    """Greedy decoding for evaluation.

    Args:
        max_new_tokens: longest generated answer.
    """

    max_new_tokens: int = 16


class TaskAccuracy(Metric):
    """Fraction of held-out answers that the verifier scores as fully right (score 1).

    Verifiers may give partial credit (reasoning-gym's numeric ones do, for answers that merely contain the right
    digits), which would blur an accuracy, so only a full score counts.
    """

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, scores: torch.Tensor) -> None:
        self.total += (scores >= 1.0).sum()
        self.count += scores.numel()

    def compute(self) -> torch.Tensor:
        return self.total / self.count


@torch.no_grad()
def generate_greedy(model, tokenizer, prompt_ids: torch.Tensor, attention_mask: torch.Tensor, config: GenerationConfig) -> list[str]:
    """Greedy continuations of left-padded prompts, decoded without special tokens."""
    output = model.generate(
        input_ids=prompt_ids,
        attention_mask=attention_mask,
        max_new_tokens=config.max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return tokenizer.batch_decode(output[:, prompt_ids.shape[1] :], skip_special_tokens=True)
