"""The held-out-skills probe: tasks the base model can already do and no arm trains on."""

# No postponed annotations here: jsonargparse reads ``list[Skill]`` to build each skill from a suite's YAML.
from dataclasses import dataclass, field

from sft_research.bench.probes.base import Metric, Probe, ProbeContext
from sft_research.bench.probes.verifier import verifier_scores
from sft_research.bench.stats import differences, flips
from sft_research.data.task import VerifiableTask


@dataclass
class Skill:
    """One reasoning-gym task the base model can do (chosen with ``python benchmarks/select_skill_probes.py``).

    Args:
        task: the reasoning-gym task.
        options: its generator options.
        size: items scored.
        seed: the items' seed.
        max_new_tokens: longest answer.
    """

    task: str
    options: dict[str, int | float | str | bool] | None = None
    size: int = 50
    seed: int = 1234
    max_new_tokens: int = 16

    def source(self) -> VerifiableTask:
        from sft_research.data.reasoning_gym_task import ReasoningGymTask

        return ReasoningGymTask(self.task, self.options, train_size=0, eval_size=self.size, seed=self.seed)


@dataclass
class HeldOutSkillsProbe(Probe):
    """Accuracy on held-out skills, fine-tuned minus base, and the flip rate: the fraction of items the base model gets
    right and the fine-tuned model wrong (1 → 0), which a net change can hide. Items are the skills' in list order.

    Args:
        skills: the skills scored.
    """

    skills: list[Skill] = field(default_factory=list)

    name = "skills"
    metrics = (
        Metric("skill_accuracy_change", "Δ held-out-skill accuracy", higher_is_better=True),
        Metric("flip_rate", "skill flip rate (1→0)", higher_is_better=False),
    )
    value_label = "held-out-skill accuracy"

    def __post_init__(self):
        self._sources: list[VerifiableTask] | None = None

    def measure(self, model, context: ProbeContext) -> list[float]:
        if self._sources is None:  # generated once, for every model measured
            self._sources = [skill.source() for skill in self.skills]
        return [
            v for skill, source in zip(self.skills, self._sources) for v in verifier_scores(model, context, source, skill.max_new_tokens)
        ]

    def compare(self, finetuned: list[float], base: list[float]) -> dict[str, list[float]]:
        return {"skill_accuracy_change": differences(finetuned, base), "flip_rate": flips(finetuned, base)}
