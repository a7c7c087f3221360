"""Label-token log-probs: the one quantity every objective is built from."""

from __future__ import annotations

import torch

from sft_research.model.chunked_logprobs import chunked_label_logprobs


def label_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """``out[b, t] = log p(input_ids[b, t + 1] | input_ids[b, : t + 1])``, in float32, shape ``[B, L - 1]``."""
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return logprobs.gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """Runs ``model`` on ``[N, L]`` token ids and returns their ``[N, L - 1]`` label log-probs.

    With ``chunk_size``, the output layer runs on that many tokens at a time and the full logits never exist (for
    models whose output layer is a plain linear map; others fall back to full logits).
    """
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids, "use_cache": False}
    head = output_layer(model) if chunk_size else None
    if head is None:
        return label_logprobs(model(**inputs).logits, input_ids)
    decoder, weight = head
    hidden = decoder(**inputs).last_hidden_state[:, :-1]
    labels = input_ids[:, 1:]
    logps = chunked_label_logprobs(hidden.reshape(-1, hidden.shape[-1]), weight, labels.reshape(-1), chunk_size)
    return logps.view(labels.shape)


def output_layer(model):
    """The decoder stack and the output weight of a causal LM whose logits are exactly ``hidden @ weight.T``."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # unwrap peft
    head = inner.get_output_embeddings()
    config = inner.config
    plain = type(head) is torch.nn.Linear and head.bias is None
    scaled = any(getattr(config, name, None) for name in ("final_logit_softcapping", "logit_scale", "logits_scaling"))
    if not plain or scaled or inner.base_model is inner:
        return None
    return inner.base_model, head.weight
