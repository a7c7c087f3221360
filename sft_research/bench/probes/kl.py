"""The KL probe: how far the fine-tuned model's own answers to the task have moved from the base model's."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sft_research.bench.probes.base import Metric, Probe, ProbeContext
from sft_research.data.collate import prompt_batches
from sft_research.errors import ConfigError
from sft_research.model.generation import GenerationConfig, generate_tokens
from sft_research.model.shared_prefix import continuation_logits


@dataclass
class KLProbe(Probe):
    """Per held-out task prompt, the sum over the fine-tuned model's greedy response (up to and including its
    end-of-turn token) of KL(π_θ(·|context) ‖ π_0(·|context)) from the base model π_0. The base model's own is 0.

    Args:
        num_prompts: held-out task prompts used (the first ones).
        max_new_tokens: longest response.
    """

    num_prompts: int = 32
    max_new_tokens: int = 16

    name = "kl"
    metrics = (Metric("kl_from_base", "KL(π_θ‖π_0) on task", higher_is_better=False),)

    def check(self, task) -> None:
        if not task.eval_prompts():
            raise ConfigError(
                "KLProbe: the task has no held-out prompts to answer (an lm-eval scorer brings its own items): give task.heldout"
            )

    @torch.no_grad()
    def measure(self, model, context: ProbeContext) -> list[float]:
        prompts = context.task.eval_prompts()[: self.num_prompts]
        if model is context.base:
            return [0.0] * len(prompts)
        tokenizer, values = context.tokenizer, []
        pad = tokenizer.pad_token_id
        for batch in prompt_batches(context.chat_tokenizer, prompts, pad, context.batch_size):
            prompt_ids, prompt_mask = batch["prompt_ids"], batch["prompt_attention_mask"]
            response = generate_tokens(model, tokenizer, prompt_ids, prompt_mask, GenerationConfig(self.max_new_tokens))
            # Keep the response up to and including its first end-of-turn token; what follows is padding.
            ended = (response == tokenizer.eos_token_id).long().cumsum(-1)
            response_mask = (ended == 0) | ((ended == 1) & (response == tokenizer.eos_token_id))
            log_p, log_q = (
                torch.log_softmax(continuation_logits(m, prompt_ids, prompt_mask, response, response_mask, pad).float(), -1)
                for m in (model, context.base)
            )
            kl = (log_p.exp() * (log_p - log_q)).sum(-1)
            values += (kl * response_mask).sum(-1).tolist()
        return values

    def compare(self, finetuned: list[float], base: list[float]) -> dict[str, list[float]]:
        return {"kl_from_base": list(finetuned)}
