"""The benchmark harness: task score against forgetting, across objectives and seeds."""

from sft_research.bench.arms import Arm, CleanDataArm, IRFTArm, LoRAArm, ObjectiveArm, PoFTArm, ReplayArm, SFTThenDPOArm
from sft_research.bench.probes import GeneralTextProbe, HeldOutSkillsProbe, KLProbe, LmEvalProbe, Metric, Probe, ProbeContext, Skill
from sft_research.bench.suite import Budget, Suite, TaskSpec

__all__ = [
    "Arm",
    "Budget",
    "CleanDataArm",
    "GeneralTextProbe",
    "HeldOutSkillsProbe",
    "IRFTArm",
    "KLProbe",
    "LmEvalProbe",
    "LoRAArm",
    "Metric",
    "ObjectiveArm",
    "PoFTArm",
    "Probe",
    "ProbeContext",
    "ReplayArm",
    "SFTThenDPOArm",
    "Skill",
    "Suite",
    "TaskSpec",
]
