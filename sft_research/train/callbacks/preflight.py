"""Checks that fail a fit before its first step rather than hours into it, and the line that says what trains."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import lightning as L
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from sft_research.errors import DataError, PreflightError
from sft_research.model.fsdp import check_fsdp_wrapping
from sft_research.train.config_checks import check_micro_batch
from sft_research.train.export import exports, model_dir
from sft_research.train.master_weights import LOW_PRECISION
from sft_research.train.memory import FitShape, checkpoint_bytes, fsdp_shards


class Preflight(L.Callback):
    """At the start of a fit, once the model is wrapped: FSDP must wrap the causal LM as a unit of its own; the output
    and checkpoint folders must be writable with room for what goes there; low-precision weights without float32
    master weights are warned about; and one line says what trains, and where its final model will go."""

    def on_fit_start(self, trainer, module) -> None:
        model = module.model
        check_fsdp_wrapping(trainer.strategy, model, uses_lora=module.pretrained.lora is not None)
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        target = model_dir(module)
        rank_zero_info(
            f"model: {module.pretrained.name_or_path}, {total / 1e6:.1f}M parameters ({trainable / 1e6:.1f}M trained), "
            f"objective: {type(module.objective).__name__}; final model: {target if exports(module) else 'none (export_model false)'}"
        )
        optimizer = module.optimizer_config
        low_precision = {p.dtype for p in model.parameters() if p.requires_grad and p.dtype in LOW_PRECISION}
        if low_precision and not optimizer.master_weights:
            rank_zero_warn(
                f"the trained weights are {', '.join(map(str, low_precision))} and model.optimizer.master_weights is "
                f"false: updates smaller than half a unit in a weight's last place are lost (in bf16 at lr "
                f"{optimizer.lr:g}, most of them); keep float32 master weights (master_weights: true)"
            )
        if exports(module):
            check_output_dir(target.parent, parameter_bytes(model), "model output")
        callback = trainer.checkpoint_callback
        if callback is not None and callback.dirpath is not None:
            check_output_dir(Path(callback.dirpath), training_state_bytes(trainer, module), "checkpoint")


def training_state_bytes(trainer, module) -> int:
    """What one checkpoint holds over every process (:func:`~sft_research.train.memory.checkpoint_bytes`): under FSDP a
    process holds its shard of every weight, so the whole model is its count times the processes that split it."""
    parameters = list(module.model.parameters())
    trained = [p for p in parameters if p.requires_grad]
    strategy = trainer.strategy
    shards = (
        fsdp_shards(str(strategy.sharding_strategy), trainer.world_size, trainer.num_devices)[0]
        if isinstance(strategy, FSDPStrategy)
        else 1
    )
    settings = module.optimizer_config
    fit = FitShape(
        weight_bytes=parameters[0].element_size(),
        master_weights=settings.master_weights,
        optimizer=settings.name,
        lora=module.pretrained.lora is not None,
    )
    return checkpoint_bytes(shards * sum(p.numel() for p in parameters), shards * sum(p.numel() for p in trained), fit)


def check_batch_and_records(module, data) -> None:
    """Before any model loads: the micro-batch fits each process's share of the batch, and the training records are
    of the kind the objective trains on."""
    objective = module.objective
    check_micro_batch(data.batch_size, module.micro_batch_size, module.trainer.world_size)
    if len(data.train_examples[0].sequences) != objective.sequences_per_example:
        wanted = "preference records (prompt/chosen/rejected)" if objective.sequences_per_example == 2 else "SFT or text records"
        raise DataError(
            data.train_source.name,
            f"{type(objective).__name__} trains on {wanted}, but this source holds {data.kinds[data.train_source.name]}",
        )


def check_output_dir(path: Path, needed_bytes: int, what: str) -> None:
    """``path`` must be a writable folder (created if missing) on a disk with room for ``needed_bytes``."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as error:
        raise PreflightError(f"the {what} folder {path} is not writable: {error}") from error
    free = shutil.disk_usage(path).free
    if free < needed_bytes:
        raise PreflightError(
            f"the {what} folder {path} has {free / 2**30:.2f} GiB free, but one checkpoint needs about {needed_bytes / 2**30:.2f} GiB"
        )


def parameter_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())
