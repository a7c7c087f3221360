"""Held-out task accuracy: batched greedy generation, scored by the task's own verifier."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchmetrics import Metric


@dataclass
class GenerationConfig:
    """Decoding settings (greedy unless ``do_sample``).

    Args:
        max_new_tokens: longest generated answer.
        do_sample: sample instead of taking the most likely token.
        temperature: sampling temperature.
        top_p: nucleus-sampling mass.
    """

    max_new_tokens: int = 16
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0


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
def generate(model, tokenizer, prompt_ids: torch.Tensor, attention_mask: torch.Tensor, config: GenerationConfig) -> list[str]:
    """Continuations of left-padded prompts, decoded without special tokens."""
    sampling = {"temperature": config.temperature, "top_p": config.top_p} if config.do_sample else {}
    output = model.generate(
        input_ids=prompt_ids,
        attention_mask=attention_mask,
        max_new_tokens=config.max_new_tokens,
        do_sample=config.do_sample,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **sampling,
    )
    return tokenizer.batch_decode(output[:, prompt_ids.shape[1] :], skip_special_tokens=True)
