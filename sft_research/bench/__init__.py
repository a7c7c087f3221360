"""The benchmark harness: task score against forgetting, across objectives and seeds."""

from sft_research.bench.probes import ForgettingProbes, GeneralTextProbe, KLProbe, SkillProbe
from sft_research.bench.suite import Arm, Budget, IRFTArm, ObjectiveArm, PoFTArm, SFTThenDPOArm, Suite, TaskSpec

__all__ = ["Arm", "Budget", "ForgettingProbes", "GeneralTextProbe", "IRFTArm", "KLProbe", "ObjectiveArm", "PoFTArm", "SFTThenDPOArm", "SkillProbe", "Suite", "TaskSpec"]
