"""Padding-free packing: the real tokens of a padded batch run as one sequence, with attention kept inside each
example by a document mask and positions restarting per example, then the label log-probs are put back in the
padded layout, so that objectives see exactly what an unpacked forward would give them.

The document mask is a FlexAttention block mask when the model uses ``attn_implementation="flex_attention"`` (its
kernels skip the masked blocks; PyTorch has its backward on GPUs only), and otherwise a dense block-diagonal causal
mask for SDPA, which works everywhere but still spends attention work on the masked pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn.attention.flex_attention import create_block_mask

from sft_research.model.logprobs import forward_outputs, plain_output_layer, unwrapped
from sft_research.model.output_layer import PositionOutput


def packed_outputs(
    model,
    input_ids: torch.Tensor,
    layout: dict[str, torch.Tensor],
    outputs: Sequence[PositionOutput],
    frozen: dict[str, torch.Tensor],
    chunk_size: int | None = 1024,
) -> dict[str, torch.Tensor]:
    """The ``outputs`` (``[N, L - 1, ...]`` each) of right-padded ``[N, L]`` sequences, computed on their real tokens
    packed in one row as ``layout`` says (:func:`sft_research.data.batch_layout.packed_layout`, computed on the host by the
    data loader, so that every shape is static and nothing waits for the device); ``frozen`` holds the
    ``[N, L - 1, ...]`` tensors the outputs read, packed alongside.

    With FlexAttention the model's ``attn_implementation`` must be ``flex_attention``; any other is given a dense mask.
    ``chunk_size`` as in :func:`~sft_research.model.output_layer.output_layer` (None: full logits).
    """
    if not plain_output_layer(unwrapped(model)):
        raise ValueError("packing needs a model whose output layer is a plain linear map")
    rows, length = input_ids.shape
    document, size = layout["document"], layout["document"].shape[0]
    packed_ids = input_ids.reshape(-1)[layout["gather"]][None]

    def same_document_causal(batch, head, query, key):
        return (document[query] == document[key]) & (query >= key)

    if unwrapped(model).config._attn_implementation == "flex_attention":
        mask = create_block_mask(same_document_causal, B=None, H=None, Q_LEN=size, KV_LEN=size, device=input_ids.device)
    else:
        index = torch.arange(size, device=input_ids.device)
        mask = same_document_causal(None, None, index[:, None], index[None, :])[None, None]
    # Position i predicts token i + 1; across a document boundary that is another document's first token: a label
    # position that ``pack`` and ``unpack`` point away from.
    packed_frozen = {
        name: with_zero(value.reshape(rows * (length - 1), *value.shape[2:]))[layout["pack"]][None] for name, value in frozen.items()
    }
    packed = forward_outputs(model, packed_ids, mask, layout["positions"][None], outputs, packed_frozen, chunk_size)
    return {name: with_zero(value[0])[layout["unpack"]] for name, value in packed.items()}


def with_zero(values: torch.Tensor) -> torch.Tensor:
    """``values`` with a zero row after the last, where layouts point the positions that have no value."""
    return torch.cat([values, values.new_zeros(1, *values.shape[1:])])
