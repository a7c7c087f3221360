"""The task score: not a forgetting probe, but measured and reported the same way, first in every table."""

from __future__ import annotations

from dataclasses import dataclass

from sft_research.bench.probes.base import Metric, Probe, ProbeContext
from sft_research.bench.probes.verifier import verifier_scores

# The task score's metric: the reports find it by this name, whatever order the metrics come in.
TASK_SCORE = "task_score"


@dataclass
class TaskScore(Probe):
    """Accuracy (greedy) on the suite task's held-out prompts, by its verifier; the suite adds it before its probes.

    Args:
        max_new_tokens: longest answer.
    """

    max_new_tokens: int = 8

    name = "task"
    metrics = (Metric(TASK_SCORE, "task score", higher_is_better=True),)

    def measure(self, model, context: ProbeContext) -> list[float]:
        return verifier_scores(model, context, context.task, self.max_new_tokens)

    def compare(self, finetuned: list[float], base: list[float]) -> dict[str, list[float]]:
        return {TASK_SCORE: list(finetuned)}


def task_and_forgetting(metrics: list[Metric]) -> tuple[Metric, list[Metric]]:
    """The task score's metric, and every other metric (the forgetting ones) in their order."""
    (task,) = [metric for metric in metrics if metric.name == TASK_SCORE]
    return task, [metric for metric in metrics if metric.name != TASK_SCORE]
