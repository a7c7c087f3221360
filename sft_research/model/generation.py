"""Batched generation from left-padded prompts, for evaluation and for building training data (IRFT's samples)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sft_research.model.shared_prefix import CACHE_ARGUMENT, split_shared_prefix


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


@torch.no_grad()
def generate_tokens(model, tokenizer, prompt_ids: torch.Tensor, attention_mask: torch.Tensor, config: GenerationConfig) -> torch.Tensor:
    """The new tokens after left-padded prompts, ``[B, new]`` on the model's device (padded after an end of turn); the
    prompts' shared first tokens run once (:mod:`~sft_research.model.shared_prefix`)."""
    options = {"temperature": config.temperature, "top_p": config.top_p} if config.do_sample else {}
    device = next(model.parameters()).device
    shared = split_shared_prefix(prompt_ids, attention_mask, tokenizer.pad_token_id)
    if shared is not None:
        prompt_ids, attention_mask = shared.full()
        options[CACHE_ARGUMENT] = shared.cache(model)
    output = model.generate(
        input_ids=prompt_ids.to(device),
        attention_mask=attention_mask.to(device),
        max_new_tokens=config.max_new_tokens,
        do_sample=config.do_sample,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **options,
    )
    return output[:, prompt_ids.shape[1] :]


@dataclass
class Generations:
    """Continuations, decoded without special tokens; whether each ended with the end-of-sequence token (False: it
    stopped at ``max_new_tokens``, an unfinished answer); and how many tokens each sampled, that token included."""

    texts: list[str]
    finished: list[bool]
    lengths: list[int]


@dataclass
class GenerationCount:
    """What one process generated: the prompts it answered and the tokens it sampled."""

    prompts: int = 0
    tokens: int = 0


def generate_with_status(model, tokenizer, prompt_ids: torch.Tensor, attention_mask: torch.Tensor, config: GenerationConfig) -> Generations:
    """The continuations of left-padded prompts, on the model's device, with their status (:class:`Generations`)."""
    new_tokens = generate_tokens(model, tokenizer, prompt_ids, attention_mask, config)
    ends = new_tokens == tokenizer.eos_token_id
    finished = ends.any(-1)
    lengths = torch.where(finished, ends.int().argmax(-1) + 1, new_tokens.shape[1])  # up to the first end
    return Generations(tokenizer.batch_decode(new_tokens, skip_special_tokens=True), finished.tolist(), lengths.tolist())


def generate(model, tokenizer, prompt_ids: torch.Tensor, attention_mask: torch.Tensor, config: GenerationConfig) -> list[str]:
    """The continuations of :func:`generate_with_status`, for scoring by a verifier."""
    return generate_with_status(model, tokenizer, prompt_ids, attention_mask, config).texts
