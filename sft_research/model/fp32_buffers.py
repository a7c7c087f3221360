"""Buffers that must stay float32 whatever precision the weights are cast to.

A model loaded in bf16 keeps some buffers in float32 on purpose: the rotary embedding's ``inv_freq`` above all.
Lightning's ``bf16-true`` casts every floating buffer with the module, and FSDP's mixed precision casts buffers to its
``buffer_dtype``; rounded to bf16, ``inv_freq`` turns the rotation angles by up to 1.2 rad at position 1,000 (head dim
128, theta 1e6), and attention past a few hundred tokens is scrambled. The buffers as loaded are recorded here and
put back, exactly, before any forward pass that would see them cast.
"""

from __future__ import annotations

import torch


def keep_float32_buffers(model: torch.nn.Module) -> None:
    """Every floating buffer that ``model`` holds in float32 now is restored to these exact values whenever a later
    cast has changed its dtype (checked by a forward pre-hook of its module, without a device sync). A buffer that the
    model itself recomputes in float32 (dynamic RoPE scaling) is left alone."""
    for module in model.modules():
        kept = {name: buffer.detach().clone() for name, buffer in module.named_buffers(recurse=False) if buffer.dtype == torch.float32}
        if kept:
            module.register_forward_pre_hook(_Restore(kept))


class _Restore:
    def __init__(self, kept: dict[str, torch.Tensor]):
        self.kept = kept

    def __call__(self, module: torch.nn.Module, args) -> None:
        for name, value in self.kept.items():
            current = module._buffers.get(name)
            if current is not None and current.dtype != torch.float32:
                # A copy: a cast that converts the buffer in place (FSDP's sets ``buffer.data``) must never reach
                # the kept values.
                module._buffers[name] = value.to(current.device, copy=True)


def restore_float32_buffers(model: torch.nn.Module) -> None:
    """Puts the kept buffers back now, as the next forward would: a compiled step then first sees them as it always
    will (float32), and is not compiled again for the dtype its first call saw."""
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, _Restore):
                hook(module, ())
