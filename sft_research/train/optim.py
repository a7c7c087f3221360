"""AdamW (or RMSprop) with linear warmup, then cosine or linear decay, over float32 master weights where the model's
are bf16 or fp16."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from sft_research.errors import ConfigError
from sft_research.train.master_weights import LOW_PRECISION, MasterWeights


@dataclass
class OptimizerConfig:
    """The optimizer and its learning-rate schedule.

    Args:
        name: ``adamw``, or ``rmsprop`` (the DPO paper's and the IRFT code's choice).
        lr: peak learning rate.
        weight_decay: decoupled weight decay.
        decay_exempt: the trained parameters that take no weight decay: ``none``, or ``biases_and_layernorm`` as
            transformers' Trainer (4.x ``get_decay_parameter_names``, which the official iw-SFT run's 4.46.1 uses):
            every parameter whose name holds ``bias`` and the weights of ``torch.nn.LayerNorm`` modules; RMSNorm
            weights (Llama's, Mistral's, Qwen2's) are not ``nn.LayerNorm`` and are decayed there too.
        betas: Adam's moment decay rates.
        alpha: RMSprop's smoothing constant (0.99, as in torch and the Hugging Face runs of the official code).
        eps: the optimizer's epsilon.
        warmup_ratio: fraction of the optimizer steps spent warming up linearly from 0.
        schedule: the decay after warmup, ``cosine`` or ``linear`` (HF's ``linear``, the IRFT code's).
        min_lr_ratio: the decay ends at ``lr * min_lr_ratio`` at the last step.
        max_grad_norm: clip the gradient's global norm to this value (None: no clipping); ``train/grad_norm`` logs
            the norm before clipping.
        master_weights: step float32 master copies of bf16/fp16 trained weights and round them into the weights
            (:class:`~sft_research.train.master_weights.MasterWeights`, as DeepSpeed and mixed precision do); false steps the
            low-precision weights themselves, where updates below half a unit in their last place are lost.
    """

    name: Literal["adamw", "rmsprop"] = "adamw"
    lr: float = 1e-5
    weight_decay: float = 0.0
    decay_exempt: Literal["none", "biases_and_layernorm"] = "none"
    betas: tuple[float, float] = (0.9, 0.999)
    alpha: float = 0.99
    eps: float = 1e-8
    warmup_ratio: float = 0.0
    schedule: Literal["cosine", "linear"] = "cosine"
    min_lr_ratio: float = 0.0
    max_grad_norm: float | None = 1.0
    master_weights: bool = True

    def __post_init__(self):
        if not self.lr > 0:
            raise ConfigError(f"model.optimizer.lr must be positive, got {self.lr}")
        if not 0 <= self.warmup_ratio <= 1:
            raise ConfigError(f"model.optimizer.warmup_ratio must be in [0, 1], got {self.warmup_ratio}")


def lr_multiplier(step: int, total_steps: int, warmup_ratio: float, min_lr_ratio: float, schedule: str = "cosine") -> float:
    """The learning-rate multiplier at ``step`` (0-based) of ``total_steps``."""
    warmup = math.ceil(warmup_ratio * total_steps)
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(1, total_steps - warmup), 1.0)
    decay = 1 - progress if schedule == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
    return min_lr_ratio + (1 - min_lr_ratio) * decay


def decay_exempt_names(model: torch.nn.Module) -> set[str]:
    """The names of ``model``'s parameters that transformers' Trainer (4.x) keeps out of weight decay: those of
    ``nn.LayerNorm`` modules (and their subclasses; RMSNorm is none) and every one whose name holds ``bias``."""
    layernorm = {
        f"{module_name}.{name}".lstrip(".")
        for module_name, module in model.named_modules()
        if isinstance(module, torch.nn.LayerNorm)
        for name, _ in module.named_parameters(recurse=False)
    }
    return layernorm | {name for name, _ in model.named_parameters() if "bias" in name}


def parameter_groups(model: torch.nn.Module, config: OptimizerConfig) -> list[dict]:
    """The trained parameters in the optimizer's groups: one, or with ``decay_exempt`` those decayed and those not."""
    trained = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if config.decay_exempt == "none":
        return [{"params": [p for _, p in trained]}]
    exempt = decay_exempt_names(model)
    groups = [
        {"params": [p for name, p in trained if name not in exempt]},
        {"params": [p for name, p in trained if name in exempt], "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def build_optimizer(model: torch.nn.Module, config: OptimizerConfig, total_steps: int):
    """The optimizer of ``model``'s trained parameters (over float32 masters of low-precision weights unless
    ``config.master_weights`` is false) and its per-step learning-rate schedule."""

    def make(groups):
        if config.name == "adamw":
            # The fused kernel (GPUs and CPUs): one launch for every tensor, and its step counts stay on the device,
            # where foreach reads each one on the host (RMSprop has no fused kernel: it keeps foreach).
            return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay, fused=True)
        return torch.optim.RMSprop(groups, lr=config.lr, alpha=config.alpha, eps=config.eps, weight_decay=config.weight_decay)

    groups = parameter_groups(model, config)
    low_precision = any(p.dtype in LOW_PRECISION for group in groups for p in group["params"])
    optimizer = MasterWeights(groups, make) if config.master_weights and low_precision else make(groups)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, total_steps, config.warmup_ratio, config.min_lr_ratio, config.schedule)
    )
    return optimizer, scheduler
