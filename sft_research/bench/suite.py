"""A benchmark suite: one base model, one task (noisy training data, held-out prompts), forgetting probes, and
the arms (objectives or pipelines) trained on the same data under the same budget, over several seeds."""

from __future__ import annotations

import copy
import dataclasses
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sft_research.bench.evaluate import Measures
from sft_research.bench.probes import GeneralTextProbe, KLProbe, Probe, TaskScore
from sft_research.model.generation import GenerationConfig
from sft_research.model.loading import LoraConfig
from sft_research.pipelines import FitStage, IRFTStage, Stage
from sft_research.pipelines.stages import FitConfig

# An objective as in a fit config: {"class_path": ..., "init_args": {...}}; the fit parser checks it.
ObjectiveConfig = dict[str, str | dict[str, str | int | float | bool | None | list]]
# A training source as in a fit config's data.train: {"class_path": ..., "init_args": {...}}, sources nested in it.
SourceConfig = dict[str, str | dict]
SFT_OBJECTIVE: ObjectiveConfig = {"class_path": "sft_research.objectives.SFT"}


@dataclass
class TaskSpec:
    """The reasoning-gym task every arm trains on, and its held-out evaluation.

    Args:
        task: the reasoning-gym task.
        options: its generator options.
        train_size: training records.
        eval_size: held-out prompts for the task score.
        seed: the data seed (the same data for every arm and seed).
        noise_fraction: fraction of training answers corrupted; each record's verifier score is its ``quality``.
        max_new_tokens: longest generated answer.
    """

    task: str = "chain_sum"
    options: dict[str, int | float | str | bool] | None = None
    train_size: int = 240
    eval_size: int = 100
    seed: int = 0
    noise_fraction: float = 0.25
    max_new_tokens: int = 8

    def source(self, preference_pairs: bool = False, drop_corrupted: bool = False) -> SourceConfig:
        init = {k: v for k, v in asdict(self).items() if k != "max_new_tokens"}
        return {
            "class_path": "sft_research.data.ReasoningGymTask",
            "init_args": {**init, "preference_pairs": preference_pairs, "drop_corrupted": drop_corrupted},
        }


@dataclass
class Budget:
    """The training budget of every arm (an arm may change its own steps and learning rate).

    Args:
        max_steps: optimizer steps.
        batch_size: examples per step.
        micro_batch_size: examples per forward pass (None: the whole batch).
        lr: peak learning rate.
        warmup_ratio: linear warmup fraction.
        max_length: longest training sequence.
        accelerator: Lightning accelerator.
        precision: Lightning precision, e.g. ``bf16-mixed`` on GPUs.
    """

    max_steps: int = 30
    batch_size: int = 8
    micro_batch_size: int | None = None
    lr: float = 1e-4
    warmup_ratio: float = 0.1
    max_length: int = 256
    accelerator: str = "auto"
    precision: str | None = None


class Arm(ABC):
    """One way of fine-tuning, turned into pipeline stages for a suite and a seed.

    Args:
        name: the arm's name in the report.
    """

    def __init__(self, name: str):
        self.name = name

    def label(self, seed: int) -> str:
        return f"{self.name} · seed {seed}"

    @abstractmethod
    def stages(self, suite: Suite, seed: int) -> list[Stage]: ...


class ObjectiveArm(Arm):
    """One fit with an objective. Its subclasses change one thing of the fit (:meth:`fit_options`).

    Args:
        objective: the objective, as in a fit config (``class_path`` and ``init_args``).
        lr: overrides the budget's learning rate.
    """

    def __init__(self, name: str, objective: ObjectiveConfig, lr: float | None = None):
        super().__init__(name)
        self.objective, self.lr = objective, lr

    def fit_options(self, suite: Suite) -> dict[str, Any]:
        """Options of :meth:`Suite.fit_config` besides the objective and learning rate (e.g. ``train`` or ``lora``)."""
        return {}

    def stages(self, suite: Suite, seed: int) -> list[Stage]:
        return [FitStage("fit", suite.fit_config(self.label(seed), seed, self.objective, lr=self.lr, **self.fit_options(suite)))]


class CleanDataArm(ObjectiveArm):
    """An objective (SFT by default) on the task's uncorrupted records only: the smaller clean dataset that a perfect
    filter would leave, against which "a larger noisy dataset" is judged (the same steps and batch size).

    Args:
        objective: the objective, as in a fit config.
        lr: overrides the budget's learning rate.
    """

    def __init__(self, name: str, objective: ObjectiveConfig = SFT_OBJECTIVE, lr: float | None = None):
        super().__init__(name, objective, lr)

    def fit_options(self, suite: Suite) -> dict[str, Any]:
        return {"train": suite.task.source(drop_corrupted=True)}


