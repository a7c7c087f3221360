"""Lightning's FSDP strategy on CPU processes, for rehearsals: the same wrapping, sharding, mixed precision and
export as on GPUs, over gloo.

Five things differ from :class:`~lightning.pytorch.strategies.FSDPStrategy`, and only these:

* Lightning refuses ``FSDPStrategy`` without a CUDA accelerator (a check on the exact class, which a subclass passes)
  and hands FSDP the device's index as ``device_id``, which a CPU device lacks; torch's FSDP runs on CPU processes
  when ``device_id`` is the CPU device.
* ``cpu_offload`` is left out: FSDP pins the memory it offloads to, which needs a GPU, and on CPU processes every
  tensor is in host memory already (the rehearsal's report says so).
* A full state dict is gathered without FSDP's ``offload_to_cpu``: on a CPU process the "offloaded" copy is a view of
  the gathered weights that FSDP frees right after, and cloning it crashed (a segmentation fault, torch 2.13).
* A full optimizer state is gathered without offload too: FSDP gathers each state tensor into a buffer it reuses
  and "offloads" it with ``.cpu()``, which on a CPU process returns that buffer, so that every state (Adam's two
  moments, the float32 masters) would hold the last one gathered and a resumed run would stop at a non-finite loss.
  Without offload FSDP clones each one.
* Lightning's FSDP mixed precision autocasts on CUDA only (``torch.autocast("cuda")``), which does nothing on CPUs;
  the CPU autocast stands in for it, so that layers FSDP keeps in bf16 meet bf16 inputs as on GPUs.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from lightning.fabric.strategies.fsdp import _move_torchmetrics_to_device, _setup_activation_checkpointing
from lightning.pytorch.plugins.precision import FSDPPrecision
from lightning.pytorch.strategies import FSDPStrategy
from torch.distributed.fsdp import (
    FullOptimStateDictConfig,
    FullStateDictConfig,
    FullyShardedDataParallel,
    OptimStateKeyType,
    StateDictType,
)
from torch.optim import Optimizer

from sft_research.model.fsdp import full_state_dict


class CPUFSDPPrecision(FSDPPrecision):
    def forward_context(self) -> contextlib.AbstractContextManager:
        if "mixed" in self.precision:
            return torch.autocast("cpu", dtype=torch.bfloat16 if self.precision == "bf16-mixed" else torch.float16)
        return super().forward_context()


class CPUFSDPStrategy(FSDPStrategy):
    """``FSDPStrategy`` with the same arguments, on CPU processes."""

    @property
    def precision_plugin(self) -> FSDPPrecision:
        return FSDPStrategy.precision_plugin.fget(self)

    @precision_plugin.setter
    def precision_plugin(self, plugin: FSDPPrecision | None) -> None:
        if isinstance(plugin, FSDPPrecision) and not isinstance(plugin, CPUFSDPPrecision):
            plugin = CPUFSDPPrecision(plugin.precision)
        FSDPStrategy.precision_plugin.fset(self, plugin)

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        # FSDPStrategy._setup_model, less its branch for models wrapped beforehand (the module never is), with the
        # CPU device as device_id.
        model = FullyShardedDataParallel(
            module=model,
            mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy,
            device_id=torch.device("cpu"),
            **self.kwargs,
        )
        _move_torchmetrics_to_device(model, self.root_device)
        _setup_activation_checkpointing(model, self._activation_checkpointing_kwargs)
        return model

    def lightning_module_state_dict(self) -> dict[str, Any]:
        return full_state_dict(self) if self._state_dict_type == "full" else super().lightning_module_state_dict()

    def optimizer_state(self, optimizer: Optimizer) -> dict[str, Any]:
        if self._state_dict_type != "full":
            return super().optimizer_state(optimizer)
        optimizer = getattr(optimizer, "_optimizer", optimizer)  # a LightningOptimizer's own
        model_config = FullStateDictConfig(offload_to_cpu=False, rank0_only=True)
        optimizer_config = FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=True)
        with FullyShardedDataParallel.state_dict_type(self.model, StateDictType.FULL_STATE_DICT, model_config, optimizer_config):
            state = FullyShardedDataParallel.optim_state_dict(self.model, optimizer)
        if self.global_rank == 0:  # keyed by parameter index, as Lightning saves and loads a full optimizer state
            state = FullyShardedDataParallel.rekey_optim_state_dict(state, OptimStateKeyType.PARAM_ID, self.model)
        return state
