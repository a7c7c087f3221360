"""IRFT: T rounds of (generate with the round-start model, train on demonstration vs generation).

Li et al. (2024), arXiv 2405.17888, Algorithm 2, as run by the official ``scripts/run_IRFT.sh``: the prompts are
shuffled as ``datasets.Dataset.shuffle(seed)`` shuffles them and split into T chunks, round t generates a response to
each prompt of chunk t with the model at the start of the round, and trains one fit on (demonstration, generation)
pairs with that model as the frozen reference. T = 1 is SPIN.

A round's generation runs inside its fit, where the fit's processes share it: the pipeline writes the round's
prompts (no model loaded), and the fit's training data is :class:`RoundPairs`, which generates the pairs as the fit
reads them, each process answering its share of the prompts.
"""

from __future__ import annotations

import copy
import gc
import json
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from sft_research.checkpoints.names import load_tokenizer
from sft_research.data.collate import collate_prompts
from sft_research.data.records import Conversation
from sft_research.data.sources import DataSource, RawRecord
from sft_research.errors import DataError
from sft_research.fit.lightning_cli import build_fit, parse_fit
from sft_research.fit.run import is_done, run_fit
from sft_research.frozen.shares import Shares
from sft_research.model.generation import GenerationConfig, GenerationCount, Generations, generate_with_status
from sft_research.model.loading import ModelConfig, load_model
from sft_research.objectives.irft import IRFT
from sft_research.pipelines.stages import FitConfig, Stage, StageFit, fit_steps, placeholder
from sft_research.runs.atomic_files import atomic_write_text
from sft_research.runs.timings import timed
from sft_research.train.curve_points import add_curve_points, curve_points


