"""Multiple choice by log-likelihood, as lm-eval's ``multiple_choice`` tasks score it: the option the model finds most
likely after the prompt is its answer."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sft_research.bench.heldout import HeldOutSet
from sft_research.bench.probes.base import ProbeContext
from sft_research.bench.scorers.base import Scorer, held_out_set
from sft_research.data.sources import RawRecord
from sft_research.errors import DataError
from sft_research.model.logprobs import label_logprobs


@dataclass
class MultipleChoice(Scorer):
    """1.0 where the reference is the option of highest log-likelihood, else 0.0: each option's tokens scored right
    after the prompt as rendered for generation (after the chat template's assistant header), summed (lm-eval's
    ``acc``), or divided by the option's length in characters (``length_normalized``: lm-eval's ``acc_norm``); ties go
    to the first option, as lm-eval's argmax. No answer is generated (``max_new_tokens`` is not used).

    Each held-out row lists its options as ``choices`` (at least two strings) and names the right one as
    ``completion``: its text, or its index (from 0).

    Args:
        length_normalized: compare log-likelihoods per character of the option.
    """

    length_normalized: bool = False

    @property
    def label(self) -> str:
        return "multiple choice" + (", length-normalised" if self.length_normalized else "")

    def check(self, task) -> None:
        for record in held_out_set(self, task).records:
            self.choices(record)

    def choices(self, record: RawRecord) -> tuple[list[str], int]:
        """The row's options and the index of the right one."""
        options = record.fields.get(HeldOutSet.CHOICES)
        if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, str) and o for o in options):
            raise DataError(record.source, "must list at least two options, each a non-empty string", record.row, HeldOutSet.CHOICES)
        answer = record.fields.get(HeldOutSet.REFERENCE)
        if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(options):
            return options, answer
        if isinstance(answer, str) and answer in options:
            return options, options.index(answer)
        raise DataError(
            record.source,
            f"must be one of the row's {len(options)} choices (its text, or its index from 0), got {answer!r}",
            record.row,
            HeldOutSet.REFERENCE,
        )

    @torch.no_grad()
    def measure(self, model, context: ProbeContext, max_new_tokens: int) -> list[float]:
        task = held_out_set(self, context.task)
        items = [self.choices(record) for record in task.records]
        pairs = [
            (context.chat_tokenizer.prompt_ids(prompt), context.tokenizer(option, add_special_tokens=False)["input_ids"])
            for prompt, (options, _) in zip(task.eval_prompts(), items)
            for option in options
        ]
        scores = iter(continuation_logprobs(model, pairs, context.tokenizer.pad_token_id, context.batch_size))
        values = []
        for options, right in items:
            likelihoods = [next(scores) / (len(option) if self.length_normalized else 1) for option in options]
            chosen = max(range(len(options)), key=likelihoods.__getitem__)  # the first of equals, as numpy's argmax
            values.append(float(chosen == right))
        return values


def continuation_logprobs(model, pairs: list[tuple[list[int], list[int]]], pad_token_id: int, batch_size: int) -> list[float]:
    """Per (context, continuation) pair of token ids, the summed log-probability of the continuation after the context,
    ``batch_size`` pairs to a forward pass (right-padded)."""
    device = next(model.parameters()).device
    sums = []
    for first in range(0, len(pairs), batch_size):
        batch = pairs[first : first + batch_size]
        length = max(len(context) + len(continuation) for context, continuation in batch)
        ids = torch.full((len(batch), length), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), length), dtype=torch.long)
        for row, (context, continuation) in enumerate(batch):
            ids[row, : len(context) + len(continuation)] = torch.tensor(context + continuation)
            mask[row, : len(context) + len(continuation)] = 1
        logprobs = label_logprobs(model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits, ids.to(device))
        # logprobs[:, t] scores token t + 1: the continuation's tokens are scored at len(context) - 1 onwards.
        sums += [logprobs[row, len(c) - 1 : len(c) + len(k) - 1].sum().item() for row, (c, k) in enumerate(batch)]
    return sums
