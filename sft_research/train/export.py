"""Writing the policy as a Hugging Face folder: at the end of a fit, and part-way through it (curve points).

Every process calls these (FSDP gathers the weights collectively); the first one writes, under a temporary name that
is renamed into place only when complete, so that a folder's presence means a finished model.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info

from sft_research.checkpoints.names import ADAPTER_CONFIG, PORTABLE_BASE, portable_name
from sft_research.model.fsdp import full_state_dict, savable
from sft_research.runs.atomic_files import atomic_dir
from sft_research.runs.run_record import RUN_RECORD
from sft_research.runs.timings import timed


def model_dir(module) -> Path:
    """Where the fit's final model goes: ``model.save_dir``, else ``<log dir>/hf_model``, else (no logger) a folder
    that is named, never the bare working folder. Every process must ask: the log folder is agreed on collectively."""
    trainer = module.trainer
    if module.save_dir is not None:
        return Path(module.save_dir)
    if trainer.logger is not None:
        return Path(trainer.log_dir) / "hf_model"
    return Path(trainer.default_root_dir) / "runs" / "unlogged" / "hf_model"


def export_model(module, target: Path) -> None:
    """Writes the policy as it is now to ``target``: the full weights, in bf16 after bf16 training, or, while LoRA
    adapters train, the adapters, which load wherever a model path goes."""
    trainer = module.trainer
    state = full_state_dict(trainer.strategy)  # gathered from every process under FSDP
    if trainer.is_global_zero:
        state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
        if module.pretrained.lora is not None:
            # peft saves what trains (adapters, modules_to_save): the frozen base weights are not cast for nothing.
            trained = {name for name, parameter in module.model.named_parameters() if parameter.requires_grad}
            state = {k: v for k, v in state.items() if k in trained}
        if "bf16" in str(trainer.precision):
            # Trained in bf16 (mixed keeps float32 weights): the export is bf16, half the size.
            state = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()}
        save(module, target, state)


def exports(module) -> bool:
    """Whether the fit writes its final model: the command line's ``export_model`` (FitCLI sets it on the module; a
    module built elsewhere exports)."""
    return getattr(module, "export_final", True)


def export_final_model(module) -> None:
    """The fit's final model, with its LoRA adapters merged into the weights where ``lora.merge`` asks; every process
    waits until it is on disk, since the next stage, on every process, starts from it. With ``export_model`` false,
    nothing is written and the last line says so."""
    trainer = module.trainer
    target = model_dir(module)
    log_dir = trainer.log_dir if trainer.logger is not None else None  # a collective: every process asks
    if not exports(module):
        if trainer.is_global_zero:
            rank_zero_info(outputs_summary(trainer, None, log_dir))
        return
    lora = module.pretrained.lora
    merged = lora is not None and lora.merge
    if merged:
        module.model = module.model.merge_and_unload()
        if trainer.is_global_zero:
            save(module, target)
    else:
        export_model(module, target)
    if trainer.is_global_zero:
        rank_zero_info(outputs_summary(trainer, target, log_dir) + (" (LoRA adapters merged)" if merged else ""))
    trainer.strategy.barrier("final model written")


@timed("exports")
def save(module, target: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
    # peft asks whether the base's vocabulary was resized; an adapter on another adapter has no config.json to ask,
    # and this framework never resizes embeddings.
    warnings.filterwarnings("ignore", message="Could not find a config file in")
    with atomic_dir(target) as staging:
        savable(module.model, state_dict).save_pretrained(staging, state_dict=state_dict)
        module.tokenizer.save_pretrained(staging)
        if (staging / ADAPTER_CONFIG).is_file():
            (staging / PORTABLE_BASE).write_text(json.dumps({"base_model": portable_name(module.pretrained.name_or_path)}) + "\n")


def outputs_summary(trainer, model_folder: Path | None, log_dir: str | None) -> str:
    """One line: what the fit wrote, and where (``model_folder`` None: no final model, ``export_model`` false)."""
    if model_folder is None:
        parts = ["no final model (export_model false)"]
    else:
        size = sum(f.stat().st_size for f in model_folder.rglob("*") if f.is_file()) / 2**20
        parts = [f"final model {model_folder} ({size:.1f} MB)"]
    if log_dir is not None:
        parts.insert(0, f"metrics and config in {log_dir} (and what ran: {RUN_RECORD})")
    callback = trainer.checkpoint_callback
    if callback is not None and callback.last_model_path:
        parts.append(f"training state {callback.last_model_path}")
    return "outputs: " + "; ".join(parts)
