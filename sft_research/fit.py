"""One fit, from a config: the LightningCLI over :class:`FineTuningModule` and :class:`SFTDataModule`.

Below the command line and the pipelines, which both call it: ``sft-research fit`` parses the command line into the
same config that a pipeline stage hands over as a dict. A stage's run writes its config, logs and final Hugging Face
checkpoint under its own folder; the checkpoint is renamed into place only when complete, so its presence means done.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import lazy_instance
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger

from sft_research.data.datamodule import SFTDataModule
from sft_research.module import FineTuningModule

CSV_LOGGER = "lightning.pytorch.loggers.CSVLogger"


class WithoutLitLoggerTip(logging.Filter):
    """Lightning advertises its cloud logger on every run that does not use it; that one message is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(WithoutLitLoggerTip())


class FitCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # The data must be tokenized by the model's own tokenizer.
        parser.link_arguments("model.pretrained.name_or_path", "data.tokenizer")

    def instantiate_trainer(self, **kwargs):
        # The plain progress bar counts steps; Lightning's default (Rich) shows "Epoch 0/-2" for step-limited runs.
        trainer = self._get(self.config_init, "trainer", default={})
        given = trainer.get("callbacks") or []
        given = given if isinstance(given, list) else [given]
        if trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in given):
            kwargs["callbacks"] = [*given, TQDMProgressBar()]
        return super().instantiate_trainer(**kwargs)

    def parse_arguments(self, parser, args) -> None:
        # Configs come either from the command line (args None) or as a dict from our own callers, never both.
        self.config = parser.parse_object(args) if isinstance(args, dict) else parser.parse_args(args)


def cli_arguments(args: list[str] | dict | None, run: bool) -> dict:
    """The LightningCLI settings of ``sft-research``, shared by every way of running or checking a config."""
    return dict(
        model_class=FineTuningModule,
        datamodule_class=SFTDataModule,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        # The module builds its optimizer from model.optimizer: Lightning's own --optimizer/--lr_scheduler would be ignored.
        auto_configure_optimizers=False,
        trainer_defaults={
            "num_sanity_val_steps": 0,
            "deterministic": True,
            "logger": lazy_instance(CSVLogger, save_dir="runs", name="sft"),
            # Lightning's summary table has no FLOP count without an example input; the module prints its own line.
            "enable_model_summary": False,
        },
        args=args,
        run=run,
    )


def parse_fit(config: dict[str, Any]):
    """Checks a fit config with the ``sft-research fit`` parser, without building anything (no model, no devices)."""

    class ParseOnly(FitCLI):
        def instantiate_classes(self) -> None:
            pass

    return ParseOnly(**cli_arguments(copy.deepcopy(config), run=False)).config


def build_fit(config: dict[str, Any]) -> FitCLI:
    """The module, data module and trainer of a fit config, built but not run."""
    return FitCLI(**cli_arguments(copy.deepcopy(config), run=False))


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
    model = config.setdefault("model", {})
    model["save_dir"] = str(run_dir / "hf_model")
    if start_model is not None:
        model.setdefault("pretrained", {})["name_or_path"] = start_model
    return config


def run_fit(config: dict[str, Any], run_dir: Path, start_model: str | None = None) -> FitCLI:
    """Runs ``sft-research fit`` on ``config`` in ``run_dir`` (see :func:`in_run_dir`); the config as run is written
    to ``run_dir/fit.yaml``."""
    config = in_run_dir(config, run_dir, start_model)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "fit.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return FitCLI(**cli_arguments({"fit": config}, run=True))


def is_done(run_dir: Path) -> bool:
    return (run_dir / "hf_model" / "config.json").is_file()
