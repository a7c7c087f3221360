"""The benchmark harness: task score against forgetting, across objectives and seeds."""

from sft_research.bench.probes import ForgettingProbes, GeneralTextProbe, KLProbe, SkillProbe
from sft_research.bench.suite import Arm, Budget, IRFTArm, LoRAArm, ObjectiveArm, PoFTArm, ReplayArm, SFTThenDPOArm, Suite, TaskSpec

__all__ = ["Arm", "Budget", "ForgettingProbes", "GeneralTextProbe", "IRFTArm", "KLProbe", "LoRAArm", "ObjectiveArm", "PoFTArm", "ReplayArm", "SFTThenDPOArm", "SkillProbe", "Suite", "TaskSpec"]
