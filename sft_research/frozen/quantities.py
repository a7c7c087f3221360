"""What is computed from a frozen model at every label position: its label log-probs, its top-k next-token
distribution, or its final hidden states (from which its whole distribution is recomputed chunk by chunk)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from sft_research.model.logprobs import forward_outputs, sequence_outputs
from sft_research.model.output_layer import LabelLogprobs, PositionOutput, outputs_from_logits
from sft_research.model.shared_prefix import CACHE_ARGUMENT, MIN_SHARED, shared_length


class FrozenQuantity(ABC):
    """A per-position quantity of a frozen model.

    Attributes:
        key: names the quantity and its settings in cache files.
        cacheable: whether it is small enough to keep on disk per example (hidden states are not).
    """

    key: str
    cacheable: bool = True

    @abstractmethod
    def __call__(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor, chunk_size: int | None) -> dict[str, torch.Tensor]:
        """Named ``[N, L - 1, ...]`` tensors for ``[N, L]`` right-padded sequences."""


class LabelLogprobsQuantity(FrozenQuantity):
    """``logps``: the log-prob of each next token."""

    key = "label_logprobs"

    def __call__(self, model, input_ids, attention_mask, chunk_size):
        return frozen_outputs(model, input_ids, attention_mask, (LabelLogprobs(),), chunk_size)


class TopK(PositionOutput):
    """The k largest log-probs of the next-token distribution and their token ids, as ``[n, k, 2]`` (values, ids)."""

    name = "top_k"

    def __init__(self, k: int):
        self.k = k

    def __call__(self, logprobs, labels, frozen):
        values, ids = logprobs.topk(self.k, dim=-1)
        return torch.stack([values, ids.float()], dim=-1)


class TopKQuantity(FrozenQuantity):
    """``ids`` (int64) and ``logps`` (float32), ``[N, L - 1, k]``: the k most likely next tokens, most likely first."""

    def __init__(self, k: int):
        self.k, self.key = k, f"top_{k}"

    def __call__(self, model, input_ids, attention_mask, chunk_size):
        both = frozen_outputs(model, input_ids, attention_mask, (TopK(self.k),), chunk_size)["top_k"]
        return {"ids": both[..., 1].long(), "logps": both[..., 0]}


@torch.no_grad()
def frozen_outputs(model, input_ids, attention_mask, outputs, chunk_size: int | None) -> dict[str, torch.Tensor]:
    """:func:`~sft_research.model.logprobs.sequence_outputs` of a frozen model on ``[N, L]`` right-padded sequences,
    with the first tokens they all share run once (a task's data repeats its system turn and instruction in every
    example, as evaluation's prompts do: :mod:`~sft_research.model.shared_prefix`): their outputs from one row, their
    keys and values cached and repeated over the rows, and the rest of each row run after them."""
    rows = [row[keep] for row, keep in zip(input_ids.cpu(), attention_mask.cpu().bool())]
    cached = shared_length(rows) - 1
    if cached < MIN_SHARED or len(rows) == 1:
        return sequence_outputs(model, input_ids, attention_mask, outputs, {}, chunk_size)
    head = model(input_ids=input_ids[:1, : cached + 1], use_cache=True)
    cache = head.cache if CACHE_ARGUMENT == "cache" else head.past_key_values
    if not getattr(cache, "is_croppable", True):  # a sliding-window cache cannot give back its last token
        return sequence_outputs(model, input_ids, attention_mask, outputs, {}, chunk_size)
    cache.crop(-1)  # the last shared token runs again with each row, to predict the row's next token
    cache.batch_repeat_interleave(len(rows))
    # The shared tokens' outputs: positions 0 .. cached - 1, whose labels (tokens 1 .. cached) are shared too.
    shared = outputs_from_logits(head.logits[0, :cached], input_ids[0, 1 : cached + 1], outputs, {})
    positions = torch.arange(cached, input_ids.shape[1], device=input_ids.device).expand(len(rows), -1)
    rest = forward_outputs(model, input_ids[:, cached:], None, positions, outputs, {}, chunk_size, cache=cache)
    expanded = (value[None].expand(len(rows), *value.shape) for value in shared)
    return {output.name: torch.cat([value, rest[output.name]], dim=1) for output, value in zip(outputs, expanded)}


class HiddenStatesQuantity(FrozenQuantity):
    """``hidden``: the final hidden states that predict each next token, ``[N, L - 1, H]``; the model's output layer
    turns them into its distribution where a policy output needs it."""

    key = "final_hidden_states"
    cacheable = False

    def __call__(self, model, input_ids, attention_mask, chunk_size):
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        outputs = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            output_hidden_states=True,
            logits_to_keep=1,
        )
        return {"hidden": outputs.hidden_states[-1][:, :-1]}
