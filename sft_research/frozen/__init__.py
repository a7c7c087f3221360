"""Frozen models' inputs to objectives (reference log-probs, baseline scores, ...), computed once and cached."""

from sft_research.frozen.inputs import BaselineScores, FrozenContext, FrozenInput, ReferenceLogprobs

__all__ = ["BaselineScores", "FrozenContext", "FrozenInput", "ReferenceLogprobs"]