class IRFTStage(Stage):
    """IRFT rounds over the demonstrations of a fit config. Before each round's fit the stage writes the round's
    prompts; the fit generates the pairs as it reads its training data (:class:`RoundPairs`).

    Args:
        fit: a ``sft-research fit`` config whose data are demonstrations (prompt/completion records) and whose
            objective is :class:`~sft_research.objectives.IRFT`; each round trains with it on its pairs.
        rounds: T, the number of rounds.
        generation: how each round samples its responses (logged to ``round_<t>/generation.json``).
        split_prompts: give each round its own 1/T of the prompts (the official stage-wise run); otherwise every
            round uses them all.
        generation_batch_size: prompts per generation batch; the fit's processes share whole batches.
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

    def fits(self) -> list[StageFit]:
        # Every round's fit: the stage's config, from the stage's start model, on pairs generated from its data's
        # demonstrations (SFT records).
        config = copy.deepcopy(self.fit)
        if self.start_from is not None:
            config.setdefault("model", {}).setdefault("pretrained", {})["name_or_path"] = placeholder(self.start_from)
        return [StageFit(config, records="sft")]

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
                config = add_curve_points(copy.deepcopy(self.fit), self.round_curve_steps(t))
                data = config.setdefault("data", {})
                if data.get("val") is None:
                    data["val"] = data.get("train")  # keep evaluating on the demonstrations' task
                data["train"] = self.round_pairs(round_dir, demonstrations, model, t)
                lora = config.get("model", {}).get("pretrained", {}).get("lora")
                if lora is not None:
                    lora["merge"] = True  # the next round starts from full weights, as the official run merges
                run_fit(config, round_dir, model)
            model = str(round_dir / "hf_model")

    def round_pairs(self, round_dir: Path, demonstrations, model: str | None, t: int) -> dict:
        """Writes round ``t``'s prompts, rendered exactly as for training (the data's prompt format and chat template),
        with their demonstrations, and gives the round's training data: :class:`RoundPairs` over them, generating
        with the round-start model. Every process writes the same file; no model is loaded.

        The official code prompts with ``### Instruction: ...\n\n### Response: ``, a format its chat model never
        trained on.
        """
        data = demonstrations.datamodule
        data.record_kind = "sft"  # demonstrations, whatever the objective trains on (the command line set pairs)
        data.setup("fit")
        pretrained = demonstrations.model.pretrained
        seed = self.fit.get("seed_everything", 0)
        seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else 0
        # The order is over the source's rows, as the official run shuffles its dataset before any example is left out.
        records = data.train_source.records()
        position = {(record.source, record.row): i for i, record in enumerate(records)}
        by_position = {position[(example.raw.source, example.raw.row)]: self.demonstration(example) for example in data.train_examples}
        rounds, chunk = (self.rounds, t) if self.split_prompts else (1, 0)
        demos = [by_position[i] for i in round_rows(len(records), seed, rounds, chunk) if i in by_position]
        if not demos:
            raise ValueError(f"IRFT round {t}: none of its share of {data.train_source.name}'s rows is a training example")
        prompts = round_dir / "prompts.jsonl"
        rows = [{"prompt": prompt, "chosen": demo, "prompt_ids": data.chat_tokenizer.prompt_ids(prompt)} for prompt, demo in demos]
        atomic_write_text(prompts, "".join(json.dumps(row) + "\n" for row in rows))
        start = model or pretrained.name_or_path
        init = {
            "prompts": str(prompts.resolve()),
            "model": str(Path(start).resolve()) if Path(start).exists() else start,
            "dtype": pretrained.dtype,
            "attn_implementation": pretrained.attn_implementation,
            "generation": asdict(self.generation),
            "batch_size": self.generation_batch_size,
            "seed": seed,
            "round_index": t,
            "unfinished": self.unfinished,
            "device": demonstrations.trainer.strategy.root_device.type,
        }
        return {"class_path": f"{RoundPairs.__module__}.{RoundPairs.__name__}", "init_args": init}

    @staticmethod
    def demonstration(example) -> tuple[str, str]:
        record, raw = example.record, example.raw
        if not isinstance(record, Conversation) or [m.role for m in record.messages] != ["user", "assistant"]:
            raise DataError(raw.source, "IRFT needs prompt/completion demonstrations", row=raw.row)
        return record.messages[0].content, record.messages[1].content


def round_rows(count: int, seed: int, rounds: int, t: int) -> list[int]:
    """Round ``t``'s rows (0-based) of a source of ``count``: the order of ``datasets.Dataset.shuffle(seed=seed)``, a
    NumPy generator's permutation, as the official ``generate_split_data.py`` shuffles, cut into ``rounds`` runs."""
    order = np.random.default_rng(seed).permutation(count).tolist()
    return order[t * count // rounds : (t + 1) * count // rounds]


class RoundPairs(DataSource):
    """An IRFT round's training pairs: (prompt, chosen = demonstration, rejected = the round-start model's answer),
    generated as the round's fit reads its training data.

    The pairs exist only once the round-start model has answered, and the answers are shared work: each process of
    the fit answers its share of the prompts (whole batches, :mod:`~sft_research.frozen.shares`), loading the whole
    model, and every process gathers the others' answers, in order. A data source is where this can run. The
    pipeline cannot share the work: before a round's fit there may be no process group (the first fit is what
    launches the other processes), and each process would answer every prompt. The data module reads this source in
    its ``setup``, the first hook that runs in every process the fit launched, with their process group in place,
    and before anything needs the pairs (a callback's or the training module's ``setup`` runs after it). The first
    process writes ``pairs.jsonl`` and ``generation.json`` beside the prompts, as the round's record; no process
    reads them back, so none waits for another's writing. A round's ``config.yaml`` names this source, and reruns
    the round, generation included, on its own.

    A generation cut at ``max_new_tokens`` is not an answer the model finished: it is kept without an end of turn
    (``unfinished: keep``), so that the loss never treats the cut as the place to stop, or left out (``drop``). An
    empty one leaves nothing to contrast and is left out.

    Args:
        prompts: the round's ``prompts.jsonl`` (each prompt, its demonstration, its token ids as rendered for
            training), written by :class:`IRFTStage`.
        model: the round-start model, which generates.
        dtype: its weights' dtype.
        attn_implementation: its attention backend.
        generation: decoding settings.
        batch_size: prompts per generation batch; the processes share whole batches.
        seed: the run's seed; a sampled batch is seeded by (seed, round, batch), the same on whichever process runs it.
        round_index: the round, t.
        unfinished: ``keep`` or ``drop`` a generation that reached ``max_new_tokens`` without an end of turn.
        device: the fit's device type (``cpu``, ``cuda``); on ``cuda``, each process's current device, which
            Lightning sets to the process's own before the data module's ``setup``.
    """

    def __init__(
        self,
        prompts: str,
        model: str,
        dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        attn_implementation: str = "sdpa",
        generation: GenerationConfig = GenerationConfig(),
        batch_size: int = 32,
        seed: int = 0,
        round_index: int = 0,
        unfinished: Literal["keep", "drop"] = "keep",
        device: str = "cpu",
    ):
        self.prompts, self.model, self.dtype, self.attn_implementation = Path(prompts), model, dtype, attn_implementation
        self.generation, self.batch_size, self.seed, self.round_index = generation, batch_size, seed, round_index
        self.unfinished, self.device = unfinished, device
        self.name = str(self.prompts.parent / "pairs.jsonl")
        self.generated = GenerationCount()  # by this process, for the fit's compute record

    def records(self) -> list[RawRecord]:
        prompts = [json.loads(line) for line in self.prompts.read_text().splitlines()]
        shares = Shares.of_processes()
        part = shares.part(len(prompts), self.batch_size)
        mine = self.generate([prompts[i]["prompt_ids"] for i in part], part.start // self.batch_size)
        self.generated = GenerationCount(len(part), sum(mine.lengths))
        parts = shares.gather(mine)
        texts, finished = [text for part in parts for text in part.texts], [ended for part in parts for ended in part.finished]
        rows = [
            {"prompt": p["prompt"], "chosen": p["chosen"], "rejected": gen if not ended else gen.strip(), "rejected_finished": ended}
            for p, gen, ended in zip(prompts, texts, finished)
        ]
        unfinished = [i for i, ended in enumerate(finished) if not ended]
        empty = [i for i, row in enumerate(rows) if not row["rejected"].strip()]
        dropped = set(empty) | (set(unfinished) if self.unfinished == "drop" else set())
        kept = [row for i, row in enumerate(rows) if i not in dropped]
        if not kept:
            raise ValueError(f"IRFT round {self.round_index}: no usable generation ({len(empty)} empty, {len(unfinished)} unfinished)")
        if shares.rank == 0:
            report = {
                "round": self.round_index,
                "start_model": self.model,
                "device": str(self.device_here()),
                "generation": asdict(self.generation),
                "prompts": len(rows),
                "generated_tokens": sum(sum(part.lengths) for part in parts),
                "per_process": {"prompts": [len(part.texts) for part in parts], "generated_tokens": [sum(part.lengths) for part in parts]},
                "pairs": len(kept),
                "unfinished_generations": unfinished,
                "unfinished": self.unfinished,
                "left_out_empty_generations": empty,
                "generation_equal_to_demonstration": sum(row["chosen"].strip() == row["rejected"] for row in kept),
            }
            atomic_write_text(Path(self.name), "".join(json.dumps(row) + "\n" for row in kept))
            atomic_write_text(self.prompts.parent / "generation.json", json.dumps(report, indent=1))
            shown = {k: v if not isinstance(v, list | dict) else len(v) for k, v in report.items() if k != "per_process"}
            print(f"IRFT round {self.round_index}: {json.dumps(shown)}")
        return [RawRecord(self.name, row, fields) for row, fields in enumerate(kept, start=1)]

    def device_here(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self.device == "cuda" else torch.device(self.device)

    def generate(self, prompts: list[list[int]], first_batch: int) -> Generations:
        """This process's answers to ``prompts``, batch ``first_batch`` and the ones after it, with the round-start
        model loaded for them alone; the fit's random state is left as it was."""
        if not prompts:
            return Generations([], [], [])
        device = self.device_here()
        tokenizer = load_tokenizer(self.model)
        policy = load_model(ModelConfig(self.model, dtype=self.dtype, attn_implementation=self.attn_implementation)).to(device).eval()
        parts = []
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for batch, first in enumerate(range(0, len(prompts), self.batch_size), start=first_batch):
                padded = collate_prompts(list(enumerate(prompts[first : first + self.batch_size])), tokenizer.pad_token_id)
                ids, mask = padded["prompt_ids"], padded["prompt_attention_mask"]
                torch.manual_seed(int(np.random.SeedSequence([self.seed, self.round_index, batch]).generate_state(1)[0]))
                with timed("IRFT sampling"):
                    parts.append(generate_with_status(policy, tokenizer, ids, mask, self.generation))
        del policy
        gc.collect()
        return Generations(*([item for part in parts for item in getattr(part, name)] for name in ("texts", "finished", "lengths")))
