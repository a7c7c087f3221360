"""What the module needs to know about FSDP: the model must be a wrap unit of its own, and a wrapped model is saved
through a plain copy that holds the gathered weights."""

from __future__ import annotations

import contextlib

import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch.distributed.fsdp import FullStateDictConfig, FullyShardedDataParallel, StateDictType

from sft_research.errors import ConfigError

LORA_UNDER_FSDP = (
    "model.pretrained.lora is not supported under FSDP (the adapters could not be saved): train LoRA with DDP "
    "(trainer.strategy: ddp), where each process holds the frozen base model once"
)


def check_fsdp_policy(strategy, architecture: str | None, uses_lora: bool = False) -> None:
    """Before anything is loaded: under FSDP, the strategy's ``auto_wrap_policy`` must wrap the causal LM class
    (``architecture``, as its config.json names it) as a unit of its own, and LoRA is refused (see
    :func:`check_fsdp_wrapping`). A policy that is a function cannot be read here; the wrapped model is checked then."""
    if not isinstance(strategy, FSDPStrategy):
        return
    if uses_lora:
        raise ConfigError(LORA_UNDER_FSDP)
    policy = strategy.kwargs.get("auto_wrap_policy")
    classes = getattr(policy, "_module_classes", policy if isinstance(policy, (set, list, tuple)) else None)
    if policy is not None and classes is None or architecture is None:
        return
    if architecture not in {cls.__name__ for cls in classes or ()}:
        raise ConfigError(
            f"under FSDP the model must be wrapped as a unit of its own: add its class {architecture} (the causal LM, "
            "beside its decoder layer class) to the strategy's auto_wrap_policy (see experiments/scale/fsdp_gpus.yaml)"
        )


def check_fsdp_wrapping(strategy, model, uses_lora: bool = False) -> None:
    """Under FSDP the causal LM must be a unit of its own. Lightning runs ``training_step`` inside the root FSDP
    module's forward, and the backward of each micro-batch runs there too; FSDP refuses a backward through parameters
    whose unit is still in its forward, which the root's own would be. LoRA is refused: its export (and a merge at
    the end) goes through the peft model whole, which :func:`savable` does not rebuild from gathered weights, so a
    run would train and then fail to save."""
    if not isinstance(strategy, FSDPStrategy):
        return
    if uses_lora:
        raise ConfigError(LORA_UNDER_FSDP)
    if not isinstance(model, FullyShardedDataParallel):
        name = f"{type(model).__module__}.{type(model).__name__}"
        raise ConfigError(
            f"under FSDP the model must be wrapped as a unit of its own: add {name} to the strategy's auto_wrap_policy "
            "(see experiments/scale/fsdp_gpus.yaml)"
        )


def finish_fsdp_backward(strategy) -> None:
    """Ends one micro-batch's backward pass under FSDP as FSDP itself would end it.

    FSDP closes a backward pass with a callback that the root unit queues from a hook on its forward's outputs: it
    waits for the gradients' reduce-scatter (on its own CUDA stream), reshards what is still gathered and returns every
    unit to idle. Lightning runs ``training_step`` inside the root's forward, so the module's backward passes happen
    before the root has any output, the callback never runs, and the units stay in their post-backward state: the
    export's state dict then stops ("Expects the handle training to be IDLE"), and on GPUs the optimizer could read
    gradients whose reduce-scatter is still running. The callback is run here, after each backward."""
    if not isinstance(strategy, FSDPStrategy):
        return
    from torch.distributed.fsdp._runtime_utils import _post_backward_final_callback

    _post_backward_final_callback(strategy.model, strategy.model)


def clip_grad_norm(strategy, parameters: list[torch.nn.Parameter], max_norm: float | None) -> torch.Tensor:
    """The gradient norm over the whole model, with the gradients clipped to ``max_norm`` by it (None or 0: not
    clipped, as in Hugging Face's Trainer). Under FSDP each process holds a shard of every gradient, so the norm of
    its own is not the model's: the root FSDP module's ``clip_grad_norm_`` sums the shards' squares over every
    process (a collective, so every process calls this). Under DDP the gradients are already averaged over
    processes, and each one's norm is the model's."""
    limit = max_norm or float("inf")
    if isinstance(strategy, FSDPStrategy):
        return strategy.model.clip_grad_norm_(limit)
    return torch.nn.utils.clip_grad_norm_(parameters, limit)


def generation_ready(model) -> contextlib.AbstractContextManager:
    """Gathers the weights that a causal LM wrapped as an FSDP unit holds itself (embeddings, final norm, output
    layer) while ``model.generate`` runs: generation calls the wrapped model directly, past the unit's forward that
    would gather them, while its decoder layers, units of their own, still gather theirs. Elsewhere, nothing."""
    if not isinstance(model, FullyShardedDataParallel):
        return contextlib.nullcontext()
    return FullyShardedDataParallel.summon_full_params(model, recurse=False, writeback=False)


def full_state_dict(strategy) -> dict[str, torch.Tensor]:
    """The LightningModule's whole state dict, for an exported model: under FSDP gathered on the first process
    (the others get an empty dict) whatever the strategy's ``state_dict_type``, which sets how training states are
    saved (sharded at scale, so that no process gathers optimizer states); elsewhere the strategy's own."""
    if not isinstance(strategy, FSDPStrategy):
        return strategy.lightning_module_state_dict()
    # Offloaded to CPU memory on GPUs; on CPU processes the "offloaded" copy is a view of the gathered weights that
    # FSDP frees right after, so none is made.
    config = FullStateDictConfig(offload_to_cpu=strategy.root_device.type != "cpu", rank0_only=True)
    with FullyShardedDataParallel.state_dict_type(strategy.model, StateDictType.FULL_STATE_DICT, config):
        return strategy.model.state_dict()


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
