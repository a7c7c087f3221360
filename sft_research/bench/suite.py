"""A benchmark suite: one base model, one task (training data, held-out items, a scorer), forgetting probes, and
the arms (objectives or pipelines) trained on the same data under the same budget, over several seeds."""

from __future__ import annotations

from dataclasses import dataclass

from sft_research.bench.arms import Arm, ObjectiveConfig
from sft_research.bench.evaluate import Measures
from sft_research.bench.overrides import deep_merge
from sft_research.bench.probes import GeneralTextProbe, KLProbe, Probe
from sft_research.bench.task import TaskSpec
from sft_research.pipelines.stages import FitConfig


@dataclass
class Budget:
    """The training budget of every arm (an arm may change any of it in its own fits, e.g. its steps or learning
    rate: :meth:`Suite.fit_config`'s overrides).

    Args:
        max_steps: optimizer steps.
        batch_size: examples per step.
        micro_batch_size: examples per forward pass (None: the whole batch).
        lr: peak learning rate.
        warmup_ratio: linear warmup fraction.
        max_length: longest training sequence.
        accelerator: Lightning accelerator.
        precision: Lightning precision, e.g. ``bf16-mixed`` on GPUs.
        shared_prefix: run the tokens a batch's sequences share once (``model.execution.shared_prefix``).
    """

    max_steps: int = 30
    batch_size: int = 8
    micro_batch_size: int | None = None
    lr: float = 1e-4
    warmup_ratio: float = 0.1
    max_length: int = 256
    accelerator: str = "auto"
    precision: str | None = None
    shared_prefix: bool = False


class Suite:
    """A benchmark suite.

    Args:
        base_model: the model every arm starts from.
        task: the training task and its held-out evaluation.
        probes: the forgetting probes (:class:`~sft_research.bench.probes.Probe` subclasses, by class path); None:
            the general-text probe on the default text, and KL from the base model (no held-out skills: choose them
            for the base model with ``benchmarks/select_skill_probes.py``).
        arms: the ways of fine-tuning compared.
        seeds: training seeds (the data stay the same).
        budget: the training budget.
        eval_batch_size: prompts per generation batch in evaluation.
        keep_checkpoints: keep each run's fine-tuned model (deleted once evaluated otherwise).
        reference_arm: the arm every other is compared with, item by item and seed by seed.
        eval_at: fractions of each arm's training at which it is evaluated, for curves of task score against
            forgetting: of the optimizer steps summed over the fits on its way to its final model (SFT then DPO: both;
            IRFT: every round; not PoFT's baseline), so that every arm is seen at the same share of its budget, which
            also gives early stopping as a baseline. The base model starts every curve and the final model ends it.
        sweep: a grid over suite keys (dotted, e.g. ``task.noise_fraction: [0.0, 0.25, 0.5]``; several keys make a
            product): each point runs as its own suite under ``<output_dir>/<key>=<value>``, and the report plots every
            metric against the swept values (:mod:`sft_research.bench.sweep`).
    """

    def __init__(
        self,
        arms: list[Arm],
        base_model: str = "embedded:SmolLM2-135M-Instruct",
        task: TaskSpec = TaskSpec(),
        probes: list[Probe] | None = None,
        seeds: tuple[int, ...] = (0,),
        budget: Budget = Budget(),
        eval_batch_size: int = 50,
        keep_checkpoints: bool = False,
        reference_arm: str = "sft",
        eval_at: tuple[float, ...] = (1.0,),
        sweep: dict[str, list[int | float | str | bool | None]] | None = None,
    ):
        names = [arm.name for arm in arms]
        if not arms or len(set(names)) != len(names):
            raise ValueError(f"a suite needs arms with unique names, got {names}")
        if reference_arm not in names:
            raise ValueError(f"reference_arm {reference_arm!r} is not one of the arms {names}")
        if not eval_at or not all(0.0 < f <= 1.0 for f in eval_at):
            raise ValueError(f"eval_at must be fractions in (0, 1], got {eval_at}")
        self.reference_arm, self.eval_at, self.sweep = reference_arm, sorted(set(eval_at)), sweep
        self.base_model, self.task, self.arms = base_model, task, arms
        self.probes = [GeneralTextProbe(), KLProbe()] if probes is None else list(probes)
        if not self.probes:
            raise ValueError("a suite needs at least one forgetting probe (or none given: the default ones)")
        self.measures()  # refuses probes that share a name
        self.seeds, self.budget, self.eval_batch_size, self.keep_checkpoints = list(seeds), budget, eval_batch_size, keep_checkpoints

    def measures(self) -> Measures:
        """The task score, then the probes."""
        return Measures([self.task.task_score(), *self.probes])

    def probe(self, kind: type[Probe]) -> Probe | None:
        """The suite's first probe of a kind, if any."""
        return next((probe for probe in self.probes if isinstance(probe, kind)), None)

    def fit_config(self, label: str, seed: int, objective: ObjectiveConfig, overrides: FitConfig | None = None) -> FitConfig:
        """The fit config of one training run of this suite, with an arm's ``overrides`` laid over it
        (:func:`~sft_research.bench.overrides.deep_merge`; e.g. ``{"trainer": {"max_steps": 15}}``); the harness
        evaluates, so the fit does not validate. ``label`` names the run on its progress bar."""
        budget = self.budget
        config = {
            "seed_everything": seed,
            "trainer": {
                "accelerator": budget.accelerator,
                "precision": budget.precision,
                "max_steps": budget.max_steps,
                "log_every_n_steps": 1,
                "limit_val_batches": 0,
                "enable_checkpointing": False,
                "enable_model_summary": False,
                "callbacks": [{"class_path": "sft_research.train.callbacks.progress_bar.StepProgressBar", "init_args": {"label": label}}],
            },
            "model": {
                "pretrained": {"name_or_path": self.base_model},
                "objective": objective,
                "optimizer": {"lr": budget.lr, "warmup_ratio": budget.warmup_ratio},
            },
            "data": {
                "train": self.task.source(),
                "lengths": {"max_length": budget.max_length},
                "batch_size": budget.batch_size,
                "micro_batch_size": budget.micro_batch_size,
                "eval_batch_size": self.eval_batch_size,
            },
        }
        if budget.shared_prefix:
            config["model"]["execution"] = {"shared_prefix": True}
        return deep_merge(config, overrides or {})
