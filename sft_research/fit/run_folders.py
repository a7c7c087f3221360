"""Where a fit's logs go: its run's default name, the folder of an evaluation, and the clean-up of a run that failed
before it logged anything."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from sft_research.runs.run_record import RUN_RECORD


def run_name(config) -> str:
    """A run's default name: its objective and its training data, e.g. ``dpo-pairs.jsonl`` for DPO on ``pairs.jsonl`` or
    ``sft-chain_sum`` for SFT on that reasoning-gym task, so that runs of different objectives land apart."""
    objective = getattr(config.model, "objective", None)
    objective_name = str(getattr(objective, "class_path", objective or "SFT")).rsplit(".", 1)[-1].lower()
    train = config.data.get("train") or config.data.get("val")
    init = getattr(train, "init_args", None) or {}
    data = next((str(init[key]) for key in ("path", "task") if isinstance(init.get(key), str) and init[key]), None)
    # A local file keeps its extension (pc.jsonl and pc.csv are other runs); a hub id or a task, its last part.
    data_name = Path(data.rstrip("/")).name if data else str(getattr(train, "class_path", "data")).rsplit(".", 1)[-1].lower()
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{objective_name}-{data_name}")


def evaluation_version(folder: Path, subcommand: str) -> str:
    """``validate_0``, ``validate_1``, ...: the first that ``folder`` does not hold."""
    taken = {p.name for p in folder.glob(f"{subcommand}_*")} if folder.is_dir() else set()
    return next(f"{subcommand}_{n}" for n in range(len(taken) + 1) if f"{subcommand}_{n}" not in taken)


def remove_if_empty(trainer) -> None:
    """A run that failed before logging anything leaves no version folder behind (only its config, if that)."""
    # Rank zero only, before asking the logger: trainer.log_dir is a collective, and another rank may not have failed.
    if trainer is None or trainer.logger is None or not trainer.is_global_zero:
        return
    log_dir = getattr(trainer.logger, "log_dir", None)  # a logger with a folder of its own
    if log_dir is None or not Path(log_dir).is_dir():
        return
    if {p.name for p in Path(log_dir).iterdir()} <= {"config.yaml", "hparams.yaml", RUN_RECORD}:
        shutil.rmtree(log_dir)
        if not any(Path(log_dir).parent.iterdir()):  # the run's name folder, made for this run alone
            Path(log_dir).parent.rmdir()
