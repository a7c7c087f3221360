"""IRFT: T rounds of (generate with the round-start model, train on demonstration vs generation).

Li et al. (2024), arXiv 2405.17888, Algorithm 2, as run by the official ``scripts/run_IRFT.sh``: the prompts are split
into T chunks, round t generates a response to each prompt of chunk t with the model at the start of the round,
and trains one fit on (demonstration, generation) pairs with that model as the frozen reference. T = 1 is SPIN.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import torch

from sft_research.curve_points import add_curve_points, curve_points
from sft_research.data.collate import prompt_batches
from sft_research.data.errors import DataError
from sft_research.data.records import Conversation
from sft_research.files import atomic_write_text
from sft_research.fit import build_fit, is_done, parse_fit, run_fit
from sft_research.model.generation import GenerationConfig, generate_with_status
from sft_research.model.loading import ModelConfig, load_model
from sft_research.objectives.irft import IRFT
from sft_research.pipelines.stages import FitConfig, Stage, fit_steps
from sft_research.timings import timed


class IRFTStage(Stage):
    """IRFT rounds over the demonstrations of a fit config.

    Args:
        fit: a ``sft-research fit`` config whose data are demonstrations (prompt/completion records) and whose
            objective is :class:`~sft_research.objectives.IRFT`; each round trains with it on its pairs.
        rounds: T, the number of rounds.
        generation: how each round samples its responses (logged to ``round_<t>/generation.json``).
        split_prompts: give each round its own 1/T of the prompts (the official stage-wise run); otherwise every
            round uses them all.
        generation_batch_size: prompts per generation batch.
        unfinished: what to do with a generation that reached ``max_new_tokens`` without an end of turn: ``keep`` it
            as an unfinished answer (no end-of-turn token, so none is trained on), or ``drop`` its pair. Either way
            ``generation.json`` lists them.
    """

    def __init__(
        self,
        name: str,
        fit: FitConfig,
        rounds: int = 2,
        generation: GenerationConfig = GenerationConfig(max_new_tokens=64, do_sample=True),
        split_prompts: bool = True,
        generation_batch_size: int = 32,
        unfinished: Literal["keep", "drop"] = "keep",
        start_from: str | None = None,
    ):
        super().__init__(name, start_from)
        self.unfinished = unfinished
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        self.fit, self.rounds, self.generation = fit, rounds, generation
        self.curve_steps: list[int] = []
        self.split_prompts, self.generation_batch_size = split_prompts, generation_batch_size

    def check(self) -> None:
        import importlib

        objective = parse_fit(self.fit).model.objective.class_path
        module, _, name = objective.rpartition(".")
        if not issubclass(getattr(importlib.import_module(module), name), IRFT):
            raise ValueError(f"stage {self.name!r}: the IRFT stage's objective must be IRFT, got {objective}")

    def final_model(self, stage_dir: Path) -> Path:
        return stage_dir / f"round_{self.rounds - 1}" / "hf_model"

    def steps(self) -> int:
        return self.rounds * fit_steps(self.name, self.fit)

    def add_curve_points(self, steps: list[int]) -> None:
        self.curve_steps = sorted(steps)

    def round_curve_steps(self, t: int) -> list[int]:
        """The curve's steps inside round ``t``, counted from the round's start."""
        per_round = fit_steps(self.name, self.fit)
        return [step - t * per_round for step in self.curve_steps if t * per_round < step < (t + 1) * per_round]

    def end_fit(self) -> str:
        return f"{self.name}/round_{self.rounds - 1}"

    def curve(self, stage_dir: Path) -> list[tuple[str, int, Path]]:
        per_round, points = fit_steps(self.name, self.fit), []
        for t in range(self.rounds):
            round_dir, fit = stage_dir / f"round_{t}", f"{self.name}/round_{t}"
            points += [(fit, t * per_round + step, path) for step, path in curve_points(round_dir)]
            points.append((fit, (t + 1) * per_round, round_dir / "hf_model"))
        return points

    def run(self, stage_dir: Path, start_model: str | None, earlier: dict[str, Path]) -> None:
        demonstrations = None  # built once, for every round that still has to generate
        model = start_model
        for t in range(self.rounds):
            round_dir = stage_dir / f"round_{t}"
            if is_done(round_dir):
                print(f"IRFT round {t}: done already, skipped")
            else:
                demonstrations = demonstrations or build_fit(self.fit)
                pairs = self.write_pairs(round_dir, demonstrations, model, t)
                config = add_curve_points(copy.deepcopy(self.fit), self.round_curve_steps(t))
                data = config.setdefault("data", {})
                if data.get("val") is None:
                    data["val"] = data.get("train")  # keep evaluating on the demonstrations' task
                data["train"] = {"class_path": "sft_research.data.FileDataset", "init_args": {"path": str(pairs)}}
                lora = config.get("model", {}).get("pretrained", {}).get("lora")
                if lora is not None:
                    lora["merge"] = True  # the next round starts from full weights, as the official run merges
                run_fit(config, round_dir, model)
            model = str(round_dir / "hf_model")

    def write_pairs(self, round_dir: Path, demonstrations, model: str | None, t: int) -> Path:
        """Generates with the round-start model and writes (prompt, chosen = demonstration, rejected = generation).

        The prompts are rendered exactly as for training (the data's prompt format and chat template); the official
        code instead prompts with ``### Instruction: ...\n\n### Response: ``, a format its chat model never trained on.
        """
        data = demonstrations.datamodule
        data.record_kind = "sft"  # demonstrations, whatever the objective trains on (the command line set pairs)
        data.setup("fit")
        pretrained = demonstrations.model.pretrained
        start = model or pretrained.name_or_path
        seed = self.fit.get("seed_everything", 0)
        seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else 0
        examples = list(data.train_examples)
        # The official run shuffles the prompts (seeded) before splitting them into rounds.
        random.Random(seed).shuffle(examples)
        if self.split_prompts:
            examples = examples[t * len(examples) // self.rounds : (t + 1) * len(examples) // self.rounds]
        demos = [self.demonstration(example) for example in examples]
        device = demonstrations.trainer.strategy.root_device
        policy = (
            load_model(ModelConfig(start, dtype=pretrained.dtype, attn_implementation=pretrained.attn_implementation)).to(device).eval()
        )
        torch.manual_seed(seed + t)
        generations: list[str] = []
        finished: list[bool] = []
        sampled_tokens = 0
        for batch in prompt_batches(
            data.renderer, [prompt for prompt, _ in demos], data.tokenizer.pad_token_id, self.generation_batch_size
        ):
            with timed("IRFT sampling"):
                sampled = generate_with_status(policy, data.tokenizer, batch["prompt_ids"], batch["prompt_attention_mask"], self.generation)
            generations += sampled.texts
            finished += sampled.finished
            sampled_tokens += sum(sampled.lengths)
        del policy
        # A generation cut at max_new_tokens is not an answer the model finished: it is kept without an end of turn
        # (``unfinished: keep``), so that the loss never treats the cut as the place to stop, or left out (``drop``).
        # An empty one leaves nothing to contrast and is left out.
        rows = [
            {"prompt": p, "chosen": demo, "rejected": gen if not ended else gen.strip(), "rejected_finished": ended}
            for (p, demo), gen, ended in zip(demos, generations, finished)
        ]
        unfinished = [i for i, ended in enumerate(finished) if not ended]
        empty = [i for i, row in enumerate(rows) if not row["rejected"].strip()]
        dropped = set(empty) | (set(unfinished) if self.unfinished == "drop" else set())
        kept = [row for i, row in enumerate(rows) if i not in dropped]
        if not kept:
            raise ValueError(f"IRFT round {t}: no usable generation ({len(empty)} empty, {len(unfinished)} unfinished)")
        pairs = round_dir / "pairs.jsonl"
        atomic_write_text(pairs, "".join(json.dumps(row) + "\n" for row in kept))
        report = {
            "round": t,
            "start_model": start,
            "device": str(device),
            "generation": asdict(self.generation),
            "prompts": len(rows),
            "generated_tokens": sampled_tokens,
            "pairs": len(kept),
            "unfinished_generations": unfinished,
            "unfinished": self.unfinished,
            "left_out_empty_generations": empty,
            "generation_equal_to_demonstration": sum(row["chosen"].strip() == row["rejected"] for row in kept),
        }
        atomic_write_text(round_dir / "generation.json", json.dumps(report, indent=1))
        print(f"IRFT round {t}: {json.dumps({k: v if not isinstance(v, list) else len(v) for k, v in report.items()})}")
        return pairs

    @staticmethod
    def demonstration(example) -> tuple[str, str]:
        record, raw = example.record, example.raw
        if not isinstance(record, Conversation) or [m.role for m in record.messages] != ["user", "assistant"]:
            raise DataError(raw.source, "IRFT needs prompt/completion demonstrations", row=raw.row)
        return record.messages[0].content, record.messages[1].content
