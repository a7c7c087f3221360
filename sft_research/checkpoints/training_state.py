"""What a training state (a Lightning checkpoint) holds of the model: under LoRA, the trained tensors only. The frozen
base weights are the start model's, which the resumed run loads anyway; a checkpoint of 0.9M trained parameters then
takes megabytes instead of the base model's hundreds."""

from __future__ import annotations

import torch


def drop_frozen_weights(module, checkpoint: dict) -> None:
    """Leaves out of ``checkpoint`` the module's parameters that do not train, when LoRA adapters train."""
    if module.pretrained.lora is None:
        return
    # Kept: what trains and the buffers; a weight tied to a frozen one (the output layer) goes with it.
    kept = {f"model.{name}" for name, parameter in module.model.named_parameters() if parameter.requires_grad}
    kept |= {f"model.{name}" for name, _ in module.model.named_buffers()}
    checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("model.") or k in kept}
    checkpoint["frozen_weights_left_out"] = True


def restore_frozen_weights(module, checkpoint: dict) -> None:
    """Fills the frozen weights that :func:`drop_frozen_weights` left out with the module's own (the start model,
    loaded before a checkpoint is restored), so that the state dict loads strictly."""
    if not checkpoint.get("frozen_weights_left_out"):
        return
    own: dict[str, torch.Tensor] = module.state_dict()
    checkpoint["state_dict"] = {**{k: v for k, v in own.items() if k not in checkpoint["state_dict"]}, **checkpoint["state_dict"]}
