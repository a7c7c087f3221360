"""The benchmark harness: task score against forgetting, across objectives and seeds."""

from sft_research.bench.arms import Arm, CleanDataArm, IRFTArm, LoRAArm, ObjectiveArm, PoFTArm, ReplayArm, SFTThenDPOArm
from sft_research.bench.probes import GeneralTextProbe, HeldOutSkillsProbe, KLProbe, LmEvalProbe, Metric, Probe, ProbeContext, Skill
from sft_research.bench.scorers import CallableScorer, ExactMatch, LmEvalTask, MultipleChoice, NumericMatch, Scorer, Verifier
from sft_research.bench.suite import Budget, Suite
from sft_research.bench.task import TaskSpec

__all__ = [
    "Arm",
    "Budget",
    "CallableScorer",
    "CleanDataArm",
    "ExactMatch",
    "GeneralTextProbe",
    "HeldOutSkillsProbe",
    "IRFTArm",
    "KLProbe",
    "LmEvalProbe",
    "LmEvalTask",
    "LoRAArm",
    "Metric",
    "MultipleChoice",
    "NumericMatch",
    "ObjectiveArm",
    "PoFTArm",
    "Probe",
    "ProbeContext",
    "ReplayArm",
    "SFTThenDPOArm",
    "Scorer",
    "Skill",
    "Suite",
    "TaskSpec",
    "Verifier",
]
