"""The SFT-then-DPO arm: the usual two-stage pipeline."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sft_research.bench.arms.base import SFT_OBJECTIVE, Arm
from sft_research.pipelines import FitStage, Stage

if TYPE_CHECKING:
    from sft_research.bench.suite import Suite


class SFTThenDPOArm(Arm):
    """SFT, then DPO from the SFT model (its frozen reference) on pairs of a right answer over a wrong one.

    Args:
        beta: DPO's beta.
        dpo_steps: DPO steps.
        dpo_lr: DPO's learning rate (the official recipes': 5e-7 to 1e-6 at 7B; a 135M model takes a larger one).
    """

    def __init__(self, name: str, beta: float = 0.1, dpo_steps: int = 15, dpo_lr: float = 5e-6):
        super().__init__(name)
        self.beta, self.dpo_steps, self.dpo_lr = beta, dpo_steps, dpo_lr

    def stages(self, suite: Suite, seed: int) -> list[Stage]:
        dpo = {"class_path": "sft_research.objectives.DPO", "init_args": {"beta": self.beta}}
        dpo_overrides = {
            "trainer": {"max_steps": self.dpo_steps},
            "model": {"optimizer": {"lr": self.dpo_lr}},
            "data": {"train": suite.task.source(preference_pairs=True)},
        }
        return [
            FitStage("sft", suite.fit_config(f"{self.label(seed)} · sft", seed, SFT_OBJECTIVE)),
            FitStage("dpo", suite.fit_config(f"{self.label(seed)} · dpo", seed, dpo, dpo_overrides), start_from="sft"),
        ]
