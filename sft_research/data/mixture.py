"""A training source that mixes plain text into another source's records: replay of general text during SFT."""

from __future__ import annotations

import random
from pathlib import Path

from sft_research.data.sources import DataSource, RawRecord


def read_text(path: str) -> str:
    """A text file, or ``reasoning_gym:NAME``: a file in reasoning-gym's data folder."""
    if path.startswith("reasoning_gym:"):
        import reasoning_gym

        return (Path(reasoning_gym.__file__).parent / "data" / path.split(":", 1)[1]).read_text()
    return Path(path).expanduser().read_text()


class TextChunks(DataSource):
    """Plain-text records (``{"text": ...}``, trained on as language modelling): a text cut into consecutive pieces
    of ``chunk_tokens`` tokens, none overlapping a character span of ``exclude`` or repeating a long part of one.

    Args:
        path: a text file, or ``reasoning_gym:NAME`` for a file in reasoning-gym's data folder.
        tokenizer: the tokenizer that counts the tokens (the model's, so that a piece fits ``max_length``).
        chunk_tokens: tokens per piece (one more where a character spans two tokens); a piece also ends where an
            excluded span or the text begins or ends, so some are shorter.
        exclude: ``[start, end)`` character spans that no piece may touch, such as the text a probe scores.
        shared_characters: a piece that repeats this many characters of the excluded text anywhere (texts repeat
            themselves: Project Gutenberg's licence says the same sentences many times), or is shorter and repeated
            whole in it, is left out too.
    """

    def __init__(
        self,
        path: str,
        tokenizer: str,
        chunk_tokens: int = 96,
        exclude: list[tuple[int, int]] | None = None,
        shared_characters: int = 50,
    ):
        if chunk_tokens < 1 or shared_characters < 1:
            raise ValueError(f"chunk_tokens and shared_characters must be at least 1, got {chunk_tokens} and {shared_characters}")
        self.path, self.tokenizer, self.chunk_tokens = path, tokenizer, chunk_tokens
        self.exclude = [tuple(span) for span in exclude or []]
        self.shared_characters = shared_characters
        self.name = path

    def spans(self) -> list[tuple[int, int]]:
        """The pieces' ``[start, end)`` character spans, in text order."""
        return self.spans_of(read_text(self.path))

    def spans_of(self, text: str) -> list[tuple[int, int]]:
        from sft_research.checkpoints.names import load_tokenizer

        offsets = load_tokenizer(self.tokenizer)(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)[
            "offset_mapping"
        ]
        pieces: list[list[tuple[int, int]]] = [[]]
        for start, end in offsets:
            if any(start < stop and first < end for first, stop in self.exclude):
                pieces.append([])
                continue
            # Byte-level tokens can split one character: a piece never ends inside a character, so pieces never share one.
            if len(pieces[-1]) >= self.chunk_tokens and start >= pieces[-1][-1][1]:
                pieces.append([])
            pieces[-1].append((start, end))
        spans = [(piece[0][0], piece[-1][1]) for piece in pieces if piece]
        excluded = [text[start:end] for start, end in self.exclude]
        k = self.shared_characters
        windows = {part[i : i + k] for part in excluded for i in range(len(part) - k + 1)}

        def repeats_excluded(piece: str) -> bool:
            if len(piece) < k:
                return any(piece in part for part in excluded)
            return any(piece[i : i + k] in windows for i in range(len(piece) - k + 1))

        return [(start, end) for start, end in spans if text[start:end].strip() and not repeats_excluded(text[start:end])]

    def records(self) -> list[RawRecord]:
        text = read_text(self.path)
        return [RawRecord(self.name, row, {"text": text[start:end]}) for row, (start, end) in enumerate(self.spans_of(text), start=1)]


class Mixture(DataSource):
    """Every record of ``records``, with plain-text records of ``text`` interleaved so that ``text_fraction`` of all
    records are text: replay of general text during fine-tuning, against forgetting.

    The text records are drawn from ``text`` without replacement (seeded by ``seed``) and spread evenly through the
    list. The training sampler shuffles the whole list, so each batch is a random draw from it: the text fraction
    holds in each batch on average (the count in a batch is hypergeometric around it), and in every stretch of the
    list for a reader that does not shuffle. Records keep their own source and row, so errors name where they came
    from.

    Args:
        records: the task's training records (SFT or text records; preference pairs cannot be mixed with text).
        text: where the text records come from, e.g. :class:`TextChunks`.
        text_fraction: the fraction of all records that are text, in [0, 1).
        seed: which text records are drawn, and their order.
    """

    def __init__(self, records: DataSource, text: DataSource, text_fraction: float = 0.25, seed: int = 0):
        if not 0.0 <= text_fraction < 1.0:
            raise ValueError(f"text_fraction must be in [0, 1), got {text_fraction}")
        self.source, self.text, self.text_fraction, self.seed = records, text, text_fraction, seed
        self.name = f"{records.name} + {text_fraction:g} of {text.name}"

    def records(self) -> list[RawRecord]:
        main, text = self.source.records(), self.text.records()
        wanted = round(self.text_fraction * len(main) / (1.0 - self.text_fraction))
        if wanted > len(text):
            raise ValueError(
                f"{self.name}: {wanted} text records are needed for {len(main)} records at text_fraction "
                f"{self.text_fraction}, but {self.text.name} has {len(text)}"
            )
        drawn = iter(random.Random(self.seed).sample(text, wanted))
        rest = iter(main)
        total = len(main) + wanted
        # Position i holds text when the running count of text, i * wanted / total, crosses an integer there.
        return [next(drawn) if (i + 1) * wanted // total > i * wanted // total else next(rest) for i in range(total)]
