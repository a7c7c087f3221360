"""Frozen-model inputs: what an objective declares it needs from frozen models.

An objective lists :class:`FrozenInput` s in its ``frozen_inputs``; the training module computes each one on every
training example before the first step (through the on-disk cache of :mod:`sft_research.frozen.cache`), or on every
batch, the collator pads them into the batch, and the objective reads them from ``ObjectiveInputs.frozen[name]``. A
new frozen quantity is one new ``FrozenInput`` subclass: nothing else changes.

A per-example value is a scalar, a tensor whose dim 1 runs over label positions (``[S, L - 1, ...]``, like label
log-probs), or a dict of such tensors; the collator pads them to the batch's ``[B, S, T, ...]``.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path

import torch

from sft_research.checkpoints.names import load_tokenizer, resolve
from sft_research.data.datamodule import read_chat_template
from sft_research.data.records import Conversation
from sft_research.data.tokenize import ChatTokenizer, Sequence, TokenizedExample
from sft_research.errors import DataError
from sft_research.frozen.cache import mean_completion_logprob
from sft_research.frozen.context import FrozenContext
from sft_research.model.loading import ModelConfig


class FrozenInput(ABC):
    """One value per training example from frozen models: a scalar, a ``[S, L - 1, ...]`` tensor over label
    positions, or several such tensors by name. ``name`` is its key in ``ObjectiveInputs.frozen``.

    ``compute`` runs its frozen models through the context (:class:`~sft_research.frozen.context.FrozenContext`),
    which caches on disk and computes once, each process taking its share of the batches, or runs them on every batch
    (``on_the_fly``, set for the run by ``model.frozen.mode``, or by ``on_the_fly_only`` for a quantity too large to
    cache), and counts what they score.
    """

    name: str
    on_the_fly_only: bool = False

    def check(self, policy_start: str) -> None:  # noqa: B027 (a hook: most inputs have nothing to refuse)
        """Refuses settings that would change what the objective means, before anything is loaded."""

    @abstractmethod
    def compute(self, examples: list[TokenizedExample], context: FrozenContext) -> list[torch.Tensor | dict[str, torch.Tensor]]:
        """One value per example, in order."""


class ReferenceLogprobs(FrozenInput):
    """``ref_logps``: ``[S, L - 1]`` label log-probs of each example's sequences under the frozen reference model."""

    name = "ref_logps"

    def compute(self, examples: list[TokenizedExample], context: FrozenContext) -> list[torch.Tensor]:
        return context.label_logprobs(context.reference, examples, context.chat_tokenizer.tokenizer.pad_token_id)


class BaselineScores(FrozenInput):
    """``baseline_score``: the mean over baseline models of each one's length-normalised log-likelihood of the
    response (PoFT's r̄). Each baseline reads the record through its own tokenizer and chat template (or the one
    ``chat_templates`` gives it), and, as the official scorer, only the tokens of the assistant's content count:
    not the template's end-of-turn tokens or the newline after them.

    Args:
        baselines: the baseline models; at least one must differ from the policy's start.
        chat_templates: a chat template (Jinja, or a file holding one) for some baselines, by name, in place of their
            own: the official scorer's hand-built prompts have no system header, which Llama-3.1's template adds.
    """

    name = "baseline_score"

    def __init__(self, baselines: list[str], chat_templates: dict[str, str] | None = None):
        self.baselines = list(baselines)
        self.chat_templates = dict(chat_templates or {})
        unknown = set(self.chat_templates) - set(self.baselines)
        if unknown:
            raise ValueError(f"chat templates given for {sorted(unknown)}, which are not among the baselines {self.baselines}")

    def check(self, policy_start: str) -> None:
        # Against its own start alone, PoFT's weight is 0.5 for every example at the first step whatever its quality,
        # and then falls fastest on the examples the model fits best, the opposite of the paper's soft data filter.
        if not any(not same_model(baseline, policy_start) for baseline in self.baselines):
            raise ValueError(
                f"PoFT needs at least one baseline model that is not the model being trained at its start "
                f"({policy_start}); got {self.baselines}. Use baselines that know the task better than the start model, "
                "e.g. a model fine-tuned on clean demonstrations by an earlier pipeline stage (see papers/poft.md)"
            )

    def compute(self, examples: list[TokenizedExample], context: FrozenContext) -> list[torch.Tensor]:
        scores = torch.zeros(len(examples), dtype=torch.float64)
        for baseline in self.baselines:
            rendered = baseline_examples(baseline, examples, context.chat_tokenizer, self.chat_templates.get(baseline))
            config = ModelConfig(baseline, dtype=context.policy.dtype)
            logps = context.label_logprobs(config, rendered, load_tokenizer(baseline).pad_token_id)
            scores += torch.tensor([mean_completion_logprob(lp, ex) for lp, ex in zip(logps, rendered)], dtype=torch.float64)
        return list((scores / len(self.baselines)).float().unbind())


def same_model(a: str, b: str) -> bool:
    """Whether two model names are the same checkpoint: the same name, the same resolved folder (an ``embedded:`` name
    and the folder it converts to), or folders holding the same files (by size, and the content at both ends)."""
    if a == b:
        return True
    paths = [Path(resolve(name)).expanduser() for name in (a, b)]
    if not all(path.exists() for path in paths):
        return False
    return paths[0].resolve() == paths[1].resolve() or files_signature(paths[0]) == files_signature(paths[1])


def files_signature(folder: Path) -> str:
    """A quick signature of a checkpoint folder's files: names, sizes, and the first and last MiB of each."""
    digest = hashlib.blake2b(digest_size=16)
    for file in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}".encode())
        with file.open("rb") as handle:
            digest.update(handle.read(1 << 20))
            handle.seek(max(0, size - (1 << 20)))
            digest.update(handle.read(1 << 20))
    return digest.hexdigest()


def baseline_examples(
    baseline: str, examples: list[TokenizedExample], target: ChatTokenizer, chat_template: str | None = None
) -> list[TokenizedExample]:
    """The training examples as a baseline model reads them: its own tokenizer and chat template (``chat_template``
    in its place; plain text where it has none), whatever the target's prompt format, the same part of each
    response that the target trains on, and its assistant content alone marked to be scored."""
    tokenizer = load_tokenizer(baseline)
    if chat_template is not None:
        tokenizer.chat_template = read_chat_template(chat_template)
    prompt_format = "chat" if tokenizer.chat_template else "plain"
    chat_tokenizer = ChatTokenizer(tokenizer, prompt_format, max_length=2**31 - 1, scaffolding_in_completion=False)
    rendered = []
    for example in examples:
        record = example.record
        if not isinstance(record, Conversation):
            raise DataError(example.raw.source, "baseline scores are for SFT records, got a preference pair", example.raw.row)
        kept = example.sequences[0].kept_characters
        try:
            if kept is None:
                sequence = chat_tokenizer.render(record.messages)
            else:
                sequence = chat_tokenizer.render(target.kept_messages(record.messages, kept), finished=False)
        except ValueError as error:
            raise DataError(example.raw.source, f"baseline {baseline}: {error}", example.raw.row) from error
        if not any(sequence.completion_mask):
            raise DataError(example.raw.source, f"baseline {baseline}: no response token left to score", example.raw.row)
        rendered.append(
            TokenizedExample(
                example.example_id, [Sequence(sequence.input_ids, sequence.completion_mask)], example.quality, example.raw, record
            )
        )
    return rendered
