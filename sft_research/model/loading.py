"""Loads a Hugging Face causal LM by hub id, local path, or embedded name, optionally with LoRA adapters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from sft_research.checkpoints.embedded import DEFAULT_MODEL
from sft_research.checkpoints.names import from_pretrained

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoraConfig:
    """LoRA adapters through ``peft``.

    Args:
        r: the adapters' rank.
        alpha: their scale numerator (the update is scaled by ``alpha / r``).
        dropout: dropout on the adapters' input.
        target_modules: the module names to adapt, or ``all-linear`` (every linear layer but the output head).
        modules_to_save: modules trained in full beside the adapters (e.g. ``lm_head``, ``embed_tokens``).
        merge: save the final model with the adapters merged into full weights (loadable by plain
            ``transformers``) instead of the adapter alone.
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] | Literal["all-linear"] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    modules_to_save: list[str] | None = None
    merge: bool = False


@dataclass
class ModelConfig:
    """Which pretrained causal LM to fine-tune, and how to hold it.

    Args:
        name_or_path: a hub id, a local checkpoint folder, or ``embedded:SmolLM2-135M-Instruct``.
        dtype: the weights' dtype.
        gradient_checkpointing: recompute activations in the backward pass to save memory.
        lora: train LoRA adapters instead of all weights.
        attn_implementation: transformers' attention backend.
    """

    name_or_path: str = DEFAULT_MODEL
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    gradient_checkpointing: bool = False
    lora: LoraConfig | None = None
    attn_implementation: str = "sdpa"


def load_model(config: ModelConfig):
    from transformers import AutoModelForCausalLM

    model = from_pretrained(
        AutoModelForCausalLM,
        config.name_or_path,
        dtype=DTYPES[config.dtype],
        attn_implementation=config.attn_implementation,
    )
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if config.lora is not None:
        import peft

        lora = peft.LoraConfig(
            r=config.lora.r,
            lora_alpha=config.lora.alpha,
            lora_dropout=config.lora.dropout,
            target_modules=config.lora.target_modules if isinstance(config.lora.target_modules, str) else list(config.lora.target_modules),
            modules_to_save=config.lora.modules_to_save,
            task_type="CAUSAL_LM",
        )
        model = peft.get_peft_model(model, lora)
    return model
