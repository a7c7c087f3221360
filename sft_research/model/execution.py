"""How the policy's forward pass runs on a batch: packed or padded, its output layer chunked or whole, compiled or not.
Speed and memory only: every setting gives the same outputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sft_research.model.logprobs import sequence_outputs
from sft_research.model.output_layer import PositionOutput
from sft_research.model.packing import packed_sequence_outputs


@dataclass
class ExecutionConfig:
    """How the policy's forward pass runs: speed and memory, never the loss.

    Args:
        packing: run each batch's real tokens as one padding-free sequence, attention kept within each example
            (FlexAttention with ``attn_implementation: flex_attention`` on GPUs, a dense document mask otherwise).
        logprob_chunk_size: run the output layer this many positions at a time, never materialising the full
            ``[tokens, vocab]`` logits (None: full logits).
        compile: ``torch.compile`` the model.
    """

    packing: bool = False
    logprob_chunk_size: int | None = 1024
    compile: bool = False


def batch_outputs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    outputs: Sequence[PositionOutput],
    reads: dict[str, torch.Tensor],
    execution: ExecutionConfig,
) -> dict[str, torch.Tensor]:
    """The ``[B, S, T, ...]`` outputs of a training batch's ``[B, S, L]`` sequences (T = L - 1 label positions), with
    the ``[B, S, T, ...]`` frozen tensors they read; positions past the batch's longest sequence are zero."""
    b, s, length = input_ids.shape
    used = int(attention_mask.sum(-1).max())
    ids, mask = input_ids[..., :used].reshape(b * s, used), attention_mask[..., :used].reshape(b * s, used)
    reads = {name: value[:, :, : used - 1].reshape(b * s, used - 1, *value.shape[3:]) for name, value in reads.items()}
    run = packed_sequence_outputs if execution.packing else sequence_outputs
    values = run(model, ids, mask, outputs, reads, execution.logprob_chunk_size)
    padded = {}
    for name, value in values.items():
        padded[name] = value.new_zeros(b, s, length - 1, *value.shape[2:])
        padded[name][:, :, : used - 1] = value.reshape(b, s, used - 1, *value.shape[2:])
    return padded
