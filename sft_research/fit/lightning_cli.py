"""One fit, from a config: the LightningCLI over :class:`FineTuningModule` and :class:`SFTDataModule`.

``sft-research fit`` parses the command line into the same config that a pipeline stage hands over as a dict
(:mod:`sft_research.fit.run`). Checks of the settings come first, before anything loads; the run's logs go to a folder
named for it (:mod:`sft_research.fit.run_folders`); ``--ckpt_path last`` finds the run's last state
(:mod:`sft_research.fit.resume`).
"""

from __future__ import annotations

import copy
import importlib
import sys
from pathlib import Path
from typing import Any

from jsonargparse import Namespace, lazy_instance
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningCLI

from sft_research.checkpoints.names import model_config
from sft_research.data.datamodule import SFTDataModule
from sft_research.fit.log_filters import quiet_lightning
from sft_research.fit.parse import REPLACED_TRAINER_OPTIONS, parse_or_explain
from sft_research.fit.resume import find_last_checkpoint
from sft_research.fit.run_folders import evaluation_version, remove_if_empty, run_name
from sft_research.runs.csv_logger import RunCSVLogger
from sft_research.train.callbacks.progress_bar import StepProgressBar
from sft_research.train.callbacks.run_record import RunRecord
from sft_research.train.config_checks import check_fit_config, weights_dtype
from sft_research.train.module import FineTuningModule

CSV_LOGGER = "sft_research.runs.csv_logger.RunCSVLogger"
# Loggers whose run folder is named by run_name unless the config names it, and their own default name (None too:
# the name a switch of logger class on the command line carries over from our CSV logger).
UNNAMED = {
    CSV_LOGGER: None,
    "lightning.pytorch.loggers.CSVLogger": "lightning_logs",
    "lightning.pytorch.loggers.TensorBoardLogger": "lightning_logs",
}


