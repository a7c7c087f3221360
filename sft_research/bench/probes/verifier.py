"""Greedy answers to held-out prompts, and those of a task scored by the task's verifier: the task score and the skill
probe."""

from __future__ import annotations

import torch

from sft_research.bench.probes.base import ProbeContext
from sft_research.data.collate import prompt_batches
from sft_research.data.task import VerifiableTask
from sft_research.model.generation import GenerationConfig, generate


@torch.no_grad()
def greedy_answers(model, context: ProbeContext, prompts: list[str], max_new_tokens: int) -> list[str]:
    """The model's greedy answer to each prompt, rendered as in training, ``context.batch_size`` prompts at a time."""
    tokenizer, answers = context.tokenizer, []
    for batch in prompt_batches(context.chat_tokenizer, prompts, tokenizer.pad_token_id, context.batch_size):
        answers += generate(model, tokenizer, batch["prompt_ids"], batch["prompt_attention_mask"], GenerationConfig(max_new_tokens))
    return answers


def verifier_scores(model, context: ProbeContext, task: VerifiableTask, max_new_tokens: int) -> list[float]:
    """1.0 for each held-out prompt of ``task`` the model answers right (greedy), else 0.0."""
    answers = greedy_answers(model, context, task.eval_prompts(), max_new_tokens)
    return [float(task.score(index, answer) >= 1.0) for index, answer in enumerate(answers)]
