"""The IRFT arm: rounds of sampling and training on the training prompts."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from sft_research.bench.arms.base import Arm
from sft_research.model.generation import GenerationConfig
from sft_research.pipelines import IRFTStage, Stage

if TYPE_CHECKING:
    from sft_research.bench.suite import Suite


class IRFTArm(Arm):
    """IRFT rounds on the training prompts, the (noisy) training answers being the demonstrations.

    Args:
        rounds: T.
        beta: the implicit reward's beta.
        steps_per_round: optimizer steps in each round.
        lr: the learning rate (the official run's is 5e-7 at 7B; a 135M model takes a larger one, but not SFT's:
            at SFT's rate the demonstrations' likelihood falls together with the samples').
        generation: how each round samples its responses.

    The optimizer is the official run's: RMSprop with a linear decay.
    """

    def __init__(
        self,
        name: str,
        rounds: int = 2,
        beta: float = 0.1,
        steps_per_round: int = 15,
        lr: float = 5e-6,
        generation: GenerationConfig = GenerationConfig(max_new_tokens=8, do_sample=True),
    ):
        super().__init__(name)
        self.rounds, self.beta, self.steps_per_round, self.lr, self.generation = rounds, beta, steps_per_round, lr, generation

    def stages(self, suite: Suite, seed: int) -> list[Stage]:
        objective = {"class_path": "sft_research.objectives.IRFT", "init_args": {"beta": self.beta}}
        round_overrides = {
            "trainer": {"max_steps": self.steps_per_round},
            "model": {"optimizer": {"name": "rmsprop", "schedule": "linear", "lr": self.lr}},
        }
        fit = suite.fit_config(self.label(seed), seed, objective, round_overrides)
        return [IRFTStage("irft", fit, self.rounds, copy.deepcopy(self.generation), generation_batch_size=suite.eval_batch_size)]