class LoRAArm(ObjectiveArm):
    """An objective (SFT by default) through LoRA adapters (``peft``), a parameter-efficient fix for forgetting: the
    adapters are merged into the weights when training ends, so the evaluation loads a plain model.

    Args:
        r: the adapters' rank.
        alpha: their scale numerator (the update is scaled by ``alpha / r``).
        target_modules: the module names adapted, or ``all-linear``.
        objective: the objective, as in a fit config.
        lr: overrides the budget's learning rate (LoRA usually takes a larger one than full fine-tuning).
    """

    def __init__(
        self,
        name: str,
        r: int = 8,
        alpha: int = 16,
        target_modules: list[str] | Literal["all-linear"] = "all-linear",
        objective: ObjectiveConfig = SFT_OBJECTIVE,
        lr: float | None = None,
    ):
        super().__init__(name, objective, lr)
        self.lora = LoraConfig(r=r, alpha=alpha, target_modules=target_modules, merge=True)

    def fit_options(self, suite: Suite) -> dict[str, Any]:
        return {"lora": self.lora}


class ReplayArm(ObjectiveArm):
    """An objective (SFT by default) with general text replayed among the task's records as plain language modelling,
    a data fix for forgetting: ``text_fraction`` of the training records are pieces of ``text``
    (:class:`~sft_research.data.Mixture`), the same pieces for every training seed.

    The general-text probe's own text is the default, with every chunk the probe scores left out (no piece touches
    one or repeats 50 characters of one elsewhere): reasoning-gym ships no other prose. The pieces come from the same story as the probe's chunks, so replay may
    raise the probe's log-likelihood more than unrelated general text would; the probe's items are never trained on.

    Args:
        text_fraction: the fraction of the training records that are text.
        text: a text file, or ``reasoning_gym:NAME``; None: the general-text probe's.
        chunk_tokens: tokens per text piece; with the start and end tokens it must fit the budget's ``max_length``.
        objective: the objective, as in a fit config.
        lr: overrides the budget's learning rate.
    """

    def __init__(
        self,
        name: str,
        text_fraction: float = 0.25,
        text: str | None = None,
        chunk_tokens: int = 96,
        objective: ObjectiveConfig = SFT_OBJECTIVE,
        lr: float | None = None,
    ):
        super().__init__(name, objective, lr)
        self.text_fraction, self.text, self.chunk_tokens = text_fraction, text, chunk_tokens

    def source(self, suite: Suite) -> SourceConfig:
        probe = suite.probe(GeneralTextProbe)
        if probe is None and self.text is None:
            raise ValueError(f"arm {self.name!r}: no text to replay (set text, or give the suite a GeneralTextProbe)")
        text = self.text or probe.source
        exclude = [list(span) for span in probe_chunk_spans(probe, suite.base_model)] if probe is not None and text == probe.source else []
        chunks = {"path": text, "tokenizer": suite.base_model, "chunk_tokens": self.chunk_tokens, "exclude": exclude}
        return {
            "class_path": "sft_research.data.Mixture",
            "init_args": {
                "records": suite.task.source(),
                "text": {"class_path": "sft_research.data.TextChunks", "init_args": chunks},
                "text_fraction": self.text_fraction,
                "seed": suite.task.seed,
            },
        }

    def fit_options(self, suite: Suite) -> dict[str, Any]:
        return {"train": self.source(suite)}


