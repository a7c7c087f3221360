"""Per-position outputs of a causal LM (the label tokens' log-probs first), from one forward of the model.

They are always computed through the model's own forward, whatever wraps it (peft, an FSDP unit, torch.compile):
its output layer is swapped, for that call only, for one that returns the outputs chunk by chunk
(:mod:`~sft_research.model.output_layer`), so the ``[tokens, vocab]`` logits never exist and FSDP gathers the output
weight as it does for any forward of the unit that holds it. A model whose logits are not a plain linear map of the
final hidden states (soft-capped, scaled) gets its full logits computed, and the outputs read from them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sft_research.model.output_layer import LabelLogprobs, PositionOutput, output_layer, outputs_from_logits
from sft_research.model.shared_prefix import CACHE_ARGUMENT

LABELS_ONLY = (LabelLogprobs(),)


def label_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """``out[b, t] = log p(input_ids[b, t + 1] | input_ids[b, : t + 1])``, in float32, shape ``[B, L - 1]``."""
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return logprobs.gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """Runs ``model`` on ``[N, L]`` right-padded token ids and returns their ``[N, L - 1]`` label log-probs."""
    return sequence_outputs(model, input_ids, attention_mask, LABELS_ONLY, {}, chunk_size)["logps"]


def sequence_outputs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    outputs: Sequence[PositionOutput],
    frozen: dict[str, torch.Tensor],
    chunk_size: int | None,
    scored: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The ``outputs`` (``[N, L - 1, ...]`` each) of ``[N, L]`` right-padded sequences; ``frozen`` holds the
    ``[N, L - 1, ...]`` tensors they read. With ``scored`` (flat indices over ``[N, L - 1]``) the output layer runs at
    those positions only, and the outputs are 0 elsewhere."""
    # Under a causal mask no real token of a right-padded row sees the padding after it, and its position is its
    # index: the padding mask and positions change nothing the outputs read. Without them, transformers does not ask
    # the device whether the batch is padded or packed (a host sync per forward), and attention takes its causal kernel.
    return forward_outputs(model, input_ids, None, None, outputs, frozen, chunk_size, scored)


def prefix_cached_outputs(
    model,
    input_ids: torch.Tensor,
    prefix_length: int,
    outputs: Sequence[PositionOutput],
    frozen: dict[str, torch.Tensor],
    chunk_size: int | None,
    scored: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """:func:`sequence_outputs` of ``[N, L]`` right-padded sequences that all start with the same ``prefix_length``
    tokens, which run once (one row, with gradients), their keys and values repeated over the rows; the rest of each
    row runs after them. The outputs at the prefix's label positions are 0: none of them is scored. ``scored``
    indexes the ``[N, L - 1 - prefix_length]`` label positions after the prefix."""
    rows, length = input_ids.shape
    head = model(input_ids=input_ids[:1, :prefix_length], use_cache=True)
    cache = head.cache if CACHE_ARGUMENT == "cache" else head.past_key_values
    cache.batch_repeat_interleave(rows)
    positions = torch.arange(prefix_length, length, device=input_ids.device).expand(rows, -1)
    after = {name: value[:, prefix_length:] for name, value in frozen.items()}
    rest = forward_outputs(model, input_ids[:, prefix_length:], None, positions, outputs, after, chunk_size, scored, cache=cache)
    return {name: torch.cat([value.new_zeros(rows, prefix_length, *value.shape[2:]), value], dim=1) for name, value in rest.items()}


def forward_outputs(
    model,
    input_ids: torch.Tensor,
    attention_mask,
    position_ids: torch.Tensor | None,
    outputs: Sequence[PositionOutput],
    frozen: dict[str, torch.Tensor],
    chunk_size: int | None,
    scored: torch.Tensor | None = None,
    cache=None,
) -> dict[str, torch.Tensor]:
    """The ``[N, L - 1, ...]`` outputs at the label positions of ``input_ids`` from one forward of ``model``, with this
    attention mask (a 2D padding mask, a 4D mask or a FlexAttention block mask, or None: causal) and these positions
    (None: each token's index), after the tokens whose keys and values ``cache`` holds (None: none); ``scored`` as in
    :func:`sequence_outputs`."""
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids, "use_cache": cache is not None}
    if cache is not None:
        inputs[CACHE_ARGUMENT] = cache
    labels = input_ids[:, 1:]
    inner = unwrapped(model)
    if not plain_output_layer(inner):
        logits = model(**inputs).logits[:, :-1]
        hidden, flat_labels, flat = at_scored(logits.reshape(-1, logits.shape[-1]), labels, frozen, scored)
        values = dict(zip((output.name for output in outputs), outputs_from_logits(hidden, flat_labels, outputs, flat)))
        return everywhere(values, labels.shape, scored)
    linear = inner.get_output_embeddings()
    inner.set_output_embeddings(OutputsHead(linear, labels, outputs, frozen, chunk_size, scored))
    try:
        return model(**inputs).logits
    finally:
        inner.set_output_embeddings(linear)


class OutputsHead(torch.nn.Module):
    """Stands in for a causal LM's output layer during one forward: from the ``[N, L, H]`` final hidden states it
    returns the outputs at the label positions, a dict of ``[N, L - 1, ...]`` tensors, chunk by chunk. The linear layer is
    held outside the module tree and its weight read at call time: FSDP points the layer at the gathered weight."""

    def __init__(self, linear: torch.nn.Linear, labels, outputs, frozen: dict[str, torch.Tensor], chunk_size: int | None, scored=None):
        super().__init__()
        self.linear, self.labels, self.outputs, self.frozen = (linear,), labels, tuple(outputs), frozen
        self.chunk_size, self.scored = chunk_size, scored

    def forward(self, hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = hidden[:, :-1]
        hidden, labels, flat = at_scored(hidden.reshape(-1, hidden.shape[-1]), self.labels, self.frozen, self.scored)
        values = output_layer(hidden, self.linear[0].weight, labels, self.outputs, flat, self.chunk_size)
        return everywhere(values, self.labels.shape, self.scored)


def at_scored(rows: torch.Tensor, labels: torch.Tensor, frozen: dict[str, torch.Tensor], scored: torch.Tensor | None):
    """The ``[N * T, ...]`` rows (hidden states or logits), the labels and the ``[N, T, ...]`` frozen tensors, flat,
    at the scored positions (None: all)."""
    flat = {name: value.reshape(-1, *value.shape[2:]) for name, value in frozen.items()}
    if scored is None:
        return rows, labels.reshape(-1), flat
    return rows[scored], labels.reshape(-1)[scored], {name: value[scored] for name, value in flat.items()}


def everywhere(values: dict[str, torch.Tensor], shape: torch.Size, scored: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Outputs at the scored positions (``[n, ...]``; None: at all of them) as ``[N, T, ...]``, 0 where not scored."""
    if scored is not None:
        values = {name: value.new_zeros(shape.numel(), *value.shape[1:]).index_copy(0, scored, value) for name, value in values.items()}
    return {name: value.view(*shape, *value.shape[1:]) for name, value in values.items()}


def unwrapped(model):
    """The transformers model inside a peft model (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def plain_output_layer(model) -> bool:
    """Whether a causal LM's logits are exactly ``hidden @ weight.T``: a bias-free linear output layer, with no logit
    scaling or soft-capping after it."""
    head = model.get_output_embeddings()
    scaled = any(getattr(model.config, name, None) for name in ("final_logit_softcapping", "logit_scale", "logits_scaling"))
    return type(head) is torch.nn.Linear and head.bias is None and not scaled
