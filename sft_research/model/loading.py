"""Loads a Hugging Face causal LM by hub id, local path, embedded name or adapter folder, optionally with LoRA adapters."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal

import torch
from transformers.utils import logging as transformers_logging

from sft_research.checkpoints.embedded import DEFAULT_MODEL
from sft_research.checkpoints.names import from_pretrained, loadable_name
from sft_research.model.fp32_buffers import keep_float32_buffers
from sft_research.runs.timings import timed

# Loading or writing a checkpoint takes a moment, not a task to follow: transformers' "Loading weights" and "Writing
# model shards" bars (one pair per model in a benchmark run) are turned off. Hub downloads keep their own bars.
transformers_logging.disable_progress_bar()
# peft asks transformers 5 for the deprecated name of activation checkpointing's state; nothing for a run to act on.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")

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

    Without ``merge`` a run saves the adapter (and the tokenizer), which records its base model portably (an
    ``embedded:`` name or hub id as given, a local folder as an absolute path) and loads anywhere a model path goes,
    as its base with the adapter merged in. LoRA on top of an adapter folder therefore trains a new adapter on that
    merged model, and the new adapter's base is the earlier adapter folder: loading it merges both in turn.
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
        name_or_path: a hub id, a local checkpoint folder, ``embedded:SmolLM2-135M-Instruct``, or a peft adapter
            folder (loaded as its base model with the adapter merged in).
        dtype: the weights' dtype. None: the one ``trainer.precision`` computes in on the command line (bfloat16
            under ``bf16-true``, float16 under ``16-true``, else float32: the mixed precisions keep float32 weights),
            float32 when the module is built from Python; a config that names one ``trainer.precision`` does not hold
            is refused.
        gradient_checkpointing: recompute activations in the backward pass to save memory.
        lora: train LoRA adapters instead of all weights.
        attn_implementation: transformers' attention backend.
    """

    name_or_path: str = DEFAULT_MODEL
    dtype: Literal["float32", "bfloat16", "float16"] | None = None
    gradient_checkpointing: bool = False
    lora: LoraConfig | None = None
    attn_implementation: str = "sdpa"


def load_model(config: ModelConfig):
    from transformers import AutoModelForCausalLM

    with timed("model loads"):
        model = from_pretrained(
            AutoModelForCausalLM,
            config.name_or_path,
            dtype=DTYPES[config.dtype or "float32"],
            attn_implementation=config.attn_implementation,
        )
    keep_float32_buffers(model)
    if config.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers 5's name; the old one warns there
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
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
        # What peft writes into adapter_config.json and the model card: a base it can load (the export adds the
        # portable name beside it, which this framework reads).
        model.peft_config["default"].base_model_name_or_path = loadable_name(config.name_or_path)
    return model
