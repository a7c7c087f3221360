"""Objectives over the whole next-token distribution: one written from outside the package (the README's), and the
shipped distillation and SFT-with-KL, against hand computations and TRL."""

import importlib
import sys

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from sft_research.checkpoints.tiny import build_tiny_checkpoint
from sft_research.data import FileDataset, SFTDataModule
from sft_research.errors import ConfigError
from sft_research.frozen.runner import FrozenConfig
from sft_research.model.execution import ExecutionConfig
from sft_research.model.loading import ModelConfig, load_model
from sft_research.objectives import Distillation, SFTWithKL, generalized_jsd
from sft_research.train.module import FineTuningModule
from sft_research.train.optim import OptimizerConfig
from tests.conftest import ROWS, quiet_trainer, readme_block, write_jsonl


class FirstStep(Callback):
    """The gradients of the first step, by parameter name, and the objective's inputs."""

    def on_before_optimizer_step(self, trainer, module, optimizer):
        if not hasattr(self, "gradients"):
            self.gradients = {n.removeprefix("model."): p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


def first_step(model_dir, reference, data_path, objective, root, **execution):
    L.seed_everything(0)
    module = FineTuningModule(
        ModelConfig(str(model_dir)),
        objective,
        OptimizerConfig(lr=1e-3, max_grad_norm=None),
        frozen=FrozenConfig(reference=str(reference)),
        execution=ExecutionConfig(**execution),
    )
    data = SFTDataModule(FileDataset(str(data_path)), tokenizer=str(model_dir), batch_size=8)
    capture = FirstStep()
    trainer = quiet_trainer(root, max_steps=1, callbacks=[capture])
    trainer.fit(module, data)
    return capture.gradients, data


def full_logits_gradients(model_dir, reference, data, loss_fn):
    """Autograd on the full [tokens, vocab] logits of the one batch of 8, in any order (the loss is a sum)."""
    from sft_research.data.collate import collate_examples

    policy = load_model(ModelConfig(str(model_dir))).train()
    frozen = load_model(ModelConfig(str(reference))).eval()
    batch = collate_examples(data.train_examples, data.tokenizer.pad_token_id)
    ids, attention, mask = batch["input_ids"][:, 0], batch["attention_mask"][:, 0], batch["loss_mask"][:, 0]
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    logp = torch.log_softmax(policy(input_ids=ids, attention_mask=attention, position_ids=positions).logits[:, :-1].float(), -1)
    with torch.no_grad():
        ref = torch.log_softmax(frozen(input_ids=ids, attention_mask=attention, position_ids=positions).logits[:, :-1].float(), -1)
    loss_fn(logp, ref, ids[:, 1:], mask).backward()
    return {name: p.grad for name, p in policy.named_parameters() if p.grad is not None}


@pytest.fixture(scope="module")
def reference_model(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("reference") / "model", seed=5)  # the same tokenizer


@pytest.mark.parametrize(
    "execution",
    [{}, {"logprob_chunk_size": None}, {"packing": True}, {"packing": True, "logprob_chunk_size": 3}],
    ids=["chunked", "full", "packed", "packed-chunked"],
)
def test_a_whole_distribution_objective_written_outside_the_package(execution, tiny_model_dir, reference_model, tmp_path, monkeypatch):
    """The README's example, one file outside the package: its gradient is autograd's on the full logits."""
    package = tmp_path / "my_objectives"
    package.mkdir()
    (package / "sft_reference_kl.py").write_text(readme_block("class SFTReferenceKL(Objective):"))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_objectives.sft_reference_kl", None)
    objective = importlib.import_module("my_objectives.sft_reference_kl").SFTReferenceKL(weight=0.5)
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    got, data = first_step(tiny_model_dir, reference_model, path, objective, tmp_path, **execution)

    def loss(logp, ref, labels, mask):
        kl = (logp.exp() * (logp - ref)).sum(-1)
        label = logp.gather(-1, labels[..., None]).squeeze(-1)
        return ((0.5 * kl - label) * mask).sum() / mask.sum()

    wanted = full_logits_gradients(tiny_model_dir, reference_model, data, loss)
    assert got.keys() == wanted.keys()
    for name in wanted:
        torch.testing.assert_close(got[name], wanted[name], rtol=0, atol=2e-5, msg=name)


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_generalized_jsd_is_trls_on_the_same_tensors(beta, temperature):
    from trl.experimental.gkd import GKDTrainer

    g = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(3, 7, 50, generator=g, dtype=torch.float64), torch.randn(3, 7, 50, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 50, (3, 7), generator=g)
    labels[0, :2] = labels[2, 5:] = -100
    expected = GKDTrainer.generalized_jsd_loss(student, teacher, labels, beta=beta, temperature=temperature)
    ours = generalized_jsd(torch.log_softmax(student / temperature, -1), torch.log_softmax(teacher / temperature, -1), beta)
    mask = labels != -100
    torch.testing.assert_close((ours * mask).sum() / mask.sum(), expected, rtol=0, atol=1e-12)


def test_distillation_from_the_whole_distribution_and_from_the_top_k(tiny_model_dir, reference_model, tmp_path):
    """Whole distribution on every batch: the first step's gradient is autograd's on full logits (beta 0.5). Top k
    cached: the teacher's k tokens and the rest of the mass; with k the whole vocabulary it is the same loss."""
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    whole, data = first_step(tiny_model_dir, tiny_model_dir, path, Distillation(str(reference_model), beta=0.5), tmp_path / "whole")
    wanted = full_logits_gradients(
        tiny_model_dir, reference_model, data, lambda lp, ref, labels, mask: (generalized_jsd(lp, ref, 0.5) * mask).sum() / mask.sum()
    )
    for name in wanted:
        torch.testing.assert_close(whole[name], wanted[name], rtol=0, atol=2e-5, msg=name)
    vocabulary = len(data.tokenizer)
    top_k, _ = first_step(
        tiny_model_dir, tiny_model_dir, path, Distillation(str(reference_model), beta=0.5, top_k=vocabulary), tmp_path / "top_k"
    )
    for name in wanted:
        torch.testing.assert_close(top_k[name], wanted[name], rtol=0, atol=1e-4, msg=name)


def test_a_teacher_with_another_tokenizer_is_refused(tiny_model_dir, tmp_path):
    other = build_tiny_checkpoint(tmp_path / "other", vocab_size=262)
    with pytest.raises(ConfigError, match=r"another tokenizer than the model being trained"):
        FineTuningModule(ModelConfig(str(tiny_model_dir)), Distillation(str(other)))


def test_sft_with_kl_is_sft_at_the_start_and_logs_the_kl(tiny_model_dir, tmp_path):
    """At the first step the policy is the base model: the KL and its gradient vanish, and the step is SFT's."""
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    from sft_research.objectives import SFT

    with_kl, _ = first_step(tiny_model_dir, tiny_model_dir, path, SFTWithKL(kl_weight=2.0), tmp_path / "kl")
    sft, _ = first_step(tiny_model_dir, tiny_model_dir, path, SFT(), tmp_path / "sft")
    for name in sft:
        torch.testing.assert_close(with_kl[name], sft[name], rtol=0, atol=1e-6, msg=name)
