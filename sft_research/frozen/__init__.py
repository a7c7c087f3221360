"""Frozen models' inputs to objectives (reference log-probs, baseline scores, teachers' distributions), computed once
and cached, or on every batch."""

from sft_research.frozen.context import FrozenContext
from sft_research.frozen.distributions import FullDistribution, TopKDistribution
from sft_research.frozen.inputs import BaselineScores, FrozenInput, ReferenceLogprobs
from sft_research.frozen.quantities import FrozenQuantity, HiddenStatesQuantity, LabelLogprobsQuantity, TopKQuantity

__all__ = [
    "BaselineScores",
    "FrozenContext",
    "FrozenInput",
    "FrozenQuantity",
    "FullDistribution",
    "HiddenStatesQuantity",
    "LabelLogprobsQuantity",
    "ReferenceLogprobs",
    "TopKDistribution",
    "TopKQuantity",
]
