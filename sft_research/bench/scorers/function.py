"""A Python function of yours as the scorer: ``score(prompt, answer, reference) -> float``."""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from numbers import Real

from sft_research.bench.scorers.base import GenerativeScorer
from sft_research.errors import ConfigError


@dataclass
class CallableScorer(GenerativeScorer):
    """Your function, by its import path (``my_scorers.f1`` for ``def f1(prompt, answer, reference)`` in
    ``my_scorers.py``, importable from where you run): called on each held-out prompt, the model's greedy answer to it
    and the item's reference (its ``completion``, text); it returns a finite number, the item's value.

    Args:
        function: the function's import path, ``module.name``.
    """

    function: str

    @cached_property
    def imported(self) -> Callable:
        # Imported at the first use, not when jsonargparse builds the suite (an error there comes inside its own
        # traceback); check() imports it first, before any model loads.
        return imported(self.function)

    def check(self, task) -> None:
        imported(self.function)  # a wrong path stops here, before any model loads
        super().check(task)

    @property
    def label(self) -> str:
        return self.function.rsplit(".", 1)[-1]

    def score(self, prompt: str, answer: str, reference: str) -> float:
        value = self.imported(prompt, answer, reference)
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
            raise ConfigError(
                f"task.scorer {self.function} returned {value!r} for the prompt {prompt[:60]!r}; it must return a finite number"
            )
        return float(value)


def imported(path: str) -> Callable:
    """The callable at ``module.name``, checked to take three arguments (prompt, answer, reference)."""
    module, _, name = path.rpartition(".")
    try:
        function = getattr(importlib.import_module(module), name) if module else None
    except ImportError as error:
        raise ConfigError(f"task.scorer function {path!r}: module {module!r} cannot be imported ({error})") from None
    except AttributeError:
        raise ConfigError(f"task.scorer function {path!r}: module {module!r} has no {name!r}") from None
    if not callable(function):
        raise ConfigError(f"task.scorer function {path!r} is not a callable at module.name")
    try:
        inspect.signature(function).bind("prompt", "answer", "reference")
    except TypeError:
        raise ConfigError(f"task.scorer function {path!r} must take (prompt, answer, reference)") from None
    except ValueError:  # a builtin without a signature: called as it is
        pass
    return function
