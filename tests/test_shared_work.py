"""Work shared across ranks: the frozen passes before training and an IRFT round's generation, each process taking
its share of whole batches and gathering the others', give what one process gives, each process computing half."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from sft_research.checkpoints.tiny import build_tiny_checkpoint
from sft_research.cli.main import main
from sft_research.frozen import BaselineScores, ReferenceLogprobs, TopKDistribution
from sft_research.frozen.shares import Shares
from sft_research.objectives.base import Objective, ObjectiveInputs, ObjectiveOutput
from sft_research.objectives.sft import sft_token_losses
from tests.conftest import SFT_ROWS, write_jsonl


class EveryCachedKind(Objective):
    """SFT, given the three kinds of cached frozen input: the reference's label log-probs, a baseline's score and
    the reference's top-k next tokens (as a teacher)."""

    def __init__(self, baseline: str):
        self.frozen_inputs = (ReferenceLogprobs(), BaselineScores([baseline]), TopKDistribution("teacher", k=3))

    def __call__(self, inputs: ObjectiveInputs) -> ObjectiveOutput:
        return ObjectiveOutput(sft_token_losses(inputs.logps[:, 0], inputs.mask[:, 0]), "tokens")


@pytest.mark.parametrize("count,batch_size,world", [(12, 3, 2), (13, 3, 2), (10, 4, 3), (2, 4, 3), (50, 16, 8)])
def test_shares_are_runs_of_whole_batches_in_order(count, batch_size, world):
    parts = [Shares(rank, world).part(count, batch_size) for rank in range(world)]
    assert [i for part in parts for i in part] == list(range(count)), "together, once each, in order"
    assert all(part.start % batch_size == 0 for part in parts), "each starts at a batch boundary"
    batches = [-(-len(part) // batch_size) for part in parts]
    assert max(batches) - min(batches) <= 1, f"no share has more than one batch more than another: {batches}"
    assert Shares().part(count, batch_size) == range(count) and Shares().gather("mine") == ["mine"]


def two_processes(command: list[str], cache: Path) -> str:
    """Runs ``sft-research`` on two CPU processes (Lightning launches the second) with its own cache; its output."""
    env = {**os.environ, "SFT_RESEARCH_CACHE": str(cache)}
    result = subprocess.run([sys.executable, "-m", "sft_research.cli", *command], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def compute_record(root: Path) -> dict:
    (path,) = root.rglob("compute.json")
    return json.loads(path.read_text())


def cached(cache: Path) -> dict[str, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    return {path.name: load_file(path) for path in sorted((cache / "frozen").glob("*.safetensors"))}


@pytest.mark.slow
def test_two_processes_compute_half_of_the_frozen_inputs_each_and_cache_what_one_would(tiny_model_dir, tmp_path, monkeypatch):
    """12 examples in frozen batches of 3: each process scores 2 batches under each of the 3 frozen inputs, and the
    cache holds the values one process computes, in the same order."""
    baseline = build_tiny_checkpoint(tmp_path / "baseline", seed=1)
    data = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    args = [
        "fit",
        f"--model.pretrained.name_or_path={tiny_model_dir}",
        "--model.objective=tests.test_shared_work.EveryCachedKind",
        f"--model.objective.baseline={baseline}",
        "--model.frozen.batch_size=3",
        "--data.train=sft_research.data.FileDataset",
        f"--data.train.path={data}",
        "--data.batch_size=4",
        "--trainer.max_steps=1",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
    ]
    monkeypatch.setenv("SFT_RESEARCH_CACHE", str(tmp_path / "one_cache"))
    main([*args, f"--trainer.default_root_dir={tmp_path / 'one'}", f"--trainer.logger.init_args.save_dir={tmp_path / 'one'}"])
    root = tmp_path / "two"
    extra = [
        "--trainer.strategy=ddp",
        "--trainer.devices=2",
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}",
    ]
    two_processes([*args, *extra], tmp_path / "two_cache")

    one, two = cached(tmp_path / "one_cache"), cached(tmp_path / "two_cache")
    assert len(one) == 3 and one.keys() == two.keys(), "the same three cache files, by fingerprint"
    for name, tensors in one.items():
        assert tensors.keys() == two[name].keys()
        for key, value in tensors.items():
            if value.is_floating_point():
                torch.testing.assert_close(two[name][key], value, rtol=0, atol=1e-5, msg=f"{name} {key}")
            else:  # shapes, and the top-k token ids
                assert torch.equal(two[name][key], value), f"{name} {key}"
    alone, shared = compute_record(tmp_path / "one"), compute_record(root)
    assert alone["computed_per_process"]["frozen_sequences"] == [36]
    assert shared["computed_per_process"]["frozen_sequences"] == [18, 18], "each process computed half"
    assert alone["frozen_sequences"] == shared["frozen_sequences"] == 36


@pytest.mark.slow
def test_two_processes_generate_half_of_each_irft_round_and_write_what_one_would(tiny_model_dir, tmp_path, monkeypatch):
    """Two rounds of 4 prompts, greedy, in generation batches of 2: each process answers one batch a round, in the
    first round as the fit launches the second process, in the next with their process group already there."""
    demos = write_jsonl(tmp_path / "demos.jsonl", [{"prompt": r["prompt"], "completion": r["completion"]} for r in SFT_ROWS[:8]])

    def pipeline(out: Path, devices: list[str]) -> Path:
        fit = {
            "seed_everything": 0,
            "trainer": {"max_steps": 1, "accelerator": "cpu", "enable_progress_bar": False, "limit_val_batches": 0, **devices},
            "model": {
                "pretrained": {"name_or_path": str(tiny_model_dir)},
                "objective": "sft_research.objectives.IRFT",
                "optimizer": {"lr": 1e-3},
                "frozen": {"batch_size": 2},
            },
            "data": {"train": {"class_path": "sft_research.data.FileDataset", "init_args": {"path": str(demos)}}, "batch_size": 4},
        }
        stage = {"name": "irft", "rounds": 2, "generation": {"max_new_tokens": 4}, "generation_batch_size": 2, "fit": fit}
        config = out.parent / f"{out.name}.yaml"
        config.write_text(
            yaml.safe_dump({"output_dir": str(out), "stages": [{"class_path": "sft_research.pipelines.IRFTStage", "init_args": stage}]})
        )
        return config

    monkeypatch.setenv("SFT_RESEARCH_CACHE", str(tmp_path / "one_cache"))
    main(["pipeline", f"--config={pipeline(tmp_path / 'one', {})}"])
    printed = two_processes(
        ["pipeline", f"--config={pipeline(tmp_path / 'two', {'strategy': 'ddp', 'devices': 2})}"], tmp_path / "two_cache"
    )

    for t in range(2):
        one, two = (tmp_path / run / "irft" / f"round_{t}" for run in ("one", "two"))
        pairs = (two / "pairs.jsonl").read_text()
        assert pairs == (one / "pairs.jsonl").read_text() and len(pairs.splitlines()) == 4, "the same pairs, in order"
        report = json.loads((two / "generation.json").read_text())
        assert report["per_process"]["prompts"] == [2, 2], "each process answered half of the round's prompts"
        assert sum(report["per_process"]["generated_tokens"]) == report["generated_tokens"] > 0
        shared, alone = compute_record(two / "logs"), compute_record(one / "logs")
        assert shared["computed_per_process"]["generated_prompts"] == [2, 2] and alone["computed_per_process"]["generated_prompts"] == [4]
        assert shared["computed_per_process"]["generated_tokens"] == report["per_process"]["generated_tokens"]
        assert shared["generated_tokens"] == alone["generated_tokens"] == report["generated_tokens"]
        # The reference's log-probs of the round's 4 pairs, 8 sequences in frozen batches of 2 pairs: half each.
        assert shared["computed_per_process"]["frozen_sequences"] == [4, 4]
        assert printed.count(f"IRFT round {t}: ") == 1, "the round's report, once"
