"""What a run spent, read back from its folder, against what a real fit trained on; provenance; old results files."""

import csv
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import Callback

from sft_research.bench.compute import Compute, fit_compute, generated_tokens, run_compute
from sft_research.bench.evaluate import Measures
from sft_research.bench.probes import GeneralTextProbe, HeldOutSkillsProbe, KLProbe, TaskScore
from sft_research.bench.report import summarize, summary_csv, summary_markdown
from sft_research.bench.stats import Estimate
from sft_research.checkpoints.embedded import TINY_MODEL
from sft_research.data import FileDataset, LengthConfig, SFTDataModule
from sft_research.fit.run import run_fit
from sft_research.frozen.cache import sequences_fingerprint
from sft_research.runs.run_record import git_commit
from tests.conftest import write_jsonl

ROOT = Path(__file__).parents[1]
# Six records of different lengths: which ones a batch holds changes its token count.
ROWS = [{"prompt": "x" * (3 * i + 1), "completion": "y" * (i + 1), "quality": 1.0} for i in range(6)]


class RecordBatches(Callback):
    """Writes the example ids of every training batch, one JSON list a line."""

    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        with self.path.open("a") as file:
            file.write(json.dumps(batch["example_id"].tolist()) + "\n")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """IwSFT (a frozen reference) for 5 steps of 4 over 6 examples: epochs of a full and a partial batch, and a
    partial epoch at the end."""
    tmp = tmp_path_factory.mktemp("fit")
    data = write_jsonl(tmp / "train.jsonl", ROWS)
    record = tmp / "batches.jsonl"
    config = {
        "seed_everything": 7,
        "trainer": {
            "accelerator": "cpu",
            "max_steps": 5,
            "limit_val_batches": 0,
            "enable_progress_bar": False,
            "callbacks": [{"class_path": "tests.test_bench_compute.RecordBatches", "init_args": {"path": str(record)}}],
        },
        "model": {"pretrained": {"name_or_path": TINY_MODEL}, "objective": {"class_path": "sft_research.objectives.IwSFT"}},
        "data": {
            "train": {"class_path": "sft_research.data.FileDataset", "init_args": {"path": str(data)}},
            "batch_size": 4,
            "lengths": {"max_length": 64},
        },
    }
    run_fit(config, tmp / "run" / "fit")
    batches = [json.loads(line) for line in record.read_text().splitlines()]
    examples = SFTDataModule(FileDataset(str(data)), tokenizer=TINY_MODEL, lengths=LengthConfig(max_length=64))
    examples.setup("fit")
    return tmp / "run", batches, {example.example_id: example for example in examples.train_examples}


def test_compute_is_what_the_fit_trained_on(fitted):
    """The fit's own record (compute.json) against the batches a callback saw it train on."""
    run_dir, batches, examples = fitted
    assert [len(batch) for batch in batches] == [4, 2, 4, 2, 4]
    sequences = [examples[i].sequences[0] for batch in batches for i in batch]
    compute, fingerprint = fit_compute(run_dir / "fit")
    assert compute == Compute(
        optimizer_steps=5,
        tokens=sum(len(s.input_ids) for s in sequences),
        completion_tokens=sum(sum(s.completion_mask[1:]) for s in sequences),
        policy_sequences=16,
        frozen_sequences=6,  # the reference scores every training example once, before the first step
        generated_tokens=0,
    )
    assert compute.tokens > 16 * 2 and compute.completion_tokens < compute.tokens
    assert fingerprint == sequences_fingerprint(list(examples.values()), training_targets=True)
    assert run_compute(run_dir) == (compute, {"fit": fingerprint})


def test_counts_come_from_the_newest_finished_attempt(fitted, tmp_path):
    """A fit killed part-way and run again logs into the next version folder: only a finished attempt counts."""
    run_dir, _, _ = fitted
    fit = tmp_path / "fit"
    shutil.copytree(run_dir / "fit", fit)
    logs = fit / "logs"
    (logs / "version_9").mkdir()  # killed: no record
    (logs / "version_10").mkdir()
    recorded = json.loads((logs / "version_0" / "compute.json").read_text())
    (logs / "version_10" / "compute.json").write_text(json.dumps({**recorded, "optimizer_steps": 2}))
    assert fit_compute(fit)[0].optimizer_steps == 2
    shutil.rmtree(logs)
    with pytest.raises(ValueError, match="no finished fit recorded what it spent"):
        fit_compute(fit)


