"""The tokens every prompt of a batch starts with (the chat template's system turn, a task's instruction), run once.

Evaluation and IRFT's sampling generate from dozens of prompts that share most of their tokens: SmolLM2's template
puts the same 21-token system turn before every user turn. Their keys and values are the same in every row, so they
are computed once for one row and repeated over the batch; only each prompt's own tokens (left-padded after the
shared ones, with positions that skip the padding) go through the model per row. The outputs are those of the full
prompts up to floating-point rounding (``tests/test_shared_prefix.py``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from transformers import LlamaForCausalLM

# transformers 5.24 renamed the cache argument of forward and generate; earlier versions know only the old name.
CACHE_ARGUMENT = "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"

# Below this many shared tokens the extra forward saves less than it costs.
MIN_SHARED = 8


@dataclass
class SharedPrefix:
    """Left-padded prompts split into the tokens all rows start with (``prefix``, ``[P]``) and each row's rest,
    left-padded (``ids`` and ``mask``, ``[B, S]``)."""

    prefix: torch.Tensor
    ids: torch.Tensor
    mask: torch.Tensor

    def full(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``[B, P + S]`` ids and attention mask of the prompts behind a cache of the prefix."""
        rows = self.ids.shape[0]
        ids = torch.cat([self.prefix.expand(rows, -1), self.ids], dim=1)
        return ids, torch.cat([self.mask.new_ones(rows, len(self.prefix)), self.mask], dim=1)

    def cache(self, model):
        """The prefix's keys and values, one copy per row (a fresh cache per call: a forward extends it)."""
        # Run by the module that ``generate`` runs on: an FSDP wrapper hands generation to the model inside it, whose
        # own weights are gathered meanwhile (sft_research.model.fsdp.generation_ready).
        output = model.generate.__self__(input_ids=self.prefix[None].to(model.device), use_cache=True)
        cache = output.cache if CACHE_ARGUMENT == "cache" else output.past_key_values
        cache.batch_repeat_interleave(self.ids.shape[0])
        return cache


def shared_length(rows: list[torch.Tensor]) -> int:
    """How many first tokens all the rows (1D token ids) have in common, leaving each row at least one of its own."""
    shortest = min(len(row) for row in rows) - 1
    stacked = torch.stack([row[:shortest] for row in rows])
    differs = (stacked != stacked[:1]).any(0).nonzero()
    return int(differs[0]) if len(differs) else shortest


def split_shared_prefix(ids: torch.Tensor, mask: torch.Tensor, pad_token_id: int) -> SharedPrefix | None:
    """The shared prefix of left-padded prompts (``[B, L]`` ids and 0/1 attention mask), leaving every row at least
    one token of its own; None where they share fewer than :data:`MIN_SHARED` tokens."""
    ids, mask = ids.cpu(), mask.cpu().bool()
    rows = [row[keep] for row, keep in zip(ids, mask)]
    shared = shared_length(rows)
    if shared < MIN_SHARED:
        return None
    rest = [row[shared:] for row in rows]
    width = max(len(row) for row in rest)
    suffix = torch.full((len(rows), width), pad_token_id, dtype=ids.dtype)
    suffix_mask = torch.zeros(len(rows), width, dtype=torch.long)
    for index, row in enumerate(rest):
        suffix[index, width - len(row) :] = row
        suffix_mask[index, width - len(row) :] = 1
    return SharedPrefix(rows[0][:shared], suffix, suffix_mask)


def continuation_logits(
    model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, continuation: torch.Tensor, continuation_mask: torch.Tensor, pad_id: int
) -> torch.Tensor:
    """The ``[B, C, V]`` logits that predict each of the ``[B, C]`` continuation tokens after left-padded prompts, from
    one forward of the model (the prompts' shared prefix from its cache)."""
    device = model.device
    shared = split_shared_prefix(prompt_ids, prompt_mask, pad_id)
    prefix_length, cache = 0, None
    if shared is not None:
        prompt_ids, prompt_mask, prefix_length, cache = shared.ids, shared.mask, len(shared.prefix), shared.cache(model)
    ids = torch.cat([prompt_ids.to(device), continuation.to(device)], dim=1)
    mask = torch.cat([prompt_mask.to(device), continuation_mask.to(device)], dim=1).long()
    full_mask = torch.cat([mask.new_ones(len(mask), prefix_length), mask], dim=1)
    positions = (full_mask.cumsum(-1) - 1).clamp(min=0)[:, prefix_length:]
    logits = model(input_ids=ids, attention_mask=full_mask, position_ids=positions, **{CACHE_ARGUMENT: cache}).logits
    # Logits at position t predict token t + 1: the continuation is predicted from the positions before each of its tokens.
    return logits[:, prompt_ids.shape[1] - 1 : -1]
