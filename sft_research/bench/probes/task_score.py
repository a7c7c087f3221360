"""The task score: not a forgetting probe, but measured and reported the same way, first in every table."""

from __future__ import annotations

from dataclasses import dataclass, field

from sft_research.bench.probes.base import Metric, Probe, ProbeContext
from sft_research.bench.scorers import Scorer, Verifier

# The task score's metric: the reports find it by this name, whatever order the metrics come in.
TASK_SCORE = "task_score"


@dataclass
class TaskScore(Probe):
    """The mean value of the suite task's held-out items under its scorer (greedy answers scored by the verifier of a
    reasoning-gym task, by default); the suite adds it before its probes.

    Args:
        max_new_tokens: longest answer.
        scorer: how an answer is scored.
        task: the task's name, which the label shows with the scorer's.
    """

    max_new_tokens: int = 8
    scorer: Scorer = field(default_factory=Verifier)
    task: str = "chain_sum"

    name = "task"

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return (Metric(TASK_SCORE, f"task score ({self.task}, {self.scorer.label})", higher_is_better=True),)

    def check(self, task) -> None:
        self.scorer.check(task)

    def measure(self, model, context: ProbeContext) -> list[float]:
        return self.scorer.measure(model, context, self.max_new_tokens)

    def compare(self, finetuned: list[float], base: list[float]) -> dict[str, list[float]]:
        return {TASK_SCORE: list(finetuned)}


def task_and_forgetting(metrics: list[Metric]) -> tuple[Metric, list[Metric]]:
    """The task score's metric, and every other metric (the forgetting ones) in their order."""
    (task,) = [metric for metric in metrics if metric.name == TASK_SCORE]
    return task, [metric for metric in metrics if metric.name != TASK_SCORE]
