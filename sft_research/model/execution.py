"""How the policy's forward pass runs on a batch: packed or padded, its output layer chunked or whole, compiled or not.
Speed and memory only: every setting gives the same outputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sft_research.data.buckets import bucket
from sft_research.model.logprobs import prefix_cached_outputs, sequence_outputs
from sft_research.model.output_layer import PositionOutput
from sft_research.model.packing import packed_outputs
from sft_research.model.shared_prefix import MIN_SHARED


@dataclass
class ExecutionConfig:
    """How the policy's forward pass runs: speed and memory, never the loss.

    Args:
        packing: run each batch's real tokens as one padding-free sequence, attention kept within each example
            (FlexAttention with ``attn_implementation: flex_attention`` on GPUs, a dense document mask otherwise).
        logprob_chunk_size: run the output layer this many positions at a time, never materialising the full
            ``[tokens, vocab]`` logits (None: full logits).
        compile: ``torch.compile`` the model.
        shared_prefix: run the tokens that every sequence of a batch starts with (a system turn, a task's
            instruction) once, their keys and values repeated over the batch, so that each sequence runs only its own
            tokens: the same loss and gradients up to rounding (``tests/test_shared_prefix_training.py``). For padded,
            uncompiled steps in one process, without activation checkpointing, for objectives that read the completion
            positions only (:func:`check_shared_prefix` refuses the others).
    """

    packing: bool = False
    logprob_chunk_size: int | None = 1024
    compile: bool = False
    shared_prefix: bool = False


def trimmed(batch: dict, frozen: dict, execution: ExecutionConfig, completion_only: bool = False) -> tuple[dict[str, torch.Tensor], dict]:
    """A (micro-)batch's tensors, and its frozen inputs, cut to its longest sequence (``lengths``, known on the host),
    rounded up to a bucket when compiled, so that a compiled step sees a few shapes only; a packed batch keeps its
    full width (its host-made ``layout`` addresses it) and brings the layout. A padded, uncompiled batch brings
    ``scored`` where ``completion_only``: its completion positions as flat indices over ``[B * S, T]``, made on the
    host from ``completion_positions``, so that the output layer runs there only (a compiled step would need a graph
    per count); with ``execution.shared_prefix``, also ``prefix_length``, the tokens every sequence starts with (the
    collator's ``shared_tokens``), and ``scored`` then indexes the label positions after them."""
    length = batch["input_ids"].shape[-1]
    longest = max(batch["lengths"])
    used = length if execution.packing else min(length, bucket(longest) if execution.compile else longest)
    tensors = {"input_ids": batch["input_ids"][..., :used], "attention_mask": batch["attention_mask"][..., :used]}
    tensors |= {"loss_mask": batch["loss_mask"][..., : used - 1], "quality": batch["quality"]}
    if execution.packing:
        tensors["layout"] = batch["layout"]
    elif completion_only and not execution.compile:
        # The shared tokens' label positions are never scored: the collator stops the prefix before any completion.
        shared = min(batch["shared_tokens"]) if execution.shared_prefix else 0
        if shared >= MIN_SHARED:
            tensors["prefix_length"] = shared
        else:
            shared = 0
        rows = [positions for example in batch["completion_positions"] for positions in example]
        width = used - 1 - shared
        flat = [row * width + t - shared for row, positions in enumerate(rows) for t in positions if t < used - 1]
        tensors["scored"] = torch.tensor(flat, dtype=torch.long).to(batch["input_ids"].device, non_blocking=True)

    def cut(value):  # per-position values run over label positions on dim 2; scalars ([B]) stay
        return value[:, :, : used - 1] if value.dim() >= 3 else value

    frozen = {name: {k: cut(v) for k, v in value.items()} if isinstance(value, dict) else cut(value) for name, value in frozen.items()}
    return tensors, frozen


def batch_outputs(
    model, tensors: dict, outputs: Sequence[PositionOutput], reads: dict[str, torch.Tensor], execution: ExecutionConfig
) -> dict[str, torch.Tensor]:
    """The ``[B, S, T, ...]`` outputs of a (micro-)batch's ``[B, S, L]`` sequences (T = L - 1 label positions, the
    batch as :func:`trimmed` cut it), with the ``[B, S, T, ...]`` frozen tensors they read."""
    input_ids = tensors["input_ids"]
    b, s, length = input_ids.shape
    rows = {name: value.reshape(b * s, length - 1, *value.shape[3:]) for name, value in reads.items()}
    ids = input_ids.reshape(b * s, length)
    if execution.packing:
        values = packed_outputs(model, ids, tensors["layout"], outputs, rows, execution.logprob_chunk_size)
    else:
        chunk, scored = execution.logprob_chunk_size, tensors.get("scored")
        if "prefix_length" in tensors:
            values = prefix_cached_outputs(model, ids, tensors["prefix_length"], outputs, rows, chunk, scored)
        else:
            values = sequence_outputs(model, ids, tensors["attention_mask"].reshape(b * s, length), outputs, rows, chunk, scored)
    return {name: value.reshape(b, s, length - 1, *value.shape[2:]) for name, value in values.items()}


def check_shared_prefix(execution: ExecutionConfig, objective, world_size: int, checkpointing: bool) -> None:
    """Refuses ``execution.shared_prefix`` where the prefix cannot run once: a packed or compiled step (their own
    layouts and static shapes), several processes (one forward before the batch's would break DDP's and FSDP's
    bookkeeping), activation checkpointing (transformers then ignores the cache), and an objective that reads the
    prompt's positions (it would get zeros there)."""
    if not execution.shared_prefix:
        return
    reasons = {
        "packing": execution.packing,
        "compile": execution.compile,
        f"{world_size} processes": world_size > 1,
        "activation checkpointing (model.pretrained.gradient_checkpointing)": checkpointing,
        f"{type(objective).__name__}, which reads outside the completion (reads_outside_mask)": objective.reads_outside_mask,
    }
    found = [reason for reason, present in reasons.items() if present]
    if found:
        raise ValueError(f"model.execution.shared_prefix runs a padded step in one process only; this run has {', '.join(found)}")
