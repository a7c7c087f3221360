"""Padding-free packing: the real tokens of a padded batch run as one sequence, with attention kept inside each
example by a document mask and positions restarting per example, then the label log-probs are put back in the
padded layout, so that objectives see exactly what an unpacked forward would give them.

The document mask is a FlexAttention block mask when the model uses ``attn_implementation="flex_attention"`` (its
kernels skip the masked blocks; PyTorch has its backward on GPUs only), and otherwise a dense block-diagonal causal
mask for SDPA, which works everywhere but still spends attention work on the masked pairs.
"""

from __future__ import annotations

import torch
from torch.nn.attention.flex_attention import create_block_mask

from collections.abc import Sequence

from sft_research.model.logprobs import LABELS_ONLY, forward_outputs, plain_output_layer, unwrapped
from sft_research.model.output_layer import PositionOutput


def packed_sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, chunk_size: int | None = 1024) -> torch.Tensor:
    """``[N, L - 1]`` label log-probs of right-padded ``[N, L]`` sequences, computed on their packed real tokens."""
    return packed_sequence_outputs(model, input_ids, attention_mask, LABELS_ONLY, {}, chunk_size)["logps"]


def packed_sequence_outputs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    outputs: Sequence[PositionOutput],
    frozen: dict[str, torch.Tensor],
    chunk_size: int | None = 1024,
) -> dict[str, torch.Tensor]:
    """The ``outputs`` (``[N, L - 1, ...]`` each) of right-padded ``[N, L]`` sequences, computed on their packed real
    tokens; ``frozen`` holds the ``[N, L - 1, ...]`` tensors they read, packed alongside.

    With FlexAttention the model's ``attn_implementation`` must be ``flex_attention``; any other is given a dense mask.
    ``chunk_size`` as in :func:`~sft_research.model.output_layer.output_layer` (None: full logits).
    """
    if not plain_output_layer(unwrapped(model)):
        raise ValueError("packing needs a model whose output layer is a plain linear map")
    lengths = attention_mask.sum(-1)
    real = attention_mask.bool()
    packed_ids = input_ids[real][None]
    document = torch.repeat_interleave(torch.arange(len(lengths), device=input_ids.device), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    positions = (torch.arange(packed_ids.shape[1], device=input_ids.device) - starts[document])[None]
    total = packed_ids.shape[1]

    def same_document_causal(batch, head, query, key):
        return (document[query] == document[key]) & (query >= key)

    if unwrapped(model).config._attn_implementation == "flex_attention":
        mask = create_block_mask(same_document_causal, B=None, H=None, Q_LEN=total, KV_LEN=total, device=input_ids.device)
    else:
        index = torch.arange(total, device=input_ids.device)
        mask = same_document_causal(None, None, index[:, None], index[None, :])[None, None]
    # Position i predicts token i + 1; across a document boundary that is another example's first token: dropped below.
    label_positions = real[:, 1:] & real[:, :-1]
    source = (starts[:, None] + torch.arange(input_ids.shape[1] - 1, device=input_ids.device)[None])[label_positions]
    packed_frozen = {}
    for name, value in frozen.items():
        packed_frozen[name] = value.new_zeros(1, total - 1, *value.shape[2:])
        packed_frozen[name][0, source] = value[label_positions]
    packed = forward_outputs(model, packed_ids, mask, positions, outputs, packed_frozen, chunk_size)
    unpacked = {}
    for name, value in packed.items():
        unpacked[name] = value.new_zeros(input_ids.shape[0], input_ids.shape[1] - 1, *value.shape[2:])
        unpacked[name][label_positions] = value[0, source]
    return unpacked
