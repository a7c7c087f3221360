"""What is computed from a frozen model at every label position: its label log-probs, its top-k next-token
distribution, or its final hidden states (from which its whole distribution is recomputed chunk by chunk)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from sft_research.model.logprobs import sequence_outputs
from sft_research.model.output_layer import LabelLogprobs, PositionOutput


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
        return sequence_outputs(model, input_ids, attention_mask, (LabelLogprobs(),), {}, chunk_size)


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
        both = sequence_outputs(model, input_ids, attention_mask, (TopK(self.k),), {}, chunk_size)["top_k"]
        return {"ids": both[..., 1].long(), "logps": both[..., 0]}


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