@pytest.mark.slow
def test_on_the_fly_frozen_models_are_counted_on_every_batch(tmp_path):
    """Run on every batch, the reference scores every sequence trained on."""
    data = write_jsonl(tmp_path / "train.jsonl", ROWS)
    config = {
        "trainer": {"accelerator": "cpu", "max_steps": 3, "limit_val_batches": 0, "enable_progress_bar": False},
        "model": {
            "pretrained": {"name_or_path": TINY_MODEL},
            "objective": {"class_path": "sft_research.objectives.IwSFT"},
            "frozen": {"mode": "on_the_fly"},
        },
        "data": {
            "train": {"class_path": "sft_research.data.FileDataset", "init_args": {"path": str(data)}},
            "batch_size": 4,
            "lengths": {"max_length": 64},
        },
    }
    run_fit(config, tmp_path / "fit")
    compute, _ = fit_compute(tmp_path / "fit")
    assert compute.frozen_sequences == compute.policy_sequences == 4 + 2 + 4


def test_generated_tokens_of_an_irft_round_are_its_own_count(tmp_path):
    (tmp_path / "generation.json").write_text(json.dumps({"prompts": 4, "generated_tokens": 23}))
    assert generated_tokens(tmp_path) == 23
    (tmp_path / "generation.json").write_text(json.dumps({"prompts": 4}))
    with pytest.raises(ValueError, match=r"generation.json: no generated_tokens \(written by an older version\)"):
        generated_tokens(tmp_path)


def test_data_fingerprint_sees_tokens_masks_and_quality(fitted):
    _, _, examples = fitted
    examples = list(examples.values())
    before = sequences_fingerprint(examples, training_targets=True)
    first = examples[0].sequences[0]
    first.completion_mask[-2] = not first.completion_mask[-2]
    masked = sequences_fingerprint(examples, training_targets=True)
    first.completion_mask[-2] = not first.completion_mask[-2]
    examples[1].quality += 0.5
    weighted = sequences_fingerprint(examples, training_targets=True)
    examples[1].quality -= 0.5
    assert len({before, masked, weighted}) == 3 and sequences_fingerprint(examples, training_targets=True) == before


def test_git_commit_only_of_a_tracked_checkout(tmp_path):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert git_commit(ROOT / "sft_research") == head and len(head) == 40
    copy = tmp_path / "plain" / "sft_research"
    copy.mkdir(parents=True)
    (copy / "__init__.py").write_text("")
    assert git_commit(copy) is None, "not a git checkout"

    checkout, package = tmp_path / "checkout", tmp_path / "checkout" / "sft_research"
    package.mkdir(parents=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=checkout, check=True)
    (checkout / "README").write_text("")
    subprocess.run([*git, "add", "README"], cwd=checkout, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], cwd=checkout, check=True)
    (package / "__init__.py").write_text("")
    assert git_commit(package) is None, "an untracked copy inside a checkout"
    subprocess.run([*git, "add", "sft_research"], cwd=checkout, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "second"], cwd=checkout, check=True)
    second = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True).stdout.strip()
    assert git_commit(package) == second


def row(arm: str, seed: int, spent: dict | None) -> dict:
    metrics = {
        m: {"mean": 0.5, "se": 0.1, "n": 10}
        for m in ("task_score", "general_text_loglik_change", "skill_accuracy_change", "flip_rate", "kl_from_base")
    }
    return {"arm": arm, "seed": seed, "metrics": metrics, "wall_s": 10.0 + seed, **({"compute": spent} if spent else {})}


def test_summary_shows_mean_compute_and_reads_rows_from_before_counting():
    base = {
        m: Estimate(0.4, 0.0, 10)
        for m in ("task_score", "general_text_loglik_change", "skill_accuracy_change", "flip_rate", "kl_from_base")
    }

    def counted(tokens: int) -> dict[str, int]:
        return {
            "optimizer_steps": 4,
            "tokens": tokens,
            "completion_tokens": tokens // 10,
            "policy_sequences": 32,
            "frozen_sequences": 8,
            "generated_tokens": 0,
        }

    rows = [row("sft", 0, counted(1000)), row("sft", 1, counted(2000)), row("old", 0, None), row("old", 1, None)]
    metrics = Measures([TaskScore(), GeneralTextProbe(), HeldOutSkillsProbe(), KLProbe()]).metrics
    table = summarize(rows, base, ["sft", "old"], metrics)
    assert table[1].spent == {**counted(1500), "wall_s": 10.5}
    assert table[2].spent == {**dict.fromkeys(counted(0)), "wall_s": 10.5}, "an old row has its wall time only"
    summary = {r["arm"]: r for r in csv.DictReader(io.StringIO(summary_csv(table, metrics)))}
    assert (summary["sft"]["tokens"], summary["sft"]["completion_tokens"], summary["sft"]["wall_s"]) == ("1500", "150", "10.5")
    assert (summary["old"]["tokens"], summary["old"]["wall_s"], summary["base model"]["tokens"]) == ("", "10.5", "")
    markdown = summary_markdown(table, metrics)
    assert "| sft | 4 | 1,500 | 150 | 32 | 8 | 0 | 10.5 |" in markdown
    assert "| old | n/a | n/a | n/a | n/a | n/a | n/a | 10.5 |" in markdown
