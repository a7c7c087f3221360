"""What each run of a suite spent on training, read back from its folder, so that no arm wins by spending more.

Every fit of a run leaves its config (``fit.yaml``) and its logs (``logs/version_N/metrics.csv``); an IRFT round also
leaves its generations and the count of the tokens it sampled (``pairs.jsonl``, ``generation.json``). The training data are re-read and re-tokenized from
the config (seconds), and the batches the fit trained on are replayed from its sampler's seed, so the counts are
those of the sequences the run actually trained on, without the training module having to log them.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import yaml

from sft_research.data.datamodule import SFTDataModule
from sft_research.data.sampler import ResumableShuffleSampler
from sft_research.data.tokenize import TokenizedExample
from sft_research.frozen.cache import sequences_fingerprint
from sft_research.frozen.inputs import FrozenContext, ReferenceLogprobs
from sft_research.model.loading import ModelConfig
from sft_research.objectives.base import Objective

@dataclass
class Compute:
    """What one run spent on training; the evaluation is the same for every arm and is not counted.

    Attributes:
        optimizer_steps: optimizer steps, over every fit of the run.
        tokens: tokens of the sequences trained on (each through a forward and a backward pass), padding left out.
        completion_tokens: those of them in the loss (completions, and every token of plain text).
        policy_sequences: sequences through a forward and a backward pass of the model being trained.
        frozen_sequences: sequences scored by frozen models (references, baselines), whether computed in this run or
            read from the on-disk cache, since a run on other data would have had to compute them.
        generated_tokens: tokens sampled from the model (IRFT's rounds).

    The run's wall time is its row's ``wall_s``.
    """

    # Each with its label in the report's table.
    optimizer_steps: int = field(default=0, metadata={"label": "optimizer steps"})
    tokens: int = field(default=0, metadata={"label": "tokens trained"})
    completion_tokens: int = field(default=0, metadata={"label": "of them in the loss"})
    policy_sequences: int = field(default=0, metadata={"label": "policy fwd+bwd sequences"})
    frozen_sequences: int = field(default=0, metadata={"label": "frozen-model sequences"})
    generated_tokens: int = field(default=0, metadata={"label": "generated tokens"})

    def add(self, other: Compute) -> None:
        for quantity in fields(self):
            setattr(self, quantity.name, getattr(self, quantity.name) + getattr(other, quantity.name))


def run_compute(run_dir: Path) -> tuple[Compute, dict[str, str]]:
    """The compute of every fit under ``run_dir`` summed, and per fit (its folder relative to ``run_dir``) the
    fingerprint of its training data as rendered (:func:`~sft_research.frozen.cache.sequences_fingerprint` with its training targets). Call it while the run's models are
    still there: a fit's tokenizer and frozen baselines are read from them."""
    total, fingerprints = Compute(), {}
    for config_path in sorted(run_dir.rglob("fit.yaml")):
        fit_dir = config_path.parent
        compute, fingerprints[fit_dir.relative_to(run_dir).as_posix()] = fit_compute(fit_dir)
        total.add(compute)
    return total, fingerprints


def fit_compute(fit_dir: Path) -> tuple[Compute, str]:
    config = yaml.safe_load((fit_dir / "fit.yaml").read_text())
    data, objective = data_and_objective(config)
    data.setup("fit")
    examples = data.train_examples
    steps, batches = trained_batches(fit_dir)
    seed = config.get("seed_everything", 0)
    trained = [examples[i] for batch in replay_batches(len(examples), data.batch_size, seed, batches) for i in batch]
    sequences = [sequence for example in trained for sequence in example.sequences]
    compute = Compute(
        optimizer_steps=steps,
        tokens=sum(len(sequence.input_ids) for sequence in sequences),
        completion_tokens=sum(sum(sequence.completion_mask) for sequence in sequences),
        policy_sequences=len(sequences),
        frozen_sequences=frozen_sequences(config, objective, data, len(sequences)),
        generated_tokens=generated_tokens(fit_dir) if (fit_dir / "generation.json").is_file() else 0,
    )
    return compute, sequences_fingerprint(examples, training_targets=True)


def data_and_objective(config: dict) -> tuple[SFTDataModule, Objective]:
    """The fit's data module and objective, built by the same types as the fit's parser, nothing else."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(SFTDataModule, "data")
    parser.add_argument("--objective", type=Objective)
    model = config.get("model", {})
    # The fit's parser links the tokenizer to the model; the data's validation source plays no part in training.
    data = {**config["data"], "val": None, "tokenizer": model.get("pretrained", {}).get("name_or_path")}
    built = parser.instantiate_classes(parser.parse_object({"data": data, "objective": model.get("objective", "sft_research.objectives.SFT")}))
    return built.data, built.objective


def trained_batches(fit_dir: Path) -> tuple[int, int]:
    """Optimizer steps and batches trained on, from the newest log of the fit (an attempt killed part-way leaves an
    older one). A batch skipped for a non-finite loss was computed but made no step."""
    logs = sorted((fit_dir / "logs").glob("version_*/metrics.csv"), key=lambda path: int(path.parent.name.removeprefix("version_")))
    with logs[-1].open(newline="") as file:
        rows = list(csv.DictReader(file))
    steps = sum(1 for row in rows if row.get("train/loss"))
    skipped = max((int(float(row["train/skipped_batches"])) for row in rows if row.get("train/skipped_batches")), default=0)
    return steps, steps + skipped


def replay_batches(size: int, batch_size: int, seed: int, batches: int) -> list[list[int]]:
    """The example indices of the first ``batches`` batches of a fit seeded with ``seed``, epoch after epoch, as its
    sampler drew them (one process: the union of every process's share is the same global batch)."""
    sampler = ResumableShuffleSampler(size, batch_size, seed)
    drawn: list[list[int]] = []
    epoch = 0
    while len(drawn) < batches:
        sampler.set_epoch(epoch)
        drawn += sampler.batches()
        epoch += 1
    return drawn[:batches]


def frozen_sequences(config: dict, objective: Objective, data: SFTDataModule, trained_sequences: int) -> int:
    """Sequences that the objective's frozen inputs have frozen models score: each input is computed with a stand-in
    for the frozen models that counts what it is given, so any :class:`~sft_research.frozen.inputs.FrozenInput`
    is counted as it would run. A reference run on every batch (``frozen_logprobs: on_the_fly``) scores every
    sequence trained on instead."""
    model = config.get("model", {})
    pretrained = ModelConfig(model.get("pretrained", {}).get("name_or_path"))
    reference = ModelConfig(model.get("reference") or pretrained.name_or_path)
    counted = 0

    def count(_: ModelConfig, examples: list[TokenizedExample], pad_token_id: int) -> list[torch.Tensor]:
        nonlocal counted
        counted += sum(len(example.sequences) for example in examples)
        return [torch.zeros(len(e.sequences), max(len(s.input_ids) for s in e.sequences) - 1) for e in examples]

    context = FrozenContext(pretrained, reference, data.renderer, count)
    on_the_fly = model.get("frozen_logprobs") == "on_the_fly"
    for frozen in objective.frozen_inputs:
        if on_the_fly and isinstance(frozen, ReferenceLogprobs):
            counted += trained_sequences
        else:
            frozen.compute(data.train_examples, context)
    return counted


def generated_tokens(round_dir: Path) -> int:
    """Tokens an IRFT round sampled, as its ``generation.json`` counted them (every generation, end of turn included,
    whether its pair was kept or not)."""
    report = json.loads((round_dir / "generation.json").read_text())
    if "generated_tokens" not in report:
        raise ValueError(f"{round_dir / 'generation.json'}: no generated_tokens (written by an older version): run the round again")
    return report["generated_tokens"]

