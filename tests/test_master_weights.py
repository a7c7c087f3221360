"""bf16 training keeps its updates: float32 master weights in the optimizer, and the stale-update fraction logged."""

import copy
import csv

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from sft_research.data import FileDataset, SFTDataModule
from sft_research.model.loading import ModelConfig
from sft_research.objectives import SFT
from sft_research.runs.csv_logger import RunCSVLogger
from sft_research.train.master_weights import MasterWeights, updated_tensors
from sft_research.train.module import FineTuningModule
from sft_research.train.optim import OptimizerConfig
from tests.conftest import ROWS, write_jsonl

LR, STEPS = 5e-7, 10


class Record(Callback):
    """The tensors the optimizer updates, before the first step and after the last, and every step's gradients (as
    the optimizer receives them: after clipping)."""

    def __init__(self):
        self.start, self.gradients, self.lrs = None, [], []

    def on_before_optimizer_step(self, trainer, module, optimizer):
        pairs = updated_tensors(optimizer)
        if self.start is None:
            self.start = [target.detach().float().clone() for _, target in pairs]
        self.gradients.append([param.grad.detach().float().clone() for param, _ in pairs])
        self.lrs.append(optimizer.param_groups[0]["lr"])

    def on_train_end(self, trainer, module):
        self.end = [target.detach().float().clone() for _, target in updated_tensors(trainer.optimizers[0])]


def bf16_run(model_dir, tmp_path, master_weights: bool):
    L.seed_everything(0)
    module = FineTuningModule(ModelConfig(str(model_dir), dtype="bfloat16"), SFT(), OptimizerConfig(lr=LR, master_weights=master_weights))
    data = SFTDataModule(FileDataset(str(write_jsonl(tmp_path / "d.jsonl", ROWS))), tokenizer=str(model_dir), batch_size=4)
    record = Record()
    logger = RunCSVLogger(save_dir=str(tmp_path), name=f"masters_{master_weights}")
    trainer = L.Trainer(
        accelerator="cpu",
        precision="bf16-true",
        max_steps=STEPS,
        logger=logger,
        log_every_n_steps=1,
        callbacks=[record],
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, data)
    with open(f"{logger.log_dir}/metrics.csv", newline="") as file:
        stale = [float(row["train/stale_update_fraction"]) for row in csv.DictReader(file) if row.get("train/stale_update_fraction")]
    return module, record, stale


def adamw_replay(start, gradients, lrs):
    """float32 AdamW from the same start on the same gradients and learning rates: what the updates should add up to."""
    weights = [w.clone().requires_grad_(True) for w in start]
    optimizer = torch.optim.AdamW(weights, lr=LR, weight_decay=0.0)
    for step, lr in zip(gradients, lrs):
        optimizer.param_groups[0]["lr"] = lr
        for weight, gradient in zip(weights, step):
            weight.grad = gradient
        optimizer.step()
    return [w.detach() for w in weights]


def check_masters_moved_as_adamw(record) -> None:
    """At least 99% of the masters with a gradient moved, and their change over the run is float32 AdamW's on the same
    gradients and learning rates within 1%."""
    moving = [torch.stack([step[i] != 0 for step in record.gradients]).any(0) for i in range(len(record.start))]
    moved = [end != start for start, end in zip(record.start, record.end)]
    candidates = sum(int(m.sum()) for m in moving)
    assert candidates > 1000
    fraction = sum(int((mv & mg).sum()) for mv, mg in zip(moved, moving)) / candidates
    assert fraction >= 0.99, f"only {fraction:.1%} of the master weights with a gradient moved"
    assert len(set(record.lrs)) > 1, "the schedule's learning rates, step by step"
    expected = adamw_replay(record.start, record.gradients, record.lrs)
    change = torch.cat([(end - start).flatten() for start, end in zip(record.start, record.end)])
    wanted = torch.cat([(e - start).flatten() for start, e in zip(record.start, expected)])
    assert (change - wanted).norm() <= 0.01 * wanted.norm(), "the accumulated change is fp32 AdamW's"


@pytest.mark.slow
def test_bf16_weights_keep_their_updates_at_lr_5e_7_through_float32_masters(tiny_model_dir, tmp_path):
    module, record, stale = bf16_run(tiny_model_dir, tmp_path, master_weights=True)
    assert isinstance(module.trainer.optimizers[0], MasterWeights)
    assert all(p.dtype == torch.bfloat16 for p in module.model.parameters()), "the model computes in bf16"
    assert len(record.gradients) == STEPS
    check_masters_moved_as_adamw(record)
    # The last steps of the cosine schedule are tiny (lr x 0.02): a few master elements may not move then either.
    assert len(stale) == STEPS and max(stale) < 0.05, f"logged stale-update fractions {stale}"


@pytest.mark.slow
def test_without_masters_most_bf16_updates_round_away_and_the_run_warns(tiny_model_dir, tmp_path):
    """The defect the masters fix, seen by the run itself: the fraction logged and a warning naming lr and precision."""
    with pytest.warns(UserWarning) as warned:
        module, record, stale = bf16_run(tiny_model_dir, tmp_path, master_weights=False)
    messages = [str(w.message) for w in warned]
    assert any("master_weights is false" in m and "5e-07" in m for m in messages), "warned at start"
    assert any("did not change" in m and "bf16-true" in m and "lr 5e-07" in m for m in messages), "warned on the measurement"
    assert len(stale) == STEPS and min(stale) > 0.5
    moved = sum(int((end != start).sum()) for start, end in zip(record.start, record.end))
    assert moved / sum(s.numel() for s in record.start) < 0.1  # about 1% in the measurement


def test_master_weights_state_dict_round_trip_restores_masters_and_moments():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3).to(torch.bfloat16)), torch.nn.Parameter(torch.randn(4))]
    optimizer = MasterWeights(params, lambda tensors: torch.optim.AdamW(tensors, lr=1e-3))
    for _ in range(3):
        for p in params:
            p.grad = torch.randn_like(p)
        optimizer.step()
    state = copy.deepcopy(optimizer.state_dict())  # as a checkpoint holds it: not the live tensors
    assert state["state"][0]["master"].dtype == torch.float32 and "master" not in state["state"][1]
    fresh_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    fresh = MasterWeights(fresh_params, lambda tensors: torch.optim.AdamW(tensors, lr=1e-3))
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.masters[0], optimizer.masters[0], rtol=0, atol=0)
    assert not torch.equal(fresh.masters[0], fresh_params[0].float()), "the master is not the rounded weight"
    for p, q in zip(params, fresh_params):
        g = torch.randn_like(p)
        p.grad, q.grad = g, g.clone()
    optimizer.step()
    fresh.step()
    for p, q in zip(params, fresh_params):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_a_learning_rate_schedule_reaches_the_inner_optimizer():
    params = [torch.nn.Parameter(torch.zeros(3, dtype=torch.bfloat16))]
    optimizer = MasterWeights(params, lambda tensors: torch.optim.SGD(tensors, lr=1.0))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    for expected in (1.0, 0.5, 0.25):
        params[0].grad = torch.ones(3, dtype=torch.bfloat16)
        before = optimizer.masters[0].clone()
        optimizer.step()
        torch.testing.assert_close(before - optimizer.masters[0], torch.full((3,), expected))
        scheduler.step()
