"""The task score: not a forgetting probe, but measured and reported the same way, first in every table."""

from __future__ import annotations

from dataclasses import dataclass

from sft_research.bench.probes.base import Metric, Probe, ProbeContext
from sft_research.bench.probes.verifier import verifier_scores


@dataclass
class TaskScore(Probe):
    """Accuracy (greedy) on the suite task's held-out prompts, by its verifier; the suite adds it before its probes.

    Args:
        max_new_tokens: longest answer.
    """

    max_new_tokens: int = 8

    name = "task"
    metrics = (Metric("task_score", "task score", higher_is_better=True),)

    def measure(self, model, context: ProbeContext) -> list[float]:
        return verifier_scores(model, context, context.task, self.max_new_tokens)

    def compare(self, finetuned: list[float], base: list[float]) -> dict[str, list[float]]:
        return {"task_score": list(finetuned)}