def probe_chunk_spans(probe: GeneralTextProbe, tokenizer: str) -> list[tuple[int, int]]:
    """The ``[start, end)`` character spans of the chunks that the general-text probe scores under ``tokenizer``:
    :meth:`~sft_research.bench.probes.GeneralTextProbe.measure`'s chunking, mapped back to the text."""
    from sft_research.checkpoints.names import load_tokenizer

    offsets = load_tokenizer(tokenizer)(probe.text(), add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
    return [(offsets[start][0], offsets[start + probe.chunk_tokens - 1][1]) for start in probe.chunk_starts(len(offsets))]


class PoFTArm(Arm):
    """PoFT against a baseline that knows the task better than the start model: the start model fine-tuned with SFT
    on clean demonstrations of the task (other items than the training data's, none corrupted), as a first stage.

    Args:
        beta: PoFT's beta.
        gamma: PoFT's margin.
        baseline_steps: SFT steps of the baseline (None: the budget's).
    """

    def __init__(self, name: str, beta: float = 1.0, gamma: float = 0.0, baseline_steps: int | None = None):
        super().__init__(name)
        self.beta, self.gamma, self.baseline_steps = beta, gamma, baseline_steps

    def stages(self, suite: Suite, seed: int) -> list[Stage]:
        clean = dataclasses.replace(suite.task, noise_fraction=0.0, seed=suite.task.seed + 1)
        poft = {"class_path": "sft_research.objectives.PoFT", "init_args": {"beta": self.beta, "gamma": self.gamma}}
        return [
            FitStage(
                "baseline",
                suite.fit_config(f"{self.label(seed)} · baseline", seed, SFT_OBJECTIVE, self.baseline_steps, task=clean),
            ),
            FitStage("poft", suite.fit_config(self.label(seed), seed, poft), baselines_from=["baseline"]),
        ]


class SFTThenDPOArm(Arm):
    """SFT, then DPO from the SFT model (its frozen reference) on pairs of a right answer over a wrong one.

    Args:
        beta: DPO's beta.
        dpo_steps: DPO steps.
        dpo_lr: DPO's learning rate (the official recipes': 5e-7 to 1e-6 at 7B; a 135M model takes a larger one).
    """

    def __init__(self, name: str, beta: float = 0.1, dpo_steps: int = 15, dpo_lr: float = 5e-6):
        super().__init__(name)
        self.beta, self.dpo_steps, self.dpo_lr = beta, dpo_steps, dpo_lr

    def stages(self, suite: Suite, seed: int) -> list[Stage]:
        dpo = {"class_path": "sft_research.objectives.DPO", "init_args": {"beta": self.beta}}
        return [
            FitStage("sft", suite.fit_config(f"{self.label(seed)} · sft", seed, SFT_OBJECTIVE)),
            FitStage(
                "dpo",
                suite.fit_config(f"{self.label(seed)} · dpo", seed, dpo, self.dpo_steps, self.dpo_lr, preference_pairs=True),
                start_from="sft",
            ),
        ]


class IRFTArm(Arm):
    """IRFT rounds on the training prompts, the (noisy) training answers being the demonstrations.

    Args:
        rounds: T.
        beta: the implicit reward's beta.
        steps_per_round: optimizer steps in each round.
        lr: the learning rate (the official run's is 5e-7 at 7B; a 135M model takes a larger one, but not SFT's:
            at SFT's rate the demonstrations' likelihood falls together with the samples').
        generation: how each round samples its responses.

    The optimizer is the official run's: RMSprop with a linear decay.
    """

    def __init__(
        self,
        name: str,
        rounds: int = 2,
        beta: float = 0.1,
        steps_per_round: int = 15,
        lr: float = 5e-6,
        generation: GenerationConfig = GenerationConfig(max_new_tokens=8, do_sample=True),
    ):
        super().__init__(name)
        self.rounds, self.beta, self.steps_per_round, self.lr, self.generation = rounds, beta, steps_per_round, lr, generation

    def stages(self, suite: Suite, seed: int) -> list[Stage]:
        objective = {"class_path": "sft_research.objectives.IRFT", "init_args": {"beta": self.beta}}
        fit = suite.fit_config(self.label(seed), seed, objective, self.steps_per_round, self.lr, optimizer={"name": "rmsprop", "schedule": "linear"})
        return [IRFTStage("irft", fit, self.rounds, copy.deepcopy(self.generation), generation_batch_size=suite.eval_batch_size)]


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
        seeds: list[int] = [0],
        budget: Budget = Budget(),
        eval_batch_size: int = 50,
        keep_checkpoints: bool = False,
        reference_arm: str = "sft",
        eval_at: list[float] = [1.0],
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
        return Measures([TaskScore(self.task.max_new_tokens), *self.probes])

    def probe(self, kind: type[Probe]) -> Probe | None:
        """The suite's first probe of a kind, if any."""
        return next((probe for probe in self.probes if isinstance(probe, kind)), None)

    def fit_config(
        self,
        label: str,
        seed: int,
        objective: ObjectiveConfig,
        steps: int | None = None,
        lr: float | None = None,
        preference_pairs: bool = False,
        task: TaskSpec | None = None,
        optimizer: dict[str, str | float] | None = None,
        train: SourceConfig | None = None,
        lora: LoraConfig | None = None,
    ) -> FitConfig:
        """The fit config of one training run of this suite; the harness evaluates, so the fit does not validate.
        ``label`` names the run on its progress bar; ``task`` replaces the suite's training task and ``train`` its
        whole training source, ``optimizer`` adds optimizer settings, ``lora`` trains LoRA adapters."""
        budget = self.budget
        pretrained: dict[str, str | dict] = {"name_or_path": self.base_model}
        if lora is not None:
            pretrained["lora"] = asdict(lora)
        return {
            "seed_everything": seed,
            "trainer": {
                "accelerator": budget.accelerator,
                "precision": budget.precision,
                "max_steps": steps or budget.max_steps,
                "log_every_n_steps": 1,
                "limit_val_batches": 0,
                "enable_checkpointing": False,
                "enable_model_summary": False,
                "callbacks": [{"class_path": "sft_research.bench.progress.RunProgressBar", "init_args": {"label": label}}],
            },
            "model": {
                "pretrained": pretrained,
                "objective": copy.deepcopy(objective),
                "optimizer": {"lr": lr or budget.lr, "warmup_ratio": budget.warmup_ratio, **(optimizer or {})},
            },
            "data": {
                "train": copy.deepcopy(train) if train is not None else (task or self.task).source(preference_pairs),
                "max_length": budget.max_length,
                "batch_size": budget.batch_size,
                "micro_batch_size": budget.micro_batch_size,
                "eval_batch_size": self.eval_batch_size,
            },
        }
