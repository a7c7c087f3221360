"""What a training step asks of the host, counted (benchmarks/perf/step_anatomy.py measures it in full): one wait
for the device per optimizer step outside logging steps, and a compiled step that gives the eager losses with no
graph break and one graph per batch shape."""

from collections import Counter

import lightning as L
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sft_research.model.execution import ExecutionConfig
from sft_research.model.loading import ModelConfig
from sft_research.objectives import DPO, SFT
from sft_research.train.module import FineTuningModule
from sft_research.train.optim import OptimizerConfig
from tests.conftest import PAIR_ROWS, SFT_ROWS, module_data, quiet_trainer, write_jsonl

# Operators whose result the host reads, or whose output shape depends on the data.
SYNCING = {"_local_scalar_dense", "nonzero", "masked_select", "unique_dim", "_unique2", "unique_consecutive", "is_nonzero", "equal"}


class Syncs(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNCING or (name == "index" and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] or [])):
            self.count[name] += 1
        return func(*args, **(kwargs or {}))


class CountSteps(L.Callback):
    """Host syncs of each training step from step ``first`` on (batch start to batch end, callbacks included)."""

    def __init__(self, first: int):
        self.first, self.per_step, self.mode = first, [], None

    def on_train_batch_start(self, trainer, module, batch, index):
        if trainer.global_step >= self.first:
            self.mode = Syncs()
            self.mode.__enter__()

    def on_train_batch_end(self, trainer, module, outputs, batch, index):
        if self.mode is not None:
            self.mode.__exit__(None, None, None)
            self.per_step.append(sum(self.mode.count.values()))
            self.mode = None


class Losses(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, index):
        self.losses.append(float(outputs["loss"]))


def train(model_dir, rows_path, root, objective, steps: int, callbacks, **execution):
    L.seed_everything(0)
    module = FineTuningModule(
        ModelConfig(str(model_dir), dtype="bfloat16"),
        objective,
        OptimizerConfig(lr=1e-3),
        execution=ExecutionConfig(**execution),
        save_dir=str(root / "hf_model"),
    )
    data = module_data(module, model_dir, rows_path, batch_size=4)
    # Logging every 100 steps: the measured steps log nothing.
    trainer = quiet_trainer(root, precision="bf16-true", max_steps=steps, log_every_n_steps=100, callbacks=callbacks)
    trainer.fit(module, data)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sft_packed", "dpo_padded"])
def test_a_training_step_waits_for_the_device_once(tiny_model_dir, tmp_path, kind):
    """The finiteness check before the optimizer step; nothing else (the stale-update measurement of the first 10
    steps reads the device, and is left out). DPO's padded forward adds transformers' own check, eager only, of
    whether its positions are packed (compiled, it is gone)."""
    dpo = kind.startswith("dpo")
    rows = write_jsonl(tmp_path / "rows.jsonl", PAIR_ROWS if dpo else SFT_ROWS)
    counter = CountSteps(first=10)
    train(tiny_model_dir, rows, tmp_path, DPO() if dpo else SFT(), 14, [counter], packing=not dpo)
    assert counter.per_step == [2 if dpo else 1] * 4


@pytest.mark.slow
def test_compiled_steps_give_the_eager_losses_with_one_graph_per_batch_shape(tiny_model_dir, tmp_path):
    from torch._dynamo.utils import counters

    # Rows of two lengths: the packed batches fall in two buckets, two shapes.
    rows = write_jsonl(
        tmp_path / "rows.jsonl",
        SFT_ROWS[:8] + [{**row, "completion": row["completion"] + " is the sum of the two numbers"} for row in SFT_ROWS[:8]],
    )
    eager, compiled = Losses(), Losses()
    train(tiny_model_dir, rows, tmp_path / "eager", SFT(), 4, [eager], packing=True)
    torch._dynamo.reset()
    counters.clear()
    module = train(tiny_model_dir, rows, tmp_path / "compiled", SFT(), 4, [compiled], packing=True, compile=True)
    assert module.compute_loss is not module.objective_loss
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 2
    # bf16: the compiled kernels round in other places than the eager ones (2^-8 relative, on a loss near 5).
    torch.testing.assert_close(compiled.losses, eager.losses, rtol=0, atol=0.05)
    assert compiled.losses != [compiled.losses[0]] * 4, "the steps trained"
