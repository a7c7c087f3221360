"""What a training state (a Lightning checkpoint) holds of the model: under LoRA, the trained tensors only. The frozen
base weights are the start model's, which the resumed run loads anyway; a checkpoint of 0.9M trained parameters then
takes megabytes instead of the base model's hundreds."""

from __future__ import annotations

from pathlib import Path

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


def saved_step(path: Path) -> int:
    """The optimizer step a training state was saved at, read without loading its tensors: a file, or a folder of
    shards (FSDP's sharded states), whose step sits in its ``meta.pt``."""
    metadata = path / "meta.pt" if path.is_dir() else path
    return int(torch.load(metadata, map_location="cpu", weights_only=True, mmap=True)["global_step"])
