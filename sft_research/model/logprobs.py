"""Label-token log-probs: the one quantity every objective is built from.

They are always computed through the causal LM's own forward, whatever wraps it (peft, an FSDP unit, torch.compile):
with a chunk size, its output layer is swapped, for that call only, for one that returns the label log-probs chunk by
chunk (:mod:`~sft_research.model.chunked_logprobs`), so the ``[tokens, vocab]`` logits never exist and FSDP gathers
the output weight as it does for any forward of the unit that holds it.
"""

from __future__ import annotations

import torch

from sft_research.model.chunked_logprobs import chunked_label_logprobs


def label_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """``out[b, t] = log p(input_ids[b, t + 1] | input_ids[b, : t + 1])``, in float32, shape ``[B, L - 1]``."""
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return logprobs.gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """Runs ``model`` on ``[N, L]`` right-padded token ids and returns their ``[N, L - 1]`` label log-probs.

    With ``chunk_size``, the output layer runs on that many tokens at a time and the full logits never exist (for
    models whose output layer is a plain linear map; others fall back to full logits).
    """
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return forward_label_logprobs(model, input_ids, attention_mask, position_ids, chunk_size)


def forward_label_logprobs(model, input_ids: torch.Tensor, attention_mask, position_ids: torch.Tensor, chunk_size: int | None) -> torch.Tensor:
    """``[N, L - 1]`` label log-probs of ``input_ids`` from one forward of ``model`` with this attention mask (a 2D
    padding mask, a 4D mask or a FlexAttention block mask) and these positions."""
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids, "use_cache": False}
    inner = unwrapped(model)
    if not chunk_size or not plain_output_layer(inner):
        return label_logprobs(model(**inputs).logits, input_ids)
    linear = inner.get_output_embeddings()
    inner.set_output_embeddings(ChunkedLabelHead(linear, input_ids[:, 1:], chunk_size))
    try:
        return model(**inputs).logits
    finally:
        inner.set_output_embeddings(linear)


class ChunkedLabelHead(torch.nn.Module):
    """Stands in for a causal LM's output layer during one forward: from the ``[N, L, H]`` final hidden states it
    returns the ``[N, L - 1]`` log-probs of ``labels`` (the next tokens), chunk by chunk. The linear layer is held
    outside the module tree and its weight read at call time: FSDP points the layer at the gathered weight."""

    def __init__(self, linear: torch.nn.Linear, labels: torch.Tensor, chunk_size: int):
        super().__init__()
        self.linear, self.labels, self.chunk_size = (linear,), labels, chunk_size

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden[:, :-1]
        logps = chunked_label_logprobs(hidden.reshape(-1, hidden.shape[-1]), self.linear[0].weight, self.labels.reshape(-1), self.chunk_size)
        return logps.view(self.labels.shape)


def unwrapped(model):
    """The transformers model inside a peft model (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def plain_output_layer(model) -> bool:
    """Whether a causal LM's logits are exactly ``hidden @ weight.T``: a bias-free linear output layer, with no logit
    scaling or soft-capping after it."""
    head = model.get_output_embeddings()
    scaled = any(getattr(model.config, name, None) for name in ("final_logit_softcapping", "logit_scale", "logits_scaling"))
    return type(head) is torch.nn.Linear and head.bias is None and not scaled
