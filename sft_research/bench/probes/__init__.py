"""What the harness measures on a model: the task score and the forgetting probes (:class:`Probe`)."""

from sft_research.bench.probes.base import Metric, Probe, ProbeContext
from sft_research.bench.probes.general_text import NOVEL, GeneralTextProbe
from sft_research.bench.probes.kl import KLProbe
from sft_research.bench.probes.lm_eval import LmEvalProbe
from sft_research.bench.probes.skills import HeldOutSkillsProbe, Skill
from sft_research.bench.probes.task_score import TASK_SCORE, TaskScore, task_and_forgetting

__all__ = [
    "GeneralTextProbe",
    "HeldOutSkillsProbe",
    "KLProbe",
    "LmEvalProbe",
    "Metric",
    "NOVEL",
    "Probe",
    "ProbeContext",
    "Skill",
    "TASK_SCORE",
    "TaskScore",
    "task_and_forgetting",
]
