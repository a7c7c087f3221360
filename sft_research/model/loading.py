"""Loads a Hugging Face causal LM and its tokenizer by hub id, local path, or the embedded default model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from sft_research.model.embedded import DEFAULT_MODEL, EMBEDDED_PREFIX, resolve_embedded

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(OSError):
    """A model or tokenizer could not be found or loaded."""


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


def resolve(name_or_path: str) -> str:
    """A local folder for embedded and local models; hub ids are returned as they are."""
    if name_or_path.startswith(EMBEDDED_PREFIX):
        return str(resolve_embedded(name_or_path))
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{name_or_path}: is not a Hugging Face checkpoint folder (no config.json)")
        return str(path)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelLoadError(f"{name_or_path}: no such model folder")
    return name_or_path


def _from_pretrained(loader, name_or_path: str, **kwargs):
    resolved = resolve(name_or_path)
    try:
        return loader.from_pretrained(resolved, **kwargs)
    except OSError as error:
        raise ModelLoadError(
            f"{name_or_path}: could not be loaded as a local folder or a hub id ({error}). Without network access "
            f"to the hub, download it elsewhere and pass its local folder, or use {DEFAULT_MODEL}."
        ) from error


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, name_or_path)
    if tokenizer.pad_token_id is None:
        # Padding positions are masked out of attention and loss, so any existing token serves.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(config: ModelConfig):
    from transformers import AutoModelForCausalLM

    model = _from_pretrained(
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
