"""Label-token log-probabilities: the one quantity every objective is built from."""

from __future__ import annotations

import torch


def label_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """``out[b, t] = log p(input_ids[b, t + 1] | input_ids[b, : t + 1])``, in float32, shape ``[B, L - 1]``."""
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return logprobs.gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Runs ``model`` on ``[N, L]`` token ids and returns their ``[N, L - 1]`` label log-probs."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False).logits
    return label_logprobs(logits, input_ids)
