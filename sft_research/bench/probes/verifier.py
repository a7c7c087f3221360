"""Greedy answers to a task's held-out prompts, scored by the task's verifier: the task score and the skill probe."""

from __future__ import annotations

import torch

from sft_research.bench.probes.base import ProbeContext
from sft_research.data.collate import prompt_batches
from sft_research.data.task import VerifiableTask
from sft_research.model.generation import GenerationConfig, generate


@torch.no_grad()
def verifier_scores(model, context: ProbeContext, task: VerifiableTask, max_new_tokens: int) -> list[float]:
    """1.0 for each held-out prompt of ``task`` the model answers right (greedy), else 0.0."""
    tokenizer, scores = context.tokenizer, []
    for batch in prompt_batches(context.renderer, task.eval_prompts(), tokenizer.pad_token_id, context.batch_size):
        texts = generate(model, tokenizer, batch["prompt_ids"], batch["prompt_attention_mask"], GenerationConfig(max_new_tokens))
        scores += [float(task.score(int(i), text) >= 1.0) for i, text in zip(batch["index"], texts)]
    return scores
