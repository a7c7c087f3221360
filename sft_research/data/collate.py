"""Pads tokenized examples into batches.

Training batches are ``[B, S, L]``: S sequences per example (1 for SFT records, 2 for preference records:
chosen then rejected), so that splitting a batch into micro-batches along dim 0 keeps pairs together.
``loss_mask[b, s, t]`` is true when position t's label (token t+1) is a completion token. Frozen-model inputs that
the objective declared come as ``frozen/<name>``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from sft_research.data.batch_layout import packed_layout
from sft_research.data.buckets import bucket
from sft_research.data.tokenize import TokenizedExample


def collate_examples(
    examples: list[TokenizedExample],
    pad_token_id: int,
    micro_batch_size: int | None = None,
    pack: bool = False,
    pad_to_bucket: bool = False,
) -> dict:
    """A batch of examples: tensors, and what the host knows about them for the training step, so that it never asks
    the device: ``lengths`` (each example's longest sequence), ``example_ids``, ``completion_positions`` (per
    example, per sequence, the label positions of its completion) and ``shared_tokens`` (per example, the batch's
    :func:`shared_tokens`) as lists and, with ``pack``, one
    packed ``layout`` per micro-batch of ``micro_batch_size`` (None: the whole batch) in ``layouts``.
    ``pad_to_bucket`` pads to one of a few lengths (:func:`~sft_research.data.buckets.bucket`), for compiled steps."""
    sizes = {len(example.sequences) for example in examples}
    if len(sizes) != 1:
        raise ValueError("a batch mixes preference and SFT records; use one kind of record per dataset")
    (num_sequences,) = sizes
    lengths = [max(len(sequence.input_ids) for sequence in example.sequences) for example in examples]
    length = bucket(max(lengths)) if pad_to_bucket else max(lengths)
    shape = (len(examples), num_sequences, length)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(shape, dtype=torch.long)
    completion = torch.zeros(shape, dtype=torch.bool)
    for b, example in enumerate(examples):
        for s, sequence in enumerate(example.sequences):
            n = len(sequence.input_ids)
            input_ids[b, s, :n] = torch.tensor(sequence.input_ids)
            attention_mask[b, s, :n] = 1
            completion[b, s, :n] = torch.tensor(sequence.completion_mask)
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "loss_mask": completion[..., 1:],
        "example_id": torch.tensor([example.example_id for example in examples]),
        "quality": torch.tensor([example.quality for example in examples], dtype=torch.float32),
        "lengths": lengths,
        "example_ids": [example.example_id for example in examples],
        "completion_positions": [[label_positions(sequence.completion_mask) for sequence in example.sequences] for example in examples],
        "shared_tokens": [shared_tokens([s for example in examples for s in example.sequences])] * len(examples),
    }
    if pack:
        step = micro_batch_size or len(examples)
        micro = [
            [s.documents or [len(s.input_ids)] for example in examples[first : first + step] for s in example.sequences]
            for first in range(0, len(examples), step)
        ]
        batch["layouts"] = [packed_layout(rows, length, bucket(sum(map(sum, rows)))) for rows in micro]
    for name in examples[0].frozen:
        collated = collate_frozen([example.frozen[name] for example in examples], length - 1)
        for key, value in collated.items() if isinstance(collated, dict) else [(None, collated)]:
            batch[f"frozen/{name}" if key is None else f"frozen/{name}/{key}"] = value
    return batch


def label_positions(completion_mask: list[bool]) -> list[int]:
    """The label positions whose label is a completion token (position t's label is token t + 1)."""
    return [t for t, completion in enumerate(completion_mask[1:]) if completion]


def shared_tokens(sequences: list) -> int:
    """How many first tokens all the sequences share, stopping before the position that predicts any sequence's first
    completion token (and leaving each sequence a token of its own)."""
    first = sequences[0].input_ids
    limit = min((s.completion_mask.index(True) if True in s.completion_mask else len(s.input_ids)) - 1 for s in sequences)
    count = 0
    while count < limit and all(s.input_ids[count] == first[count] for s in sequences):
        count += 1
    return count


def collate_frozen(values: list, label_positions: int, device: torch.device | None = None) -> torch.Tensor | dict[str, torch.Tensor]:
    """Scalars into ``[B]``; tensors whose dim 1 runs over label positions into ``[B, S, T, ...]``, zero-padded and in
    their own dtype (token ids stay integers); dicts of such tensors tensor by tensor."""
    if isinstance(values[0], dict):
        return {key: collate_frozen([value[key] for value in values], label_positions, device) for key in values[0]}
    if values[0].dim() == 0:
        return torch.stack(values).float().to(device)
    out = values[0].new_zeros(len(values), values[0].shape[0], label_positions, *values[0].shape[2:], device=device)
    for b, value in enumerate(values):
        out[b, :, : value.shape[1]] = value[:, :label_positions]
    return out


def collate_prompts(prompts: list[tuple[int, list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Left-pads prompts for batched generation; ``index`` says which held-out item each row is."""
    length = max(len(ids) for _, ids in prompts)
    input_ids = torch.full((len(prompts), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for row, (_, ids) in enumerate(prompts):
        input_ids[row, length - len(ids) :] = torch.tensor(ids)
        attention_mask[row, length - len(ids) :] = 1
    return {"prompt_ids": input_ids, "prompt_attention_mask": attention_mask, "index": torch.tensor([i for i, _ in prompts])}


def prompt_batches(chat_tokenizer, prompts: list[str], pad_token_id: int, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """The prompts rendered as for training (``chat_tokenizer``: a :class:`~sft_research.data.tokenize.ChatTokenizer`) and
    left-padded for generation, ``batch_size`` at a time; each batch's ``index`` holds its prompts' positions in
    ``prompts``."""
    for first in range(0, len(prompts), batch_size):
        yield collate_prompts(
            [(i, chat_tokenizer.prompt_ids(p)) for i, p in enumerate(prompts[first : first + batch_size], first)], pad_token_id
        )


def micro_batches(batch: dict, size: int | None) -> Iterator[dict]:
    """A collated batch's micro-batches of ``size`` examples (None: the whole batch), each with its packed layout."""
    count = len(batch["lengths"])
    size = size or count
    for index, first in enumerate(range(0, count, size)):
        micro = {key: value[first : first + size] for key, value in batch.items() if key != "layouts"}
        if "layouts" in batch:
            micro["layout"] = batch["layouts"][index]
        yield micro
