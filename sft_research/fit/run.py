"""One fit run from Python in a folder of its own, as the pipelines and the bench run their stages: the config with its
outputs under the folder, written beside them, continued from a training state an earlier attempt left."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from sft_research.checkpoints.names import ADAPTER_CONFIG
from sft_research.checkpoints.training_state import saved_step
from sft_research.fit.lightning_cli import CSV_LOGGER, FitCLI, FitOnlyCLI, cli_arguments


def in_run_dir(config: dict[str, Any], run_dir: Path, start_model: str | None = None) -> dict[str, Any]:
    """``config`` with its outputs under ``run_dir``: logs in ``run_dir/logs`` (whatever logger the config names, or
    none), the final model in ``run_dir/hf_model``. ``start_model`` replaces the pretrained model and, unless the
    config names another reference, becomes the frozen reference too."""
    config = copy.deepcopy(config)
    trainer = config.setdefault("trainer", {})
    trainer["default_root_dir"] = str(run_dir)
    logger = trainer.get("logger", True)
    if logger is True or logger is None:
        trainer["logger"] = {"class_path": CSV_LOGGER, "init_args": {"save_dir": str(run_dir), "name": "logs"}}
    elif isinstance(logger, dict):
        logger.setdefault("init_args", {}).update(save_dir=str(run_dir), name="logs")
    for callback in trainer.get("callbacks") or []:
        if isinstance(callback, dict) and str(callback.get("class_path", "")).endswith("ModelCheckpoint"):
            callback.setdefault("init_args", {})["dirpath"] = str(run_dir / "checkpoints")  # each stage and round its own
    model = config.setdefault("model", {})
    model["save_dir"] = str(run_dir / "hf_model")
    if start_model is not None:
        model.setdefault("pretrained", {})["name_or_path"] = start_model
    return config


def run_fit(config: dict[str, Any], run_dir: Path, start_model: str | None = None) -> FitCLI:
    """Runs ``sft-research fit`` on ``config`` in ``run_dir`` (see :func:`in_run_dir`); the config as run is written
    to ``run_dir/fit.yaml``. A fit that an earlier attempt left with a training state (its checkpoint callback's
    ``last.ckpt``) continues from it, so that a pipeline run again after a lost node picks up inside its stage."""
    config = in_run_dir(config, run_dir, start_model)
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.exists() and not is_done(run_dir):
        print(f"{run_dir}: continuing from its training state at step {saved_step(last)} ({last})")
        config["ckpt_path"] = str(last)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "fit.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return FitOnlyCLI(**cli_arguments({"fit": config}, run=True))


def is_done(run_dir: Path) -> bool:
    # A full model or a LoRA adapter, renamed into place only when complete.
    return any((run_dir / "hf_model" / name).is_file() for name in ("config.json", ADAPTER_CONFIG))
