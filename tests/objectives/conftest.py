"""What the objective tests share: a short fit from the command line, and the first step's gradients of a fit in
code compared with autograd's on the full ``[tokens, vocab]`` logits."""

import csv

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from sft_research.checkpoints.tiny import build_tiny_checkpoint
from sft_research.cli.main import main
from sft_research.frozen.runner import FrozenConfig
from sft_research.model.execution import ExecutionConfig
from sft_research.model.loading import ModelConfig, load_model
from sft_research.train.module import FineTuningModule
from sft_research.train.optim import OptimizerConfig
from tests.conftest import file_fit_args, module_data, quiet_trainer


@pytest.fixture(autouse=True)
def _private_cache(private_cache):
    """Frozen log-probs and converted models go to each test's own cache."""


def fit_from_cli(model_dir, data_path, root, objective: str, *extra: str, steps: int = 3, lr: float = 1e-3) -> tuple[object, list[dict]]:
    """A CPU fit of ``objective`` (a class path) from the command line, micro-batches of 2, and the logged rows of its
    training steps."""
    cli = main(
        [
            "fit",
            *file_fit_args(model_dir, data_path, root, steps),
            f"--model.objective={objective}",
            f"--model.optimizer.lr={lr}",
            "--data.micro_batch_size=2",
            *extra,
        ]
    )
    with open(cli.trainer.logger.log_dir + "/metrics.csv") as file:
        rows = [row for row in csv.DictReader(file) if row.get("train/loss")]
    return cli, rows


class FirstStep(Callback):
    """The gradients of the first step, by parameter name."""

    def on_before_optimizer_step(self, trainer, module, optimizer):
        if not hasattr(self, "gradients"):
            self.gradients = {n.removeprefix("model."): p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


def first_step(model_dir, reference, data_path, objective, root, **execution):
    """The first step's gradients of a fit on a batch of 8, and its data module."""
    L.seed_everything(0)
    execution = ExecutionConfig(**execution)
    module = FineTuningModule(
        ModelConfig(str(model_dir)),
        objective,
        OptimizerConfig(lr=1e-3, max_grad_norm=None),
        frozen=FrozenConfig(reference=str(reference)),
        execution=execution,
    )
    data = module_data(module, model_dir, data_path, batch_size=8)
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
    """Another tiny model with the same tokenizer."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("reference") / "model", seed=5)