class FitCLI(LightningCLI):
    # Where the checks before anything loads read the model's architecture (its config.json); None: settings only.
    model_config = staticmethod(model_config)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # predict would run the module's forward, which this module does not define for inference.
        return {name: keys for name, keys in LightningCLI.subcommands().items() if name != "predict"}

    def add_core_arguments_to_parser(self, parser) -> None:
        # LightningCLI's own, but the Trainer's options that this module replaces or that no command reads are left out
        # (of --help too); typing one gets the line that says what to use instead (fit/parse.py).
        parser.add_class_arguments(
            self.trainer_class, "trainer", fail_untyped=False, instantiate=False, sub_configs=True, skip=set(REPLACED_TRAINER_OPTIONS)
        )
        parser.set_defaults({f"trainer.{key}": value for key, value in self.trainer_defaults.items() if key != "callbacks"})
        parser.add_lightning_class_args(self._model_class, "model", subclass_mode=self.subclass_mode_model)
        parser.add_lightning_class_args(self._datamodule_class, "data", subclass_mode=self.subclass_mode_data)

    def add_arguments_to_parser(self, parser) -> None:
        # The data must be tokenized by the model's own tokenizer.
        parser.link_arguments("model.pretrained.name_or_path", "data.tokenizer")
        # The batch settings sit together under data: the global batch and the micro-batch the module splits it into.
        parser.link_arguments("data.micro_batch_size", "model.micro_batch_size")
        # The data loader packs and pads its batches as the module runs them.
        parser.link_arguments("model.execution.packing", "data.pack")
        parser.link_arguments("model.execution.compile", "data.pad_to_bucket")
        # Rows that hold both an SFT record and a preference pair are read as what the objective trains on.
        parser.link_arguments("model.objective", "data.record_kind", compute_fn=record_kind_of)
        parser.add_argument(
            "--export_model",
            type=bool,
            default=True,
            help="write the final model at the end of the fit (false: metrics, config and run.json only; refused where a "
            "later step reads the model: a pipeline's stages, IRFT's rounds, the bench, rehearse)",
        )
        parser.add_argument(
            "--gpu_memory_gb",
            type=float,
            default=80.0,
            help="the memory of each GPU this config is meant for, in GB: `sft-research rehearse` plans the run's memory against it",
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_fit_config(self.subcommand or "fit", config, self.model_config)
        pretrained = config.model.get("pretrained")
        if pretrained is not None:  # bf16 is set in one place: the weights' dtype follows trainer.precision
            pretrained.dtype = weights_dtype(config.trainer.get("precision"), pretrained.get("dtype"))
        with_absolute_paths(config)
        logger = config.trainer.get("logger")
        class_path = getattr(logger, "class_path", None)
        if class_path in UNNAMED and logger.init_args.get("name") in (None, UNNAMED[class_path]):
            logger.init_args.name = run_name(config)
        if class_path in UNNAMED and self.subcommand in ("validate", "test") and logger.init_args.get("version") is None:
            # An evaluation's logs sit beside the training runs' version_N folders without taking their numbers.
            logger.init_args.version = evaluation_version(Path(logger.init_args.save_dir) / logger.init_args.name, self.subcommand)
        if self.subcommand == "fit" and config.get("ckpt_path") == "last":
            if class_path == "lightning.pytorch.loggers.CSVLogger":
                logger.class_path = CSV_LOGGER  # Lightning's own would delete the metrics logged before the resume
            self.resume = find_last_checkpoint(config)
            config.ckpt_path = str(self.resume.checkpoint)

    def _parse_ckpt_path(self) -> None:
        # A resumed run is given its config again. The checkpoint's hyperparameters are the flat record for loggers
        # (hparams.yaml), not the module's arguments, so they are not parsed back into the config.
        return None

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        config = self.config[self.subcommand] if self.subcommand else self.config
        # Loggers write a module's hyperparameters (hparams.yaml, TensorBoard's hparams): the run's config, flat.
        self.model.save_hyperparameters(logged_hyperparameters(config))
        self.model.export_final = config.get("export_model", True)  # read by sft_research.train.export

    def instantiate_trainer(self, **kwargs):
        # The plain progress bar counts steps (Lightning's default, Rich, shows "Epoch 0/-2" for step-limited runs),
        # and reads the loss on logged steps only.
        trainer = self._get(self.config_init, "trainer", default={})
        given = trainer.get("callbacks") or []
        given = given if isinstance(given, list) else [given]
        added = [RunRecord()]  # run.json: the commit, the versions, the model it starts from
        if trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in given):
            added.append(StepProgressBar())
        kwargs["callbacks"] = [*given, *added]
        # A full training state is several times the model's size: written only when a checkpoint callback asks for
        # it (or enable_checkpointing is set true for Lightning's default one).
        if trainer.get("enable_checkpointing") is None and not any(isinstance(c, ModelCheckpoint) for c in given):
            kwargs["enable_checkpointing"] = False
        trainer = super().instantiate_trainer(**kwargs)
        resume = getattr(self, "resume", None)
        if resume is not None and isinstance(trainer.logger, RunCSVLogger):
            trainer.logger.resume_step = resume.step
        return trainer

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            remove_if_empty(self.trainer)
            raise

    def parse_arguments(self, parser, args) -> None:
        # Configs come either from the command line (args None) or as a dict from our own callers, never both.
        args = sys.argv[1:] if args is None else args
        words = list(args) if isinstance(args, dict) else [a for a in args if not a.startswith("-")]
        # A dict is a fit config (or {"fit": config}) from a pipeline stage or the data command.
        subcommand = words[0] if words and words[0] in self.subcommands() else "fit" if isinstance(args, dict) else ""
        self.config = parse_or_explain(parser, args, subcommand)


