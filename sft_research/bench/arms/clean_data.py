"""The clean-data arm: what a perfect filter of the noisy training data would leave."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sft_research.bench.arms.base import SFT_OBJECTIVE, ObjectiveArm, ObjectiveConfig
from sft_research.bench.overrides import deep_merge
from sft_research.pipelines.stages import FitConfig

if TYPE_CHECKING:
    from sft_research.bench.suite import Suite


class CleanDataArm(ObjectiveArm):
    """An objective (SFT by default) on the task's uncorrupted records only: the smaller clean dataset that a perfect
    filter would leave, against which "a larger noisy dataset" is judged (the same steps and batch size).

    Args:
        objective: the objective, as in a fit config.
        lr: overrides the budget's learning rate.
        overrides: any fit settings, laid over the rest (:class:`~sft_research.bench.arms.base.ObjectiveArm`).
    """

    def __init__(self, name: str, objective: ObjectiveConfig = SFT_OBJECTIVE, lr: float | None = None, overrides: FitConfig | None = None):
        super().__init__(name, objective, lr, overrides)

    def fit_overrides(self, suite: Suite) -> FitConfig:
        return deep_merge(super().fit_overrides(suite), {"data": {"train": suite.task.source(drop_corrupted=True)}})
