"""The ways of fine-tuning a suite compares (:class:`Arm`): objectives, and pipelines of fits."""

from sft_research.bench.arms.base import SFT_OBJECTIVE, Arm, ObjectiveArm, ObjectiveConfig
from sft_research.bench.arms.clean_data import CleanDataArm
from sft_research.bench.arms.irft import IRFTArm
from sft_research.bench.arms.lora import LoRAArm
from sft_research.bench.arms.poft import PoFTArm
from sft_research.bench.arms.replay import ReplayArm
from sft_research.bench.arms.sft_then_dpo import SFTThenDPOArm

__all__ = [
    "Arm",
    "CleanDataArm",
    "IRFTArm",
    "LoRAArm",
    "ObjectiveArm",
    "ObjectiveConfig",
    "PoFTArm",
    "ReplayArm",
    "SFTThenDPOArm",
    "SFT_OBJECTIVE",
]
