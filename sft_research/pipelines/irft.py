"""IRFT: T rounds of (generate with the round-start model, train on demonstration vs generation).

Li et al. (2024), arXiv 2405.17888, Algorithm 2, as run by the official ``scripts/run_IRFT.sh``: the prompts are split
into T chunks, round t generates a response to each prompt of chunk t with the model at the start of the round,
and trains one fit on (demonstration, generation) pairs with that model as the frozen reference. T = 1 is SPIN.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict
from pathlib import Path
import torch

from sft_research.data.collate import collate_prompts
from sft_research.data.errors import DataError
from sft_research.data.records import Conversation, parse_record
from sft_research.evaluation.task_accuracy import GenerationConfig, generate
from sft_research.model.loading import ModelConfig, load_model
from sft_research.objectives.irft import IRFT
from sft_research.pipelines.stages import FitConfig, Stage, is_done, parse_fit, run_fit


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
    """

    def __init__(
        self,
        name: str,
        fit: FitConfig,
        rounds: int = 2,
        generation: GenerationConfig = GenerationConfig(max_new_tokens=64, do_sample=True),
        split_prompts: bool = True,
        generation_batch_size: int = 32,
        start_from: str | None = None,
    ):
        super().__init__(name, start_from)
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        self.fit, self.rounds, self.generation = fit, rounds, generation
        self.split_prompts, self.generation_batch_size = split_prompts, generation_batch_size

    def check(self) -> None:
        import importlib

        objective = parse_fit(self.fit).model.objective.class_path
        module, _, name = objective.rpartition(".")
        if not issubclass(getattr(importlib.import_module(module), name), IRFT):
            raise ValueError(f"stage {self.name!r}: the IRFT stage's objective must be IRFT, got {objective}")

    def final_model(self, stage_dir: Path) -> Path:
        return stage_dir / f"round_{self.rounds - 1}" / "hf_model"

    def run(self, stage_dir: Path, start_model: str | None) -> None:
        model = start_model
        for t in range(self.rounds):
            round_dir = stage_dir / f"round_{t}"
            if is_done(round_dir):
                print(f"IRFT round {t}: done already, skipped")
            else:
                pairs = self.write_pairs(round_dir, model, t)
                config = copy.deepcopy(self.fit)
                data = config.setdefault("data", {})
                if data.get("val") is None:
                    data["val"] = data.get("train")  # keep evaluating on the demonstrations' task
                data["train"] = {"class_path": "sft_research.data.FileDataset", "init_args": {"path": str(pairs)}}
                run_fit(config, round_dir, model)
            model = str(round_dir / "hf_model")

    def write_pairs(self, round_dir: Path, model: str | None, t: int) -> Path:
        """Generates with the round-start model and writes (prompt, chosen = demonstration, rejected = generation)."""
        cli = run_fit(copy.deepcopy(self.fit), round_dir, model, run=False)
        data = cli.datamodule
        data.setup("fit")
        examples = data.train_examples
        if self.split_prompts:
            examples = examples[t * len(examples) // self.rounds : (t + 1) * len(examples) // self.rounds]
        demos = [self.demonstration(example.raw) for example in examples]
        policy = load_model(ModelConfig(cli.model.pretrained.name_or_path, dtype=cli.model.pretrained.dtype)).eval()
        seed = self.fit.get("seed_everything", 0)
        torch.manual_seed((seed if isinstance(seed, int) and not isinstance(seed, bool) else 0) + t)
        generations: list[str] = []
        for first in range(0, len(demos), self.generation_batch_size):
            chunk = demos[first : first + self.generation_batch_size]
            batch = collate_prompts([(i, data.renderer.prompt_ids(prompt)) for i, (prompt, _) in enumerate(chunk)], data.tokenizer.pad_token_id)
            generations += generate(policy, data.tokenizer, batch["prompt_ids"], batch["prompt_attention_mask"], self.generation)
        rows = [{"prompt": p, "chosen": demo, "rejected": gen.strip()} for (p, demo), gen in zip(demos, generations)]
        empty = [i for i, row in enumerate(rows) if not row["rejected"]]
        # An empty generation would be an empty rejected response: there is nothing to contrast, so it is left out.
        kept = [row for row in rows if row["rejected"]]
        if not kept:
            raise ValueError(f"IRFT round {t}: every generation was empty")
        pairs = round_dir / "pairs.jsonl"
        temporary = pairs.with_suffix(".jsonl.tmp")
        temporary.write_text("".join(json.dumps(row) + "\n" for row in kept))
        os.replace(temporary, pairs)
        report = {
            "round": t,
            "start_model": cli.model.pretrained.name_or_path,
            "generation": asdict(self.generation),
            "prompts": len(rows),
            "pairs": len(kept),
            "left_out_empty_generations": empty,
            "generation_equal_to_demonstration": sum(row["chosen"].strip() == row["rejected"] for row in kept),
        }
        (round_dir / "generation.json").write_text(json.dumps(report, indent=1))
        print(f"IRFT round {t}: {json.dumps(report)}")
        return pairs

    @staticmethod
    def demonstration(raw) -> tuple[str, str]:
        record = parse_record(raw)
        if not isinstance(record, Conversation) or [m.role for m in record.messages] != ["user", "assistant"]:
            raise DataError(raw.source, "IRFT needs prompt/completion demonstrations", row=raw.row)
        return record.messages[0].content, record.messages[1].content
