"""The part of a generated answer that is scored: the last match of a regular expression (its first group if it has
one, else the whole match), with names for the usual ones."""

from __future__ import annotations

import re

from sft_research.errors import ConfigError

EXTRACTORS = {
    # The last number: signs, thousands separators, decimals and exponents ("-1,234.5e3").
    "last_number": r"[-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?",
    # The last \boxed{...}, one level of braces inside it (\boxed{\frac{1}{2}}).
    "boxed": r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}",
    # The rest of the line after the last "Answer:" (any case): the greedy ".*" runs to the last one.
    "after_answer": r"(?is).*answer:[ \t]*([^\n]*)",
}


def pattern(extract: str) -> re.Pattern:
    """The compiled expression of ``extract``: a name of :data:`EXTRACTORS` or a regular expression of yours."""
    try:
        return re.compile(EXTRACTORS.get(extract, extract))
    except re.error as error:
        raise ConfigError(f"extract {extract!r}: neither one of {sorted(EXTRACTORS)} nor a regular expression ({error})") from None


def extracted(expression: re.Pattern, text: str) -> str | None:
    """The last match of ``expression`` in ``text`` (its first group, if it has groups); None where nothing matches."""
    matches = list(expression.finditer(text))
    if not matches:
        return None
    last = matches[-1]
    return last.group(1) if expression.groups else last.group(0)
