"""Evaluates one model on a suite: per-item values of the task score and of every forgetting probe."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sft_research.bench.probes import general_text_loglik, kl_from_base, verifier_scores
from sft_research.bench.stats import Estimate, differences, flips, mean_se
from sft_research.data.reasoning_gym_task import ReasoningGymTask
from sft_research.data.tokenize import Tokenizer
from sft_research.model.loading import ModelConfig, load_model
from sft_research.checkpoints.names import load_tokenizer

METRICS = ("task_score", "general_text_loglik_change", "skill_accuracy_change", "flip_rate", "kl_from_base")


@dataclass
class Evaluation:
    """Per-item values: task items right (1/0), text chunks' mean log-likelihood per token, skill items right per
    probe, and per-prompt KL from the base model."""

    task: list[float]
    general_text: list[float]
    skills: dict[str, list[float]]
    kl: list[float]

    def item_values(self, base: Evaluation) -> dict[str, list[float]]:
        """Per metric, one value per item, in the same item order for every model: the task score, and each forgetting
        probe as this model's value minus the base model's on the same item. Metrics are their means, and arms are
        compared item by item on them."""
        skills = [v for name in sorted(self.skills) for v in self.skills[name]]
        base_skills = [v for name in sorted(base.skills) for v in base.skills[name]]
        return {
            "task_score": list(self.task),
            "general_text_loglik_change": differences(self.general_text, base.general_text),
            "skill_accuracy_change": differences(skills, base_skills),
            "flip_rate": flips(skills, base_skills),
            "kl_from_base": list(self.kl),
        }

    def metrics(self, base: Evaluation) -> dict[str, Estimate]:
        """The mean of each metric's item values, with its item-level standard error."""
        return {name: mean_se(values) for name, values in self.item_values(base).items()}

    def to_dict(self) -> dict:
        return asdict(self)


class Evaluator:
    """Holds the base model (for KL) and the evaluation data of a suite."""

    def __init__(self, suite, device):
        self.suite, self.device = suite, device
        spec = suite.task
        self.task = ReasoningGymTask(spec.task, spec.options, spec.train_size, spec.eval_size, spec.seed, spec.noise_fraction)
        self.skill_tasks = {f"{probe.task}": (probe, probe.source()) for probe in suite.probes.skills}
        self.base = load_model(ModelConfig(suite.base_model)).to(device).eval()

    def evaluate(self, name_or_path: str, is_base: bool = False) -> Evaluation:
        model = self.base if is_base else load_model(ModelConfig(name_or_path)).to(self.device).eval()
        tokenizer = load_tokenizer(name_or_path)
        renderer = Tokenizer(tokenizer)
        batch = self.suite.eval_batch_size
        probes = self.suite.probes
        kl_prompts = self.task.eval_prompts()[: probes.kl.num_prompts]
        return Evaluation(
            task=verifier_scores(model, tokenizer, renderer, self.task, self.suite.task.max_new_tokens, batch),
            general_text=general_text_loglik(model, tokenizer, probes.general_text, min(batch, 8)),
            skills={
                name: verifier_scores(model, tokenizer, renderer, source, probe.max_new_tokens, batch)
                for name, (probe, source) in self.skill_tasks.items()
            },
            kl=[0.0] * len(kl_prompts) if is_base else kl_from_base(model, self.base, tokenizer, renderer, kl_prompts, probes.kl, batch),
        )
