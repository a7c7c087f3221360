"""Settings of a fit config checked before anything loads: Trainer options that this module does in its own way,
runs that would train nothing, lengths the model cannot take, LoRA settings peft would refuse after loading the
model. Each stops the command with one line that names the setting and what to use instead."""

from __future__ import annotations

import json
from pathlib import Path

from sft_research.errors import ConfigError

# Lightning's options that the module replaces (it steps its optimizer itself, micro-batch by micro-batch).
REPLACED_TRAINER_OPTIONS = {
    "accumulate_grad_batches": (
        1,
        "set data.micro_batch_size instead: the optimizer batch (data.batch_size) is split into micro-batches of that "
        "size, their gradients accumulated",
    ),
    "gradient_clip_val": (None, "set model.optimizer.max_grad_norm instead: the module clips the gradient norm itself"),
    "gradient_clip_algorithm": (None, "the module clips the gradient's norm (model.optimizer.max_grad_norm)"),
}


def check_fit_config(subcommand: str, config) -> None:
    """Every check of this file, on the parsed (not yet built) config of ``sft-research SUBCOMMAND``."""
    trainer, model, data = config.trainer, config.model, config.data
    for option, (default, instead) in REPLACED_TRAINER_OPTIONS.items():
        value = trainer.get(option)
        if value is not None and value != default:
            raise ConfigError(f"--trainer.{option} {value}: not used by this module; {instead}")
    if subcommand == "fit":
        if trainer.get("max_steps") == 0 or trainer.get("max_epochs") == 0:
            raise ConfigError("--trainer.max_steps 0: nothing would be trained; `sft-research validate` evaluates a model without training")
        if data.get("train") is None:
            raise ConfigError("fit needs training data: --data.train (e.g. sft_research.data.FileDataset with --data.train.path FILE)")
    elif data.get("val") is None and not is_task(data.get("train")) and not data.get("val_fraction"):
        raise ConfigError(
            f"{subcommand} needs held-out data: --data.val (e.g. sft_research.data.FileDataset with --data.val.path FILE), "
            "--data.val_fraction with training records, or a task with held-out prompts as --data.train (ReasoningGymTask)"
        )
    pretrained = model.get("pretrained")
    name = pretrained.get("name_or_path") if pretrained is not None else None
    if name is not None:
        check_max_length(name, data.get("max_length"))
        check_lora(name, pretrained.get("lora"))


def is_task(source) -> bool:
    return source is not None and str(getattr(source, "class_path", "")).endswith("ReasoningGymTask")


def local_config(name_or_path: str) -> dict | None:
    """The model's config.json where it is on this disk (a local folder, an adapter's base, the embedded model),
    read without loading the model; None otherwise (a hub id not downloaded)."""
    from sft_research.checkpoints.names import ModelLoadError, adapter_base, resolve

    try:
        base = adapter_base(name_or_path)
        path = Path(resolve(base if base is not None else name_or_path)) / "config.json"
    except ModelLoadError:
        return None  # not there yet (an earlier pipeline stage's model): the load itself will say what is wrong
    return json.loads(path.read_text()) if path.is_file() else None


def check_max_length(name_or_path: str, max_length: int | None) -> None:
    config = local_config(name_or_path)
    positions = (config or {}).get("max_position_embeddings")
    if max_length is not None and positions is not None and max_length > positions:
        raise ConfigError(f"--data.max_length {max_length}: {name_or_path} takes at most {positions} positions (max_position_embeddings)")


def check_lora(name_or_path: str, lora) -> None:
    """peft's own checks, made before the model loads: rank, scale and dropout, and target modules that match a
    module of the model (built on the meta device from its config.json, which allocates nothing)."""
    if lora is None:
        return
    if lora.r < 1:
        raise ConfigError(f"--model.pretrained.lora.r {lora.r}: the adapters' rank must be at least 1 (8 and 16 are usual)")
    if lora.alpha <= 0:
        raise ConfigError(f"--model.pretrained.lora.alpha {lora.alpha}: the scale must be positive (usually 2 x r)")
    if not 0 <= lora.dropout < 1:
        raise ConfigError(f"--model.pretrained.lora.dropout {lora.dropout}: must be in [0, 1)")
    if lora.target_modules == "all-linear":
        return
    names = module_names(name_or_path)
    if names is None:
        return
    missing = [t for t in lora.target_modules if not any(n == t or n.endswith(f".{t}") for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, kind in names.items() if kind == "Linear"})
        raise ConfigError(
            f"--model.pretrained.lora.target_modules: {missing} match no module of {name_or_path}; "
            f"its linear layers are {linear} (or use all-linear)"
        )


def module_names(name_or_path: str) -> dict[str, str] | None:
    """Each module's dotted name and class name, from the model built on the meta device; None off this disk."""
    config = local_config(name_or_path)
    if config is None:
        return None
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from sft_research.checkpoints.names import adapter_base, resolve

    base = adapter_base(name_or_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(resolve(base if base is not None else name_or_path)))
    return {name: type(module).__name__ for name, module in model.named_modules()}
