"""Exact and numeric match of a generated answer against the item's reference, on an optionally extracted part."""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass
from functools import cached_property

from sft_research.bench.heldout import HeldOutSet
from sft_research.bench.scorers.base import GenerativeScorer
from sft_research.bench.scorers.extract import extracted, pattern
from sft_research.data.sources import RawRecord
from sft_research.errors import DataError

PUNCTUATION = str.maketrans("", "", string.punctuation)


class ExtractingScorer(GenerativeScorer):
    """A generative scorer that may score only a part of the answer, its ``extract`` (see :class:`ExactMatch`)."""

    extract: str | None

    @cached_property
    def expression(self) -> re.Pattern | None:
        # Compiled at the first use, not when jsonargparse builds the suite (an error there comes inside its own
        # traceback); check() compiles it first, before any model loads.
        return None if self.extract is None else pattern(self.extract)

    def check(self, task) -> None:
        if self.extract is not None:
            pattern(self.extract)  # a wrong expression stops here, before any model loads
        super().check(task)


@dataclass
class ExactMatch(ExtractingScorer):
    """1.0 where the answer equals the reference after normalisation, else 0.0.

    Normalisation, in this order: lower case (``ignore_case``); ASCII punctuation (``string.punctuation``) removed
    (``ignore_punctuation``); the ends trimmed and every run of whitespace made one space (``whitespace``).

    Args:
        extract: score only this part of the answer: ``last_number``, ``boxed`` (the last ``\\boxed{...}``),
            ``after_answer`` (the rest of the line after the last "Answer:"), or a regular expression (its last match;
            its first group if it has one). An answer where nothing matches scores 0. None: the whole answer.
        extract_reference: extract the same part from the reference too (a reference that is a whole demonstration).
        whitespace: trim the ends and collapse runs of whitespace; false: whitespace must match exactly.
        ignore_case: compare in lower case.
        ignore_punctuation: leave out ASCII punctuation.
    """

    extract: str | None = None
    extract_reference: bool = False
    whitespace: bool = True
    ignore_case: bool = False
    ignore_punctuation: bool = False

    @property
    def label(self) -> str:
        return "exact match" + ("" if self.extract is None else f" of {self.extract}")

    def normalised(self, text: str) -> str:
        if self.ignore_case:
            text = text.lower()
        if self.ignore_punctuation:
            text = text.translate(PUNCTUATION)
        return " ".join(text.split()) if self.whitespace else text

    def reference(self, record: RawRecord) -> str:
        text = HeldOutSet.text(record, HeldOutSet.REFERENCE)
        if self.extract_reference and self.expression is not None:
            part = extracted(self.expression, text)
            if part is None:
                message = f"holds no match of extract {self.extract!r} (extract_reference is true)"
                raise DataError(record.source, message, record.row, HeldOutSet.REFERENCE)
            return part
        return text

    def score(self, prompt: str, answer: str, reference: str) -> float:
        part = answer if self.expression is None else extracted(self.expression, answer)
        return float(part is not None and self.normalised(part) == self.normalised(reference))


@dataclass
class NumericMatch(ExtractingScorer):
    """1.0 where the number in the answer is within the tolerance of the reference's, else 0.0 (as ``math.isclose``:
    ``|a - r| <= max(rel_tol * max(|a|, |r|), abs_tol)``). Thousands separators (``1,234``) are read as such.

    Args:
        extract: the part of the answer holding the number (:class:`ExactMatch`'s ``extract``); default: the last number.
        extract_reference: extract the same part from the reference too; else the reference is one number (a JSON number
            or its text).
        abs_tol: the absolute tolerance.
        rel_tol: the relative tolerance.
    """

    extract: str | None = "last_number"
    extract_reference: bool = False
    abs_tol: float = 0.0
    rel_tol: float = 0.0

    @property
    def label(self) -> str:
        tolerance = [f"{name} {value:g}" for name, value in (("abs_tol", self.abs_tol), ("rel_tol", self.rel_tol)) if value]
        return "numeric match" + (f" ({', '.join(tolerance)})" if tolerance else "")

    def reference(self, record: RawRecord) -> float:
        value = record.fields.get(HeldOutSet.REFERENCE)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        text = HeldOutSet.text(record, HeldOutSet.REFERENCE)
        if self.extract_reference and self.expression is not None:
            text = extracted(self.expression, text) or ""
        number = as_number(text)
        if number is None:
            raise DataError(record.source, f"is not a number: {text!r}", record.row, HeldOutSet.REFERENCE)
        return number

    def score(self, prompt: str, answer: str, reference: float) -> float:
        part = answer if self.expression is None else extracted(self.expression, answer)
        number = None if part is None else as_number(part)
        return float(number is not None and math.isclose(number, reference, rel_tol=self.rel_tol, abs_tol=self.abs_tol))


def as_number(text: str) -> float | None:
    """The number ``text`` writes (thousands separators allowed), None if it writes none; never infinite or NaN."""
    try:
        number = float(text.strip().replace(",", ""))
    except ValueError:
        return None
    return number if math.isfinite(number) else None
