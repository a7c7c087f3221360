"""The reasoning-gym verifier: the task score of a reasoning-gym task, as the harness has always measured it."""

from __future__ import annotations

from dataclasses import dataclass

from sft_research.bench.probes.base import ProbeContext
from sft_research.bench.probes.verifier import verifier_scores
from sft_research.bench.scorers.base import Scorer
from sft_research.data.task import VerifiableTask
from sft_research.errors import ConfigError


@dataclass
class Verifier(Scorer):
    """1.0 where the task's own verifier gives the greedy answer a full score, else 0.0 (partial credit, which
    reasoning-gym's numeric verifiers give answers that merely contain the right digits, would blur an accuracy).
    The default scorer of a reasoning-gym task, and only of one: the noise and quality options mean what its verifier
    says."""

    label = "verifier"

    def check(self, task) -> None:
        if not isinstance(task, VerifiableTask):
            raise ConfigError(
                "task.scorer Verifier scores a reasoning-gym task's answers with its verifier; a task of yours (task.train) "
                "has none: choose ExactMatch, NumericMatch, MultipleChoice, LmEvalTask or CallableScorer (sft_research.bench.scorers)"
            )

    def measure(self, model, context: ProbeContext, max_new_tokens: int) -> list[float]:
        return verifier_scores(model, context, context.task, max_new_tokens)