class FitOnlyCLI(FitCLI):
    """The ``fit`` subcommand alone, for runs started from Python: each subcommand's parser holds every argument of
    the trainer, module and data module, and building the three others made up 15% of a smoke benchmark's time."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {"fit": LightningCLI.subcommands()["fit"]}


def logged_hyperparameters(config: Namespace) -> dict:
    """The run's whole config as loggers compare runs by it: jsonargparse's dotted keys (``model.optimizer.lr``), and
    values that loggers cannot hold as a number (lists, mappings) as text."""

    def plain(value):
        return value.as_dict() if isinstance(value, Namespace) else [plain(v) for v in value] if isinstance(value, list) else value

    scalar = (str, int, float, bool, type(None))
    return {key: value if isinstance(value, scalar) else str(plain(value)) for key, value in config.items() if key != "config"}


def record_kind_of(objective) -> str:
    """``preference`` for an objective that trains on pairs (two sequences per example), else ``sft``."""
    class_path = getattr(objective, "class_path", None)
    if class_path is None:
        cls = type(objective)
    else:
        module, _, name = class_path.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
    return "preference" if cls.sequences_per_example == 2 else "sft"


def with_absolute_paths(config) -> None:
    """The local files and folders a config names (data files, the chat template, model folders), made absolute, so
    that the config.yaml a run writes repeats it from any folder."""

    def absolute(value):
        return str(Path(value).expanduser().resolve()) if isinstance(value, str) and value and Path(value).expanduser().exists() else value

    for source in (config.data.get("train"), config.data.get("val")):
        init = getattr(source, "init_args", None)
        if init is not None and init.get("path") is not None:
            init.path = absolute(init.path)
    template = config.data.get("template")
    if template is not None:
        template.chat_template = absolute(template.get("chat_template"))
    pretrained, frozen = config.model.get("pretrained"), config.model.get("frozen")
    if pretrained is not None:
        pretrained.name_or_path = absolute(pretrained.get("name_or_path"))
    if frozen is not None and frozen.get("reference") is not None:
        frozen.reference = absolute(frozen.reference)


DESCRIPTION = "sft-research: fine-tune a causal LM with any objective (trainer, model and data settings; --config FILE)"


def cli_arguments(args: list[str] | dict | None, run: bool) -> dict:
    """The LightningCLI settings of ``sft-research``, shared by every way of running or checking a config."""
    quiet_lightning()
    return dict(
        model_class=FineTuningModule,
        datamodule_class=SFTDataModule,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        # Errors are raised, then said first with what was meant (parse_errors.py); --trainer.max_step is no abbreviation.
        parser_kwargs={"exit_on_error": False, "allow_abbrev": False, "prog": "sft-research", "description": DESCRIPTION},
        # The module builds its optimizer from model.optimizer: Lightning's own --optimizer/--lr_scheduler would be ignored.
        auto_configure_optimizers=False,
        trainer_defaults={
            "num_sanity_val_steps": 0,
            "deterministic": True,
            "logger": lazy_instance(RunCSVLogger, save_dir="runs"),  # named by run_name
            # Lightning's summary table has no FLOP count without an example input; the module prints its own line.
            "enable_model_summary": False,
            "enable_checkpointing": None,  # see FitCLI.instantiate_trainer
            "log_every_n_steps": 1,  # a short run gets its metrics too
        },
        args=args,
        run=run,
    )


def parse_fit(config: dict[str, Any]):
    """Checks a fit config's settings with the ``sft-research fit`` parser, without building anything (no model, no
    devices) or reading the model's files (:mod:`sft_research.fit.run_checks` checks those)."""

    class ParseOnly(FitOnlyCLI):
        model_config = None

        def instantiate_classes(self) -> None:
            pass

    return ParseOnly(**cli_arguments(copy.deepcopy(config), run=False)).config


def build_fit(config: dict[str, Any]) -> FitCLI:
    """The module, data module and trainer of a fit config, built but not run."""
    return FitCLI(**cli_arguments(copy.deepcopy(config), run=False))
