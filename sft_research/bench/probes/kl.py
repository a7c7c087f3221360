"""The KL probe: how far the fine-tuned model's own answers to the task have moved from the base model's."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sft_research.bench.probes.base import Metric, Probe, ProbeContext
from sft_research.data.collate import prompt_batches
from sft_research.model.generation import GenerationConfig, generate_tokens


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

    @torch.no_grad()
    def measure(self, model, context: ProbeContext) -> list[float]:
        prompts = context.task.eval_prompts()[: self.num_prompts]
        if model is context.base:
            return [0.0] * len(prompts)
        tokenizer, values = context.tokenizer, []
        for batch in prompt_batches(context.renderer, prompts, tokenizer.pad_token_id, context.batch_size):
            prompt_ids, prompt_mask = batch["prompt_ids"].to(model.device), batch["prompt_attention_mask"].to(model.device)
            response = generate_tokens(model, tokenizer, prompt_ids, prompt_mask, GenerationConfig(self.max_new_tokens))
            output = torch.cat([prompt_ids, response], dim=1)
            # Keep the response up to and including its first end-of-turn token; what follows is padding.
            ended = (response == tokenizer.eos_token_id).long().cumsum(-1)
            response_mask = (ended == 0) | ((ended == 1) & (response == tokenizer.eos_token_id))
            attention = torch.cat([prompt_mask, response_mask.long()], dim=1)
            positions = (attention.cumsum(-1) - 1).clamp(min=0)
            # Logits at position t predict token t + 1: the response tokens are predicted from the positions before them.
            start = prompt_ids.shape[1] - 1
            log_p = torch.log_softmax(
                model(input_ids=output, attention_mask=attention, position_ids=positions).logits[:, start:-1].float(), -1
            )
            log_q = torch.log_softmax(
                context.base(input_ids=output, attention_mask=attention, position_ids=positions).logits[:, start:-1].float(), -1
            )
            kl = (log_p.exp() * (log_p - log_q)).sum(-1)
            values += (kl * response_mask).sum(-1).tolist()
        return values

    def compare(self, finetuned: list[float], base: list[float]) -> dict[str, list[float]]:
        return {"kl_from_base": list(finetuned)}
