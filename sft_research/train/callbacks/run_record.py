"""Writes the fit's run record (:mod:`sft_research.runs.run_record`) to its run folder as it starts."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from sft_research.runs.run_record import write_run_record
from sft_research.train.export import model_dir


class RunRecord(L.Callback):
    """``run.json`` beside the fit's ``config.yaml`` (its log folder), or beside its final model without a logger: the
    commit, the library versions, the model it starts from and its reference."""

    def setup(self, trainer, module, stage: str) -> None:
        # Every process asks for the folders (the log folder is agreed on collectively); the first one writes.
        folder = Path(trainer.log_dir) if trainer.logger is not None else model_dir(module).parent
        if trainer.is_global_zero:
            write_run_record(folder, module.pretrained.name_or_path, module.reference.name_or_path)
