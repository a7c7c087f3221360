"""The PoFT arm: PoFT against a baseline fine-tuned on clean demonstrations first."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sft_research.bench.arms.base import SFT_OBJECTIVE, Arm
from sft_research.pipelines import FitStage, Stage

if TYPE_CHECKING:
    from sft_research.bench.suite import Suite


class PoFTArm(Arm):
    """PoFT against a baseline that knows the task better than the start model: the start model fine-tuned with SFT
    on clean demonstrations of the task (other items than the training data's, none corrupted), as a first stage.

    Args:
        beta: PoFT's beta.
        gamma: PoFT's margin.
        baseline_steps: SFT steps of the baseline (None: the budget's).
    """

    def __init__(self, name: str, beta: float = 1.0, gamma: float = 0.0, baseline_steps: int | None = None):
        super().__init__(name)
        self.beta, self.gamma, self.baseline_steps = beta, gamma, baseline_steps

    def stages(self, suite: Suite, seed: int) -> list[Stage]:
        baseline_overrides = {"data": {"train": suite.task.clean_demonstrations()}}
        if self.baseline_steps is not None:
            baseline_overrides["trainer"] = {"max_steps": self.baseline_steps}
        poft = {"class_path": "sft_research.objectives.PoFT", "init_args": {"beta": self.beta, "gamma": self.gamma}}
        return [
            FitStage("baseline", suite.fit_config(f"{self.label(seed)} · baseline", seed, SFT_OBJECTIVE, baseline_overrides)),
            FitStage("poft", suite.fit_config(self.label(seed), seed, poft), baselines_from=["baseline"]),
        ]
