"""How a task's held-out answers are scored (:class:`Scorer`): the reasoning-gym verifier, exact or numeric match on an
extracted part, multiple choice by log-likelihood, an lm-eval task, or a function of yours."""

from sft_research.bench.scorers.base import GenerativeScorer, Scorer
from sft_research.bench.scorers.choice import MultipleChoice
from sft_research.bench.scorers.function import CallableScorer
from sft_research.bench.scorers.lm_eval_task import LmEvalTask
from sft_research.bench.scorers.match import ExactMatch, NumericMatch
from sft_research.bench.scorers.verifier import Verifier

__all__ = ["CallableScorer", "ExactMatch", "GenerativeScorer", "LmEvalTask", "MultipleChoice", "NumericMatch", "Scorer", "Verifier"]
