"""The generic module trains end to end: micro-batching, logging, checkpoints."""

import csv
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from sft_research.data import FileDataset, SFTDataModule
from sft_research.model.execution import ExecutionConfig
from sft_research.model.loading import ModelConfig
from sft_research.model.logprobs import sequence_logprobs
from sft_research.objectives import SFT
from sft_research.train.module import FineTuningModule
from sft_research.train.optim import OptimizerConfig
from tests.conftest import ROWS, quiet_trainer, write_jsonl


class GradientCapture(Callback):
    def __init__(self):
        self.gradients = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.gradients.append({n: p.grad.detach().clone() for n, p in pl_module.named_parameters() if p.grad is not None})


def first_step_gradients(model_dir, data_path, micro_batch_size, objective, root, **options):
    L.seed_everything(0)
    module = FineTuningModule(
        ModelConfig(str(model_dir)),
        objective,
        OptimizerConfig(lr=1e-3, max_grad_norm=None),
        micro_batch_size=micro_batch_size,
        execution=ExecutionConfig(**options),
    )
    data = SFTDataModule(
        FileDataset(str(data_path)),
        tokenizer=str(model_dir),
        batch_size=8,
        micro_batch_size=micro_batch_size,
        pack=module.execution.packing,
        pad_to_bucket=module.execution.compile,
    )
    capture = GradientCapture()
    trainer = quiet_trainer(root, max_steps=1, callbacks=[capture])
    trainer.fit(module, data)
    return capture.gradients[0]


@pytest.mark.slow
@pytest.mark.parametrize("objective", [SFT(), SFT(use_quality=True)], ids=["sft", "sft_quality"])
def test_four_micro_batches_give_the_full_batch_gradient(tiny_model_dir, tmp_path, objective):
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    full = first_step_gradients(tiny_model_dir, path, None, objective, tmp_path)
    split = first_step_gradients(tiny_model_dir, path, 2, objective, tmp_path)
    assert full.keys() == split.keys() and len(full) > 0
    for name in full:
        torch.testing.assert_close(split[name], full[name], rtol=0, atol=1e-6, msg=name)
    assert max(g.abs().max() for g in full.values()) > 1e-3  # a real gradient, not zeros


@pytest.mark.parametrize(
    "options",
    [{"packing": True}, {"logprob_chunk_size": 3}, {"logprob_chunk_size": None}],
    ids=["packed", "chunked-logprobs", "full-logits"],
)
@pytest.mark.slow
def test_packing_and_chunked_logprobs_give_the_same_gradient(tiny_model_dir, tmp_path, options):
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    reference = first_step_gradients(tiny_model_dir, path, None, SFT(), tmp_path, packing=False, logprob_chunk_size=None)
    other = first_step_gradients(tiny_model_dir, path, 3, SFT(), tmp_path, **options)
    for name in reference:
        torch.testing.assert_close(other[name], reference[name], rtol=0, atol=1e-5, msg=name)


def test_gradient_flows_only_from_completion_tokens(tiny_model_dir, tmp_path):
    """The module's loss is the token-mean NLL over exactly the completion and end-of-turn tokens."""
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    data = SFTDataModule(FileDataset(str(path)), tokenizer=str(tiny_model_dir), batch_size=8)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    module = FineTuningModule(ModelConfig(str(tiny_model_dir)))
    module.configure_model()
    from sft_research.model.execution import batch_outputs, trimmed
    from sft_research.model.output_layer import LabelLogprobs

    tensors, _ = trimmed(batch, {}, module.execution)
    logps = batch_outputs(module.model, tensors, (LabelLogprobs(),), {}, module.execution)["logps"]
    mask = tensors["loss_mask"]
    hand = -(logps * mask).sum() / mask.sum()
    out = module.micro_loss(batch, mask.sum(), torch.tensor(8.0), "train")
    torch.testing.assert_close(out.loss, hand)
    # The masked positions are exactly the completion and end-of-turn tokens of each example.
    texts = [data.tokenizer.decode(tensors["input_ids"][b, 0, 1:][mask[b, 0]]) for b in range(8)]
    assert sorted(texts) == sorted(f"{row['completion']}<|im_end|>\n" for row in ROWS)


def read_metrics(log_dir):
    with open(log_dir / "metrics.csv") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_fit_from_the_cli_logs_and_saves_a_reloadable_checkpoint(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from sft_research.cli.main import main

    cli = main(
        [
            "fit",
            f"--model.pretrained.name_or_path={tiny_model_dir}",
            "--model.objective=sft_research.objectives.SFT",
            "--model.objective.use_quality=true",
            "--model.optimizer.lr=1e-3",
            "--model.optimizer.warmup_ratio=0.25",
            "--data.micro_batch_size=2",
            "--model.generation.max_new_tokens=4",
            "--data.train=sft_research.data.ReasoningGymTask",
            "--data.train.train_size=32",
            "--data.train.eval_size=8",
            "--data.train.noise_fraction=0.25",
            "--data.train.options={min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}",
            "--data.batch_size=8",
            "--trainer.max_steps=4",
            "--trainer.accelerator=cpu",
            "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    log_dir = tmp_path / "sft-chain_sum" / "version_0"
    rows = read_metrics(log_dir)
    train = [row for row in rows if row.get("train/loss")]
    assert len(train) == 4

    def value(key):
        return [float(row[key]) for row in train]

    # an untrained model spreads its probability over the vocabulary: about log(V) nats per token at first
    assert value("train/nll")[0] == pytest.approx(math.log(cli.model.model.config.vocab_size), abs=0.5)
    # 4 batches of 8 are the epoch's 32 examples, 8 of them corrupted (quality 0): batch means average to 0.75
    assert sum(value("train/quality")) / 4 == pytest.approx(0.75)
    lr = value("train/lr")
    assert lr[0] == pytest.approx(1e-3) and lr[1] > lr[2] > lr[3] > 0  # warmup 1 of 4 steps ends at the peak, then decay
    assert all(v > 0 for v in value("train/grad_norm") + value("train/tokens_per_s"))
    peak = value("train/peak_memory_gib")
    assert peak == sorted(peak) and peak[0] > 0.1, "a peak, in GiB, of a process that holds torch"
    assert [row for row in rows if row.get("val/task_accuracy")], "end-of-epoch validation ran"
    assert (log_dir / "config.yaml").is_file()
    assert abs(sum(cli.datamodule.train_examples[i].quality for i in range(32)) - 24) < 1e-9  # 8 of 32 corrupted

    saved = log_dir / "hf_model"
    reloaded = AutoModelForCausalLM.from_pretrained(saved).eval()
    module = cli.model.eval()
    batch = next(iter(cli.datamodule.train_dataloader()))
    ids, attention = batch["input_ids"][:, 0], batch["attention_mask"][:, 0]
    with torch.no_grad():
        torch.testing.assert_close(sequence_logprobs(reloaded, ids, attention), sequence_logprobs(module.model, ids, attention))
        original = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
        assert not torch.allclose(sequence_logprobs(original, ids, attention), sequence_logprobs(reloaded, ids, attention))


@pytest.mark.slow
def test_a_fit_without_logger_or_save_dir_writes_under_runs_and_says_where(tiny_model_dir, tmp_path, monkeypatch, capsys):
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    first_step_gradients(tiny_model_dir, path, None, SFT(), str(work))
    assert sorted(p.name for p in work.iterdir()) == ["runs"]
    assert (work / "runs" / "unlogged" / "hf_model" / "config.json").is_file()
