"""The interface of a scorer: how a task's held-out answers are scored, the task score being the mean of its values.

A scorer checks, before any model loads, that the held-out set holds what it reads (:meth:`Scorer.check`: one line
naming the file, row and field otherwise), then measures a model: one value per held-out item, in the same order for
every model. Most scorers score the model's greedy answer to each prompt against its reference
(:class:`GenerativeScorer`: one method, ``score(prompt, answer, reference)``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch

from sft_research.bench.heldout import HeldOutSet
from sft_research.bench.probes.base import ProbeContext
from sft_research.bench.probes.verifier import greedy_answers
from sft_research.errors import ConfigError

if TYPE_CHECKING:
    from sft_research.data.sources import RawRecord


class Scorer(ABC):
    """How a task's held-out answers are scored; ``label`` names it in tables and plots."""

    label: str

    def check(self, task) -> None:  # noqa: B027 (a hook: the verifier's task is checked as it is made)
        """Before any model loads: what this scorer reads is in the held-out set (``task``: a
        :class:`~sft_research.bench.heldout.HeldOutSet`, or the reasoning-gym task the verifier scores)."""

    @abstractmethod
    def measure(self, model, context: ProbeContext, max_new_tokens: int) -> list[float]:
        """One value per held-out item of ``context.task`` on ``model``."""


def held_out_set(scorer: Scorer, task) -> HeldOutSet:
    """``task`` as a held-out set of prompts and references, which every scorer but the verifier reads."""
    if not isinstance(task, HeldOutSet):
        raise ConfigError(f"task.scorer {type(scorer).__name__} scores a held-out set of prompts and references (task.heldout)")
    return task


class GenerativeScorer(Scorer):
    """The model's greedy answer to each held-out prompt (rendered as in training, at most ``max_new_tokens``),
    scored against the item's reference (its ``completion``) by :meth:`score`; the task score is the mean."""

    def check(self, task) -> None:
        for record in held_out_set(self, task).records:
            self.reference(record)

    def reference(self, record: RawRecord):
        """The item's reference as :meth:`score` takes it; a :class:`~sft_research.data.DataError` naming the row
        and field where it cannot be. Text, unless a scorer reads it otherwise."""
        return HeldOutSet.text(record, HeldOutSet.REFERENCE)

    @torch.no_grad()
    def measure(self, model, context: ProbeContext, max_new_tokens: int) -> list[float]:
        task = held_out_set(self, context.task)
        prompts = task.eval_prompts()
        answers = greedy_answers(model, context, prompts, max_new_tokens)
        return [self.score(prompt, answer, self.reference(record)) for prompt, answer, record in zip(prompts, answers, task.records)]

    @abstractmethod
    def score(self, prompt: str, answer: str, reference) -> float:
        """The value of ``answer`` to ``prompt`` against ``reference``: 1.0 right, 0.0 wrong, or anything between."""
