"""Pads tokenized examples into batches.

Training batches are ``[B, S, L]``: S sequences per example (1 for SFT records, 2 for preference records:
chosen then rejected), so that splitting a batch into micro-batches along dim 0 keeps pairs together.
``loss_mask[b, s, t]`` is true when position t's label (token t+1) is a completion token.
"""

from __future__ import annotations

import torch

from sft_research.data.tokenize import TokenizedExample


def collate_examples(examples: list[TokenizedExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    sizes = {len(example.sequences) for example in examples}
    if len(sizes) != 1:
        raise ValueError("a batch mixes preference and SFT records; use one kind of record per dataset")
    (num_sequences,) = sizes
    length = max(len(sequence.input_ids) for example in examples for sequence in example.sequences)
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
    }
    if examples[0].ref_logps is not None:
        ref_logps = torch.zeros(len(examples), num_sequences, length - 1)
        for b, example in enumerate(examples):
            ref_logps[b, :, : example.ref_logps.shape[-1]] = example.ref_logps
        batch["ref_logps"] = ref_logps
    if examples[0].baseline_score is not None:
        batch["baseline_score"] = torch.tensor([example.baseline_score for example in examples], dtype=torch.float32)
    return batch


def collate_prompts(prompts: list[tuple[int, list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Left-pads prompts for batched generation; ``index`` says which held-out item each row is."""
    length = max(len(ids) for _, ids in prompts)
    input_ids = torch.full((len(prompts), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for row, (_, ids) in enumerate(prompts):
        input_ids[row, length - len(ids) :] = torch.tensor(ids)
        attention_mask[row, length - len(ids) :] = 1
    return {"prompt_ids": input_ids, "prompt_attention_mask": attention_mask, "index": torch.tensor([i for i, _ in prompts])}
