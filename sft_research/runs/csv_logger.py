"""Lightning's CSV logger, made to continue a resumed run's own ``metrics.csv`` instead of starting another."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from sft_research.runs.atomic_files import atomic_path


class ContinuedWriter(ExperimentWriter):
    """Keeps the rows logged before ``resume_step`` (those after it were logged past the last checkpoint and will be
    logged again) and appends to them."""

    def __init__(self, log_dir: str, resume_step: int):
        self.resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as file:
            reader = csv.DictReader(file)
            fields, rows = list(reader.fieldnames or []), [row for row in reader if int(row["step"]) < self.resume_step]
        # Replaced whole: a resume killed here keeps the rows logged before it.
        with atomic_path(Path(self.metrics_file_path)) as temporary, open(temporary, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = sorted(fields)


class RunCSVLogger(CSVLogger):
    """A :class:`CSVLogger` that a resumed run (``--ckpt_path last``) points at its earlier version folder, and that
    writes every logged step at once, so that a killed run's file holds every step up to its last checkpoint.

    Args:
        save_dir: the logs' root folder.
        name: the run's folder under it; None: named after the objective and the training data by ``sft-research``
            (e.g. ``dpo-pairs.jsonl``); ``""``: no folder of its own.
        version: its ``version_N`` (None: the next free one).
        prefix: a prefix of every metric's name.
        flush_logs_every_n_steps: how often logged rows are written to ``metrics.csv``.
    """

    resume_step: int | None = None

    def __init__(
        self,
        save_dir: str = "runs",
        name: str | None = None,
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 1,
    ):
        super().__init__(save_dir, name=name, version=version, prefix=prefix, flush_logs_every_n_steps=flush_logs_every_n_steps)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and self.resume_step is not None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ContinuedWriter(self.log_dir, self.resume_step)
        return super().experiment
