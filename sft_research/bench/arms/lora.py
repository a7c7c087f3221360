"""The LoRA arm: a parameter-efficient fix for forgetting."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Literal

from sft_research.bench.arms.base import SFT_OBJECTIVE, ObjectiveArm, ObjectiveConfig
from sft_research.bench.overrides import deep_merge
from sft_research.model.loading import LoraConfig
from sft_research.pipelines.stages import FitConfig

if TYPE_CHECKING:
    from sft_research.bench.suite import Suite


class LoRAArm(ObjectiveArm):
    """An objective (SFT by default) through LoRA adapters (``peft``), a parameter-efficient fix for forgetting: the
    adapters are merged into the weights when training ends, so the evaluation loads a plain model.

    Args:
        r: the adapters' rank.
        alpha: their scale numerator (the update is scaled by ``alpha / r``).
        target_modules: the module names adapted, or ``all-linear``.
        objective: the objective, as in a fit config.
        lr: overrides the budget's learning rate (LoRA usually takes a larger one than full fine-tuning).
        overrides: any fit settings, laid over the rest (:class:`~sft_research.bench.arms.base.ObjectiveArm`).
    """

    def __init__(
        self,
        name: str,
        r: int = 8,
        alpha: int = 16,
        target_modules: list[str] | Literal["all-linear"] = "all-linear",
        objective: ObjectiveConfig = SFT_OBJECTIVE,
        lr: float | None = None,
        overrides: FitConfig | None = None,
    ):
        super().__init__(name, objective, lr, overrides)
        self.lora = LoraConfig(r=r, alpha=alpha, target_modules=target_modules, merge=True)

    def fit_overrides(self, suite: Suite) -> FitConfig:
        return deep_merge(super().fit_overrides(suite), {"model": {"pretrained": {"lora": asdict(self.lora)}}})
