"""Turns typed records into token ids and a completion mask, under an explicit truncation policy.

The completion mask is true on the tokens the model must learn to produce: the assistant's text and the
end-of-turn/EOS token that teaches it to stop. Prompt, chat-template scaffolding and padding are excluded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from sft_research.data.errors import DataError
from sft_research.data.records import Conversation, Message, Preference
from sft_research.data.sources import RawRecord

PromptFormat = Literal["chat", "plain"]
Truncation = Literal["error", "truncate_completion", "truncate_prompt", "drop"]


@dataclass
class Sequence:
    input_ids: list[int]
    completion_mask: list[bool]


@dataclass
class TokenizedExample:
    """One training example. Frozen-model inputs are attached before training when the objective needs them."""

    example_id: int
    sequences: list[Sequence]  # one for SFT records, [chosen, rejected] for preference records
    quality: float
    raw: RawRecord
    ref_logps: torch.Tensor | None = None  # [S, L - 1] under the frozen reference
    baseline_score: float | None = None


@dataclass
class TruncationReport:
    """Which rows were truncated or dropped, so that nothing happens silently."""

    truncated: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = []
        for name, rows in (("truncated", self.truncated), ("dropped", self.dropped)):
            if rows:
                shown = ", ".join(rows[:5]) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
                parts.append(f"{len(rows)} {name} ({shown})")
        return "; ".join(parts) or "no examples truncated or dropped"


class Tokenizer:
    """Renders records with a Hugging Face tokenizer.

    Args:
        tokenizer: a ``transformers`` tokenizer.
        prompt_format: ``chat`` renders through the tokenizer's chat template; ``plain`` concatenates prompt and
            completion and appends EOS (conversations with several turns need ``chat``).
        max_length: the longest sequence, in tokens.
        truncation: what to do with longer examples. ``error`` stops with the row named; ``truncate_completion``
            cuts the end; ``truncate_prompt`` cuts the start of the prompt; ``drop`` leaves the example out. Truncation
            that would leave no completion token is an error under every policy except ``drop``.
    """

    def __init__(self, tokenizer, prompt_format: PromptFormat = "chat", max_length: int = 1024, truncation: Truncation = "error"):
        if prompt_format == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt_format='chat' needs a tokenizer with a chat template; use prompt_format='plain'")
        if prompt_format == "plain" and tokenizer.eos_token_id is None:
            raise ValueError("prompt_format='plain' needs a tokenizer with an EOS token")
        self.tokenizer = tokenizer
        self.prompt_format = prompt_format
        self.max_length = max_length
        self.truncation = truncation
        self.report = TruncationReport()

    def __call__(self, raw: RawRecord, record: Conversation | Preference) -> TokenizedExample | None:
        if isinstance(record, Preference):
            pairs = [(*record.prompt, Message("assistant", answer)) for answer in (record.chosen, record.rejected)]
            fields = ("chosen", "rejected")
        else:
            pairs, fields = [record.messages], ("messages" if len(record.messages) > 2 else "completion",)
        sequences = []
        for messages, name in zip(pairs, fields):
            try:
                rendered = self.render(messages)
            except ValueError as error:
                raise DataError(raw.source, str(error), raw.row, name) from error
            sequence = self._fit(raw, rendered, name)
            if sequence is None:
                return None
            sequences.append(sequence)
        return TokenizedExample(raw.row - 1, sequences, record.quality, raw)

    def render(self, messages) -> Sequence:
        """Token ids of a conversation, with the mask on assistant turns."""
        if self.prompt_format == "plain":
            if len(messages) != 2 or messages[0].role != "user":
                raise ValueError("prompt_format='plain' takes prompt/completion records only")
            prompt = self.tokenizer(messages[0].content)["input_ids"]
            completion = self.tokenizer(messages[1].content, add_special_tokens=False)["input_ids"]
            completion = completion + [self.tokenizer.eos_token_id]
            return Sequence(prompt + completion, [False] * len(prompt) + [True] * len(completion))
        ids: list[int] = []
        mask: list[bool] = []
        rendered = ""
        for turn, message in enumerate(messages):
            if message.role != "assistant":
                continue
            before = self._template(messages[:turn], add_generation_prompt=True)
            through = self._template(messages[: turn + 1], add_generation_prompt=False)
            if not (before.startswith(rendered) and through.startswith(before)):
                raise ValueError("the tokenizer's chat template does not render conversations prefix by prefix")
            for text, is_completion in ((before[len(rendered) :], False), (through[len(before) :], True)):
                tokens = self.tokenizer(text, add_special_tokens=False)["input_ids"]
                ids += tokens
                mask += [is_completion] * len(tokens)
            rendered = through
        return Sequence(ids, mask)

    def prompt_ids(self, prompt: str) -> list[int]:
        """The tokens that precede a generated answer, for evaluation."""
        if self.prompt_format == "plain":
            return self.tokenizer(prompt)["input_ids"]
        return self.tokenizer(self._template([Message("user", prompt)], True), add_special_tokens=False)["input_ids"]

    def _template(self, messages, add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )

    def _fit(self, raw: RawRecord, sequence: Sequence, field: str) -> Sequence | None:
        excess = len(sequence.input_ids) - self.max_length
        if excess <= 0:
            return sequence
        first_completion = sequence.completion_mask.index(True)
        where = f"row {raw.row}"
        if self.truncation == "drop":
            self.report.dropped.append(where)
            return None
        message = f"is {len(sequence.input_ids)} tokens long, over max_length={self.max_length}"
        prompt_field = "messages" if field == "messages" else "prompt"
        if self.truncation == "error":
            blame = prompt_field if first_completion >= self.max_length else field
            raise DataError(raw.source, f"{message} (truncation='error'; raise max_length or choose a truncation policy)", raw.row, blame)
        if self.truncation == "truncate_completion":
            if first_completion >= self.max_length:
                raise DataError(raw.source, f"the prompt alone {message}: truncate_completion would leave no completion", raw.row, prompt_field)
            kept = Sequence(sequence.input_ids[: self.max_length], sequence.completion_mask[: self.max_length])
        else:
            if any(sequence.completion_mask[:excess]):
                raise DataError(raw.source, f"the completion alone {message}: truncate_prompt would cut into it", raw.row, field)
            kept = Sequence(sequence.input_ids[excess:], sequence.completion_mask[excess:])
        self.report.truncated.append(where)
        return kept
