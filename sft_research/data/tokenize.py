"""Turns typed records into token ids and a completion mask, under an explicit truncation policy.

The completion mask is true on the tokens the model must learn to produce: the assistant's text and the
end-of-turn/EOS token that teaches it to stop. Prompt, chat-template scaffolding and padding are excluded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from sft_research.data.records import Message, Preference, Record, Text
from sft_research.data.sources import RawRecord
from sft_research.errors import ConfigError, DataError

PromptFormat = Literal["chat", "plain"]
Truncation = Literal["error", "truncate_completion", "truncate_prompt", "trl_0_9", "spin", "drop", "trl_dpo"]
# The rules of two DPO trainers, each as that code tokenizes a pair (BOS, the assistant header, an appended EOS), both
# then cutting it by the same two steps (ChatTokenizer._fit_as_trainer).
TRAINER_RULES = ("trl_0_9", "spin")
# An old name, refused with its replacements: it described both trainers as one rule, which neither quite is.
RETIRED = {
    "trl_dpo": "truncation 'trl_dpo' was no single trainer's rule: use 'trl_0_9' (TRL 0.9.6's DPOTrainer.tokenize_row, "
    "the alignment-handbook's DPO) or 'spin' (the SPIN collator, IRFT's official code)"
}


def no_chat_template(model: str) -> str:
    """The error of a model whose tokenizer has no chat template, where the data are rendered as chat."""
    return (
        f"{model}: its tokenizer has no chat template, which data.template.prompt_format 'chat' (the default) renders "
        "conversations with: set data.template.chat_template (a Jinja file, or the template itself), or data.template.prompt_format plain"
    )


@dataclass
class Sequence:
    input_ids: list[int]
    completion_mask: list[bool]
    # Where each token ends in the rendered text, while truncation needs it; then how many characters of the text
    # the kept tokens cover when the completion was cut (None: kept whole), so other tokenizers can score that part.
    char_ends: list[int] | None = field(default=None, repr=False)
    kept_characters: int | None = None
    # For a fixed-length block of several conversations (sft_research.data.blocks), the length of each piece in order;
    # attention and positions stay inside each (None: the sequence is one document).
    documents: list[int] | None = None


@dataclass
class TokenizedExample:
    """One training example. Frozen-model inputs are attached before training when the objective needs them."""

    example_id: int
    sequences: list[Sequence]  # one for SFT records, [chosen, rejected] for preference records
    quality: float
    raw: RawRecord
    record: Record | None = None  # the typed record the sequences were rendered from
    frozen: dict[str, torch.Tensor] = field(default_factory=dict)  # declared by the objective: see sft_research.frozen


@dataclass
class TruncationReport:
    """Which rows were truncated (and which part was cut) or dropped, so that nothing happens silently."""

    truncated: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    prompt_cut: list[str] = field(default_factory=list)
    completion_cut: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = []
        for name, rows in (("truncated", self.truncated), ("dropped", self.dropped)):
            if rows:
                shown = ", ".join(rows[:5]) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
                parts.append(f"{len(rows)} {name} ({shown})")
        if self.truncated:
            parts.append(f"prompt cut in {len(self.prompt_cut)}, completion cut in {len(self.completion_cut)}")
        return "; ".join(parts) or "no examples truncated or dropped"


class ChatTokenizer:
    """Renders records with a Hugging Face tokenizer.

    The rendered text is tokenized once, as a whole, and the completion tokens are found by their character offsets:
    tokenizing prompt and completion separately and concatenating them differs from the joint tokenization with
    SentencePiece tokenizers (Llama 2, Mistral, Gemma), which add a word-start marker at the start of every call. A
    token that straddles the prompt/completion boundary counts as completion. Tokenizers without offsets (slow, pure
    Python ones) are tokenized piecewise and checked against the joint tokenization.

    Args:
        tokenizer: a ``transformers`` tokenizer.
        prompt_format: ``chat`` renders through the tokenizer's chat template; ``plain`` concatenates prompt and
            completion and appends EOS (conversations with several turns need ``chat``).
        max_length: the longest sequence, in tokens.
        truncation: what to do with longer examples. ``error`` stops with the row named; ``truncate_completion``
            cuts the end; ``truncate_prompt`` cuts only the overflow from the start of the prompt, down to
            ``max_prompt_length`` tokens at most, then the end of the completion if it still does not fit (TRL's
            order, and the least cut); ``drop`` leaves the example out. Two modes are the rules of named trainers,
            the ids they keep matched exactly (``tests/test_trainer_truncation.py`` against the real code):
            ``trl_0_9`` is TRL 0.9.6's ``DPOTrainer.tokenize_row`` (the alignment-handbook's DPO): BOS first where the
            text has none, the assistant's header counted, and trained, as part of the answer, EOS appended to each
            finished answer that does not end with it; ``spin`` is the SPIN collator (``tokenize_batch_element`` in
            Reward_learning_SFT's ``src/alignment/utils.py``, IRFT's official code): no BOS, the header in the prompt,
            EOS appended to every finished answer. Both then cut alike: when the prompt and the longer answer exceed
            ``max_length``, the prompt to its last ``max_prompt_length`` tokens (a cut prompt loses its BOS), and if
            still too long each answer to its first ``max_length - max_prompt_length``. Truncation that would leave
            no completion token is an error under every policy except ``drop``. For preference pairs the shared prompt
            is cut once, identically for both.
        max_prompt_length: under ``truncate_prompt``, ``trl_0_9`` and ``spin``, the prompt tokens that may be kept
            when an example is too long (None: half of ``max_length``).
        completion_only_loss: the loss covers the completions and assistant turns (TRL's ``completion_only_loss``
            and ``assistant_only_loss``); false: every token of the rendered conversation (TRL's default for
            conversational data, the alignment-handbook's SFT). Truncation still reads the completion.
        add_special_tokens: tokenize rendered conversations with the tokenizer's special tokens, which prepends BOS
            for Llama and Mistral tokenizers (the alignment-handbook's SFT and TRL's DPO did, whatever the template
            wrote); a template that writes BOS itself then gives two, which is refused.
        auto_insert_empty_system_msg: start a conversation that has no system turn with an empty one when the chat
            template knows a system role (it mentions "system" or ChatML's "<|im_start|>"), as the
            alignment-handbook's ``maybe_insert_system_message`` does for SFT, DPO and PoFT data.
        scaffolding_in_completion: the completion mask covers each assistant turn's end-of-turn scaffolding too (the
            model learns to stop); false: the assistant's content only (PoFT's official baseline scorer).
    """

    def __init__(
        self,
        tokenizer,
        prompt_format: PromptFormat = "chat",
        max_length: int = 1024,
        truncation: Truncation = "error",
        max_prompt_length: int | None = None,
        completion_only_loss: bool = True,
        add_special_tokens: bool = False,
        auto_insert_empty_system_msg: bool = False,
        scaffolding_in_completion: bool = True,
    ):
        if prompt_format == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ConfigError(no_chat_template(tokenizer.name_or_path))
        if prompt_format == "plain" and tokenizer.eos_token_id is None:
            raise ValueError("prompt_format='plain' needs a tokenizer with an EOS token")
        if max_prompt_length is not None and not 0 < max_prompt_length < max_length:
            raise ValueError(f"max_prompt_length must be between 1 and max_length - 1, got {max_prompt_length}")
        if truncation in RETIRED:
            raise ValueError(RETIRED[truncation])
        if truncation in TRAINER_RULES and prompt_format != "chat":
            raise ValueError(f"truncation={truncation!r} is a chat trainer's rule: it needs prompt_format='chat'")
        self.tokenizer = tokenizer
        self.prompt_format = prompt_format
        self.max_length = max_length
        self.truncation = truncation
        self.max_prompt_length = max_prompt_length if max_prompt_length is not None else max_length // 2
        self.completion_only_loss, self.add_special_tokens = completion_only_loss, add_special_tokens
        self.auto_insert_empty_system_msg, self.scaffolding_in_completion = auto_insert_empty_system_msg, scaffolding_in_completion
        self.report = TruncationReport()

    def __call__(self, raw: RawRecord, record: Record) -> TokenizedExample | None:
        if isinstance(record, Text):
            if self.truncation in TRAINER_RULES:
                raise DataError(raw.source, f"truncation={self.truncation!r} cuts a prompt and answers: a text record has none", raw.row)
            # Language modelling: every token after the first is a target, and the EOS that ends the text too.
            sequence = self._tokenize(record.text, [(0, len(record.text))], add_special_tokens=True)
            sequence.input_ids.append(self.tokenizer.eos_token_id)
            sequence.completion_mask.append(True)
            sequence.char_ends.append(len(record.text))
            fitted = self._fit(raw, [sequence], ("text",))
            return None if fitted is None else TokenizedExample(raw.row - 1, fitted, record.quality, raw, record)
        if isinstance(record, Preference):
            if not self.completion_only_loss:
                raise DataError(
                    raw.source, "completion_only_loss=false is for SFT records: a preference pair's loss reads its answers", raw.row
                )
            pairs = [(*record.prompt, Message("assistant", answer)) for answer in (record.chosen, record.rejected)]
            fields, finished = ("chosen", "rejected"), (True, record.rejected_finished)
        else:
            conversational = any(not m.trained for m in record.messages) or len(record.messages) == 2
            pairs, fields, finished = [record.messages], ("completion" if conversational else "messages",), (True,)
        sequences = []
        for messages, name, done in zip(pairs, fields, finished):
            try:
                sequence = self.render(messages, finished=done)
                sequences.append(self._as_trainer(sequence, messages, done) if self.truncation in TRAINER_RULES else sequence)
            except ValueError as error:
                raise DataError(raw.source, str(error), raw.row, name) from error
        sequences = self._fit(raw, sequences, fields)
        if sequences is None:
            return None
        if not self.completion_only_loss:
            # Every token after the first is a target, as in language modelling on the rendered text.
            sequences = [Sequence(s.input_ids, [True] * len(s.input_ids), kept_characters=s.kept_characters) for s in sequences]
        return TokenizedExample(raw.row - 1, sequences, record.quality, raw, record)

    def render(self, messages, finished: bool = True) -> Sequence:
        """Token ids of a conversation, with the mask on assistant turns (and, for ``plain``, the final EOS).

        ``finished=False`` renders the last assistant turn as an unfinished answer: its text without the end-of-turn
        scaffolding or EOS, so that a cut answer is never trained or scored as complete.
        """
        text, spans = self.rendered_text(messages, finished)
        sequence = self._tokenize(text, spans, self.prompt_format == "plain" or self.add_special_tokens)
        bos = self.tokenizer.bos_token_id
        if self.add_special_tokens and bos is not None and sequence.input_ids[:2] == [bos, bos]:
            raise ValueError("add_special_tokens=true gives two BOS tokens: the chat template writes one already")
        if self.prompt_format == "plain" and finished and self.scaffolding_in_completion:
            sequence.input_ids.append(self.tokenizer.eos_token_id)
            sequence.completion_mask.append(True)
            sequence.char_ends.append(len(text))
        return sequence

    def rendered_text(self, messages, finished: bool = True) -> tuple[str, list[tuple[int, int]]]:
        """The conversation as text, and the character spans of its assistant turns (with their end-of-turn
        scaffolding unless ``scaffolding_in_completion`` is false)."""
        if self.prompt_format == "plain":
            if len(messages) != 2 or messages[0].role != "user":
                raise ValueError("prompt_format='plain' takes prompt/completion records only")
            prompt, completion = messages[0].content, messages[1].content
            return prompt + completion, [(len(prompt), len(prompt) + len(completion))]
        messages = self.conversation(messages)
        spans: list[tuple[int, int]] = []
        rendered = ""
        for turn, message in enumerate(messages):
            if message.role != "assistant" or not message.trained:
                continue
            before = self._template(messages[:turn], add_generation_prompt=True)
            if not finished and turn == len(messages) - 1:
                through = before + message.content
            else:
                through = self._template(messages[: turn + 1], add_generation_prompt=False)
            if not (before.startswith(rendered) and through.startswith(before)):
                raise ValueError("the tokenizer's chat template does not render conversations prefix by prefix")
            if self.scaffolding_in_completion:
                spans.append((len(before), len(through)))
            else:
                # The content as it is, whitespace included, as PoFT's official scorer encodes it; only a template that
                # trims it (Llama 3's own) leaves the stripped content to score.
                content = message.content if message.content in through[len(before) :] else message.content.strip()
                start = through.find(content, len(before))
                spans.append((start, start + len(content)) if content and start >= 0 else (len(before), len(through)))
            rendered = through
        return rendered, spans

    def humaneval_text(self, record: Record) -> str:
        """The text the alignment-handbook's HumanEval filter reads: an SFT record's rendered conversation (run_sft.py's
        ``text``); a pair's chosen answer as rendered after its prompt (run_dpo.py's ``text_chosen``, the chosen
        conversation's last turn for UltraFeedback, whose ``prompt`` is a string), neither the prompt nor the
        rejected answer."""
        if isinstance(record, Text):
            return record.text
        if isinstance(record, Preference):
            messages = (*record.prompt, Message("assistant", record.chosen))
            return self.rendered_text(messages)[0][self.answer_start(messages) :]
        return self.rendered_text(record.messages)[0]

    def answer_start(self, messages) -> int:
        """The character where the first trained assistant turn begins, its header included: the length of the turns
        before it rendered without a generation prompt (TRL's DPO prompt, the handbook's ``text_prompt``)."""
        messages = self.conversation(messages)
        turn = next(i for i, m in enumerate(messages) if m.role == "assistant" and m.trained)
        before = self._template(messages[:turn], add_generation_prompt=False) if turn else ""
        if not self.rendered_text(messages)[0].startswith(before):
            raise ValueError("the chat template does not render the prompt's turns as the start of the conversation")
        return len(before)

    def conversation(self, messages) -> tuple:
        """``messages`` as rendered: with an empty system turn first where ``auto_insert_empty_system_msg`` asks."""
        template = self.tokenizer.chat_template or ""
        knows_system = "system" in template or "<|im_start|>" in template
        if self.auto_insert_empty_system_msg and knows_system and messages and messages[0].role != "system":
            return (Message("system", ""), *messages)
        return tuple(messages)

    def kept_messages(self, messages, kept_characters: int) -> tuple:
        """The record's turns as far as ``kept_characters`` of its rendered text: later turns go, and the assistant turn
        that was cut keeps the part of its text that was kept (to be rendered with ``finished=False``). Without the
        empty system turn that ``auto_insert_empty_system_msg`` renders: it is this chat template's, not the record's, and
        another model's scorer (PoFT's baselines, ``generate_preference_scores.py``) never has it."""
        rendered = self.conversation(messages)
        inserted = len(rendered) - len(messages)
        text, spans = self.rendered_text(rendered)
        assistant_turns = [turn for turn, message in enumerate(rendered) if message.role == "assistant" and message.trained]
        for turn, (start, end) in zip(assistant_turns, spans):
            if kept_characters < end:
                content = rendered[turn].content
                offset = text.index(content, start) if self.prompt_format == "chat" else start
                return (*rendered[inserted:turn], Message("assistant", content[: max(0, kept_characters - offset)]))
        return tuple(messages)

    def _tokenize(self, text: str, spans: list[tuple[int, int]], add_special_tokens: bool) -> Sequence:
        """Tokenizes ``text`` once; a token is a completion token when its characters overlap a span."""
        if self.tokenizer.is_fast:
            encoded = self.tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
            offsets = encoded["offset_mapping"]
            mask = [any(start < end_span and end > start_span for start_span, end_span in spans) for start, end in offsets]
            return Sequence(encoded["input_ids"], mask, [end for _, end in offsets])
        ids: list[int] = []
        mask: list[bool] = []
        ends: list[int] = []
        cuts = [0] + [point for span in spans for point in span] + [len(text)]
        for index, (first, last) in enumerate(zip(cuts, cuts[1:])):
            piece = self.tokenizer(text[first:last], add_special_tokens=add_special_tokens and index == 0)["input_ids"]
            ids += piece
            mask += [index % 2 == 1] * len(piece)
            ends += [last] * len(piece)  # without offsets, a cut inside a piece is known only to the piece's end
        if ids != self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]:
            raise ValueError(
                "tokenizing prompt and completion separately differs from tokenizing the whole text, and this "
                "(slow) tokenizer gives no character offsets to find the completion: use its fast version"
            )
        return Sequence(ids, mask, ends)

    def prompt_ids(self, prompt: str) -> list[int]:
        """The tokens that precede a generated answer, for evaluation and generation."""
        if self.prompt_format == "plain":
            return self.tokenizer(prompt)["input_ids"]
        text = self._template(self.conversation([Message("user", prompt)]), True)
        return self.tokenizer(text, add_special_tokens=self.add_special_tokens)["input_ids"]

    def _template(self, messages, add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )

    def _as_trainer(self, sequence: Sequence, messages, finished: bool) -> Sequence:
        """``sequence`` with the tokens the trainer named by ``truncation`` adds and the answer as it counts it:
        ``trl_0_9`` prepends BOS where the text has none and counts the assistant's header as answer (completion),
        both append EOS to a finished answer (``trl_0_9`` only where it does not end with one). An unfinished answer
        (a cut sample) gets none: it is never trained as the place to stop."""
        ids, mask, ends = list(sequence.input_ids), list(sequence.completion_mask), list(sequence.char_ends)
        bos, eos = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        if self.truncation == "trl_0_9":
            header, first = self.answer_start(messages), mask.index(True)
            mask[:first] = [end > header for end in ends[:first]]
            if bos is not None and ids[:1] != [bos]:
                ids, mask, ends = [bos, *ids], [False, *mask], [0, *ends]
        if finished and (self.truncation == "spin" or ids[-1] != eos):
            ids, mask, ends = [*ids, eos], [*mask, True], [*ends, ends[-1]]
        return Sequence(ids, mask, ends)

    def _fit_as_trainer(self, raw: RawRecord, sequences: list[Sequence]) -> list[Sequence]:
        """The cuts of TRL 0.9.6's ``tokenize_row`` and the SPIN collator, sequence by sequence as they run: where the
        prompt and the longer answer exceed ``max_length``, the prompt keeps its last ``max_prompt_length`` tokens; if
        that is still too long, the answer its first ``max_length - max_prompt_length``."""
        prompts = [sequence.completion_mask.index(True) for sequence in sequences]
        longer = max(len(sequence.input_ids) - prompt for sequence, prompt in zip(sequences, prompts))
        fitted, prompt_cut, answer_cut = [], False, False
        for sequence, prompt in zip(sequences, prompts):
            kept_prompt = min(prompt, self.max_prompt_length) if prompt + longer > self.max_length else prompt
            end = len(sequence.input_ids)
            if kept_prompt + longer > self.max_length:
                end = min(end, prompt + self.max_length - self.max_prompt_length)
            cut = end < len(sequence.input_ids)
            fitted.append(
                Sequence(
                    sequence.input_ids[prompt - kept_prompt : end],
                    sequence.completion_mask[prompt - kept_prompt : end],
                    kept_characters=sequence.char_ends[end - 1] if cut else None,
                )
            )
            prompt_cut, answer_cut = prompt_cut or kept_prompt < prompt, answer_cut or cut
        where = f"row {raw.row}"
        if prompt_cut or answer_cut:
            self.report.truncated.append(where)
        if prompt_cut:
            self.report.prompt_cut.append(where)
        if answer_cut:
            self.report.completion_cut.append(where)
        return fitted

    def _fit(self, raw: RawRecord, sequences: list[Sequence], fields: tuple[str, ...]) -> list[Sequence] | None:
        """Applies the truncation policy to an example's sequences (one, or chosen and rejected)."""
        if self.truncation in TRAINER_RULES:
            return self._fit_as_trainer(raw, sequences)
        longest = max(len(sequence.input_ids) for sequence in sequences)
        if longest <= self.max_length:
            return [Sequence(s.input_ids, s.completion_mask) for s in sequences]
        where = f"row {raw.row}"
        if self.truncation == "drop":
            self.report.dropped.append(where)
            return None
        prompt_length = min(sequence.completion_mask.index(True) for sequence in sequences)
        message = f"is {longest} tokens long, over max_length={self.max_length}"
        prompt_field = {"messages": "messages", "text": "text"}.get(fields[0], "prompt")
        too_long = next(name for name, sequence in zip(fields, sequences) if len(sequence.input_ids) == longest)
        if self.truncation == "error":
            blame = prompt_field if prompt_length >= self.max_length else too_long
            raise DataError(raw.source, f"{message} (truncation='error'; raise max_length or choose a truncation policy)", raw.row, blame)
        cut_prompt = 0
        if self.truncation == "truncate_prompt":
            cut_prompt = max(0, min(longest - self.max_length, prompt_length - self.max_prompt_length))
        # The same leading tokens go from every sequence: they share the prompt.
        sequences = [self._cut_start(sequence, cut_prompt) for sequence in sequences]
        if prompt_length - cut_prompt >= self.max_length:
            raise DataError(raw.source, f"the prompt alone {message}: {self.truncation} would leave no completion", raw.row, prompt_field)
        keep = self.max_length
        cut = [
            Sequence(s.input_ids[:keep], s.completion_mask[:keep], kept_characters=s.char_ends[keep - 1])
            if len(s.input_ids) > keep
            else Sequence(s.input_ids, s.completion_mask)
            for s in sequences
        ]
        self.report.truncated.append(where)
        if cut_prompt:
            self.report.prompt_cut.append(where)
        if any(s.kept_characters is not None for s in cut):
            self.report.completion_cut.append(where)
        return cut

    def _cut_start(self, sequence: Sequence, count: int) -> Sequence:
        """Drops ``count`` prompt tokens after a leading BOS, which a model expects to see first."""
        bos = self.tokenizer.bos_token_id
        keep = 1 if count and bos is not None and sequence.input_ids[0] == bos else 0
        return Sequence(
            sequence.input_ids[:keep] + sequence.input_ids[keep + count :],
            sequence.completion_mask[:keep] + sequence.completion_mask[keep + count :],
            sequence.char_ends[:keep] + sequence.char_ends[keep + count :],
        )
