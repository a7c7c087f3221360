"""One short fit, as its own script, so that a test can run it on 2 CPU processes (Lightning starts the second by
running this script again) and read back what every process saw. Writes ``<out>/rank<r>.json``.

    python tests/two_process_fit.py MODEL DATA OUT --strategy fsdp --precision bf16-true --devices 2 [--compile]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import lightning as L
import torch

from sft_research.data import FileDataset, SFTDataModule
from sft_research.model.execution import ExecutionConfig
from sft_research.model.fsdp import full_state_dict
from sft_research.model.loading import ModelConfig
from sft_research.objectives import SFT
from sft_research.train.module import FineTuningModule
from sft_research.train.optim import OptimizerConfig


def rope_inv_freq(model: torch.nn.Module) -> torch.nn.Module:
    return next(module for name, module in model.named_modules() if name.endswith("rotary_emb"))


class Record(L.Callback):
    """Every forward's rotary ``inv_freq`` (as the rotary module sees it), and each step's logged gradient norm, loss
    and the weights after it (gathered under FSDP)."""

    def __init__(self):
        self.inv_freqs: list[torch.Tensor] = []
        self.steps: list[dict] = []

    def on_fit_start(self, trainer, module) -> None:
        rotary = rope_inv_freq(module.model)
        rotary.register_forward_pre_hook(lambda m, args: self.inv_freqs.append(m.inv_freq.detach().clone()), prepend=False)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        metrics = trainer.callback_metrics
        self.steps.append({"loss": float(metrics["train/loss"]), "grad_norm": float(metrics["train/grad_norm"])})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--strategy", default="auto", choices=["auto", "ddp", "fsdp"])
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--max_grad_norm", type=float, default=None)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--wrap", nargs="*", default=[])
    parser.add_argument("--state_dict_type", default="full", choices=["full", "sharded"])
    parser.add_argument("--save_states", default=None, help="keep a training state after every step in this folder")
    parser.add_argument("--ckpt_path", default=None, help="resume from this training state")
    args = parser.parse_args()
    torch.set_num_threads(1)
    strategy = args.strategy
    if strategy == "fsdp":
        import importlib

        from sft_research.rehearsal.strategy import CPUFSDPStrategy

        classes = {getattr(importlib.import_module(path.rpartition(".")[0]), path.rpartition(".")[2]) for path in args.wrap}
        strategy = CPUFSDPStrategy(auto_wrap_policy=classes, state_dict_type=args.state_dict_type)
    L.seed_everything(0)
    dtype = "bfloat16" if args.precision == "bf16-true" else "float32"
    module = FineTuningModule(
        ModelConfig(args.model, dtype=dtype),
        SFT(),
        OptimizerConfig(lr=args.lr, warmup_ratio=0.0, max_grad_norm=args.max_grad_norm),
        execution=ExecutionConfig(compile=args.compile),
    )
    data = SFTDataModule(FileDataset(args.data), tokenizer=args.model, batch_size=4, pad_to_bucket=args.compile)
    record = Record()
    callbacks: list[L.Callback] = [record]
    if args.save_states:
        from lightning.pytorch.callbacks import ModelCheckpoint

        callbacks.append(ModelCheckpoint(dirpath=args.save_states, filename="{step}", every_n_train_steps=1, save_top_k=-1))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy=strategy,
        precision=args.precision,
        max_steps=args.steps,
        logger=False,
        enable_checkpointing=bool(args.save_states),
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        callbacks=callbacks,
        default_root_dir=args.out,
    )
    trainer.fit(module, data, ckpt_path=args.ckpt_path)
    state = full_state_dict(trainer.strategy)
    rank = trainer.global_rank
    result = {
        "inv_freq": [t.tolist() for t in record.inv_freqs],
        "inv_freq_dtypes": [str(t.dtype) for t in record.inv_freqs],
        "steps": record.steps,
    }
    if rank == 0:
        torch.save({k: v.float() for k, v in state.items() if k.startswith("model.")}, Path(args.out) / "weights.pt")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"rank{rank}.json").write_text(json.dumps(result))
    print(f"rank {rank} of {os.environ.get('WORLD_SIZE', 1)} done")


if __name__ == "__main__":
    main()
