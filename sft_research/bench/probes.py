"""What the harness measures on a model: the task score and the forgetting probes.

Each measurement returns one value per item (a held-out prompt, a text chunk), so that the report can pair the
fine-tuned model's values with the base model's on the same items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from sft_research.data.collate import collate_prompts
from sft_research.data.task import VerifiableTask
from sft_research.data.tokenize import Tokenizer
from sft_research.model.generation import GenerationConfig, generate
from sft_research.model.logprobs import label_logprobs

NOVEL = "reasoning_gym:in_the_year_2889.txt"


@dataclass
class GeneralTextProbe:
    """Log-likelihood of general text that no arm trains on.

    Args:
        source: a text file, or ``reasoning_gym:in_the_year_2889.txt`` (the public-domain Jules Verne story shipped in
            reasoning-gym's data folder).
        num_chunks: chunks scored, spread evenly over the text.
        chunk_tokens: tokens per chunk.
    """

    source: str = NOVEL
    num_chunks: int = 32
    chunk_tokens: int = 128

    def text(self) -> str:
        if self.source.startswith("reasoning_gym:"):
            import reasoning_gym

            return (Path(reasoning_gym.__file__).parent / "data" / self.source.split(":", 1)[1]).read_text()
        return Path(self.source).read_text()


@dataclass
class SkillProbe:
    """Accuracy on a reasoning-gym task that the base model can already do and no arm trains on.

    Args:
        task: the reasoning-gym task.
        options: its generator options.
        size: items scored.
        seed: the items' seed.
        max_new_tokens: longest answer.
    """

    task: str
    options: dict[str, int | float | str | bool] | None = None
    size: int = 50
    seed: int = 1234
    max_new_tokens: int = 16

    def source(self) -> VerifiableTask:
        from sft_research.data.reasoning_gym_task import ReasoningGymTask

        return ReasoningGymTask(self.task, self.options, train_size=0, eval_size=self.size, seed=self.seed)


@dataclass
class KLProbe:
    """KL(pi_theta || pi_0) from the base model on the model's own greedy responses to held-out task prompts.

    Args:
        num_prompts: held-out task prompts used.
        max_new_tokens: longest response.
    """

    num_prompts: int = 32
    max_new_tokens: int = 16


@dataclass
class ForgettingProbes:
    """The forgetting probes: general text, held-out skills, and KL from the base model."""

    general_text: GeneralTextProbe = field(default_factory=GeneralTextProbe)
    skills: list[SkillProbe] = field(default_factory=list)
    kl: KLProbe = field(default_factory=KLProbe)


@torch.no_grad()
def verifier_scores(model, tokenizer, renderer: Tokenizer, task: VerifiableTask, max_new_tokens: int, batch_size: int) -> list[float]:
    """1.0 for each held-out prompt the model answers right (greedy), else 0.0."""
    prompts = task.eval_prompts()
    scores: list[float] = []
    for first in range(0, len(prompts), batch_size):
        batch = collate_prompts([(i, renderer.prompt_ids(p)) for i, p in enumerate(prompts[first : first + batch_size], first)], tokenizer.pad_token_id)
        texts = generate(model, tokenizer, batch["prompt_ids"], batch["prompt_attention_mask"], GenerationConfig(max_new_tokens))
        scores += [float(task.score(int(i), text) >= 1.0) for i, text in zip(batch["index"], texts)]
    return scores


@torch.no_grad()
def general_text_loglik(model, tokenizer, probe: GeneralTextProbe, batch_size: int) -> list[float]:
    """Mean log-likelihood per token of each chunk (plain text, no chat template)."""
    # The whole text is tokenized once and cut into chunks of chunk_tokens: it is never given to the model whole, so
    # the tokenizer's warning about sequences longer than the model's maximum does not apply.
    ids = tokenizer(probe.text(), add_special_tokens=False, verbose=False)["input_ids"]
    span = probe.chunk_tokens
    if len(ids) < probe.num_chunks * span:
        raise ValueError(f"{probe.source}: {len(ids)} tokens, too short for {probe.num_chunks} chunks of {span}")
    step = (len(ids) - span) // max(1, probe.num_chunks - 1)
    chunks = torch.tensor([ids[i * step : i * step + span] for i in range(probe.num_chunks)])
    values: list[float] = []
    for batch in chunks.split(batch_size):
        values += label_logprobs(model(input_ids=batch).logits, batch).mean(-1).tolist()
    return values


@torch.no_grad()
def kl_from_base(model, base, tokenizer, renderer: Tokenizer, prompts: list[str], probe: KLProbe, batch_size: int) -> list[float]:
    """Per prompt, sum over the response tokens of KL(pi_theta(.|context) || pi_0(.|context)), on the fine-tuned
    model's greedy response (up to and including its end-of-turn token)."""
    values: list[float] = []
    for first in range(0, len(prompts), batch_size):
        batch = collate_prompts([(i, renderer.prompt_ids(p)) for i, p in enumerate(prompts[first : first + batch_size])], tokenizer.pad_token_id)
        prompt_ids, prompt_mask = batch["prompt_ids"], batch["prompt_attention_mask"]
        output = model.generate(
            input_ids=prompt_ids, attention_mask=prompt_mask, max_new_tokens=probe.max_new_tokens, do_sample=False,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )
        response = output[:, prompt_ids.shape[1] :]
        # Keep the response up to and including its first end-of-turn token; what follows is padding.
        ended = (response == tokenizer.eos_token_id).long().cumsum(-1)
        response_mask = (ended == 0) | ((ended == 1) & (response == tokenizer.eos_token_id))
        attention = torch.cat([prompt_mask, response_mask.long()], dim=1)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        # Logits at position t predict token t + 1: the response tokens are predicted from the positions before them.
        start = prompt_ids.shape[1] - 1
        log_p = torch.log_softmax(model(input_ids=output, attention_mask=attention, position_ids=positions).logits[:, start:-1].float(), -1)
        log_q = torch.log_softmax(base(input_ids=output, attention_mask=attention, position_ids=positions).logits[:, start:-1].float(), -1)
        kl = (log_p.exp() * (log_p - log_q)).sum(-1)
        values += (kl * response_mask).sum(-1).tolist()
    return values
