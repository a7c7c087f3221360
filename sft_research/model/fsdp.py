"""What the module needs to know about FSDP: the model must be a wrap unit of its own, and a wrapped model is saved
through a plain copy that holds the gathered weights."""

from __future__ import annotations

import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch.distributed.fsdp import FullyShardedDataParallel

from sft_research.errors import ConfigError


def check_fsdp_wrapping(strategy, model, uses_lora: bool = False) -> None:
    """Under FSDP the causal LM must be a unit of its own. Lightning runs ``training_step`` inside the root FSDP
    module's forward, and the backward of each micro-batch runs there too; FSDP refuses a backward through parameters
    whose unit is still in its forward, which the root's own would be. LoRA is refused: its export (and a merge at
    the end) goes through the peft model whole, which :func:`savable` does not rebuild from gathered weights, so a
    run would train and then fail to save."""
    if not isinstance(strategy, FSDPStrategy):
        return
    if uses_lora:
        raise ConfigError(
            "model.pretrained.lora is not supported under FSDP (the adapters could not be saved): train LoRA with DDP "
            "(trainer.strategy: ddp), where each process holds the frozen base model once"
        )
    if not isinstance(model, FullyShardedDataParallel):
        name = f"{type(model).__module__}.{type(model).__name__}"
        raise ConfigError(
            f"under FSDP the model must be wrapped as a unit of its own: add {name} to the strategy's auto_wrap_policy "
            "(see experiments/scale/fsdp_gpus.yaml)"
        )


def savable(model, state_dict: dict[str, torch.Tensor] | None):
    """The model to call ``save_pretrained`` on with ``state_dict``: the model itself, or, when FSDP wraps it (its
    parameters then live, flattened, in the wrapper, and transformers finds none to read a dtype from), a plain model
    of its class built on the meta device and given the gathered weights."""
    if not isinstance(model, FullyShardedDataParallel):
        return model
    if state_dict is None:
        raise ValueError("a model wrapped by FSDP is saved from its gathered state dict")
    inner = model.module
    with torch.device("meta"):
        plain = type(inner)(inner.config)
    unexpected = plain.load_state_dict(state_dict, strict=False, assign=True).unexpected_keys
    plain.tie_weights()  # a tied output layer is one tensor, saved once
    missing = [name for name, parameter in plain.named_parameters() if parameter.is_meta]
    if missing or unexpected:
        raise ValueError(f"the gathered state does not fit {type(inner).__name__}: missing {missing}, unexpected {unexpected}")
    plain.generation_config = inner.generation_config
    return plain
