"""One fit, from a config: the LightningCLI over :class:`FineTuningModule` and :class:`SFTDataModule`.

Below the command line and the pipelines, which both call it: ``sft-research fit`` parses the command line into the
same config that a pipeline stage hands over as a dict. A stage's run writes its config, logs and final Hugging Face
checkpoint under its own folder; the checkpoint is renamed into place only when complete, so its presence means done.
"""

from __future__ import annotations

import copy
import importlib
import logging
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import lazy_instance
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningCLI

from sft_research.callbacks.progress_bar import StepProgressBar
from sft_research.callbacks.run_record import RunRecord
from sft_research.checkpoints.names import ADAPTER_CONFIG, model_config
from sft_research.checkpoints.training_state import saved_step
from sft_research.csv_logger import RunCSVLogger
from sft_research.data.datamodule import SFTDataModule
from sft_research.errors import ConfigError
from sft_research.fit_checks import check_fit_config
from sft_research.hyperparameters import flat_hyperparameters
from sft_research.module import FineTuningModule
from sft_research.parse_errors import parse_or_explain
from sft_research.run_record import RUN_RECORD

CSV_LOGGER = "sft_research.csv_logger.RunCSVLogger"
# Loggers whose run folder is named by run_name unless the config names it, and their own default name (None too:
# the name a switch of logger class on the command line carries over from our CSV logger).
UNNAMED = {
    CSV_LOGGER: None,
    "lightning.pytorch.loggers.CSVLogger": "lightning_logs",
    "lightning.pytorch.loggers.TensorBoardLogger": "lightning_logs",
}


class WithoutBoilerplate(logging.Filter):
    """Lightning's lines that say nothing about this run: its cloud logger's advertisement, and which accelerators
    exist but are not used (the run's own first line names the model and where it writes)."""

    DROPPED = ("litlogger", "GPU available:", "TPU available:", "HPU available:", "IPU available:")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(part in message for part in self.DROPPED)


for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
    logging.getLogger(name).addFilter(WithoutBoilerplate())
# Lightning's warnings that a run cannot act on, dropped by their text (every other warning is shown):
UNACTIONABLE_WARNINGS = (
    # Lightning 2.6 checks a pytree leaf the way torch 2.13 deprecates, once per fit.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # A fit without validation data hands Lightning an empty list of validation batches; an empty DataLoader
    # (validation data that came out empty) still warns.
    r"Total length of `list` across ranks is zero",
    # The module steps its optimizer itself (micro-batches), so a step's checkpoint holds the weights after that step:
    # the state a resume continues from (tests/test_resume.py: the same losses).
    r"Using ModelCheckpoint with manual optimization and every_n_train_steps",
    # The data module's sampler restores the position in the epoch itself (its state_dict), which Lightning's check of
    # the data loader does not see (tests/test_resume.py: the same batches after a resume mid-epoch).
    r"your dataloader is not resumable",
)
for message in UNACTIONABLE_WARNINGS:
    warnings.filterwarnings("ignore", message=message)


class FitCLI(LightningCLI):
    # Where the checks before anything loads read the model's architecture (its config.json); None: settings only.
    model_config = staticmethod(model_config)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # predict would run the module's forward, which this module does not define for inference.
        return {name: keys for name, keys in LightningCLI.subcommands().items() if name != "predict"}

    def add_arguments_to_parser(self, parser) -> None:
        # The data must be tokenized by the model's own tokenizer.
        parser.link_arguments("model.pretrained.name_or_path", "data.tokenizer")
        # The batch settings sit together under data: the global batch and the micro-batch the module splits it into.
        parser.link_arguments("data.micro_batch_size", "model.micro_batch_size")
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

    def _parse_ckpt_path(self) -> None:
        # A resumed run is given its config again. The checkpoint's hyperparameters are the flat record for loggers
        # (hparams.yaml), not the module's arguments, so they are not parsed back into the config.
        return None

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        config = self.config[self.subcommand] if self.subcommand else self.config
        # Loggers write a module's hyperparameters (hparams.yaml, TensorBoard's hparams): the run's config, flat.
        self.model.save_hyperparameters(flat_hyperparameters({k: v for k, v in config.items() if k != "config"}))
        self.model.export_final = config.get("export_model", True)  # read by sft_research.export

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


def record_kind_of(objective) -> str:
    """``preference`` for an objective that trains on pairs (two sequences per example), else ``sft``."""
    class_path = getattr(objective, "class_path", None)
    if class_path is None:
        cls = type(objective)
    else:
        module, _, name = class_path.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
    return "preference" if cls.sequences_per_example == 2 else "sft"


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


def with_absolute_paths(config) -> None:
    """The local files and folders a config names (data files, the chat template, model folders), made absolute, so
    that the config.yaml a run writes repeats it from any folder."""

    def absolute(value):
        return str(Path(value).expanduser().resolve()) if isinstance(value, str) and value and Path(value).expanduser().exists() else value

    for source in (config.data.get("train"), config.data.get("val")):
        init = getattr(source, "init_args", None)
        if init is not None and init.get("path") is not None:
            init.path = absolute(init.path)
    config.data.chat_template = absolute(config.data.get("chat_template"))
    pretrained, frozen = config.model.get("pretrained"), config.model.get("frozen")
    if pretrained is not None:
        pretrained.name_or_path = absolute(pretrained.get("name_or_path"))
    if frozen is not None and frozen.get("reference") is not None:
        frozen.reference = absolute(frozen.reference)


def evaluation_version(folder: Path, subcommand: str) -> str:
    """``validate_0``, ``validate_1``, ...: the first that ``folder`` does not hold."""
    taken = {p.name for p in folder.glob(f"{subcommand}_*")} if folder.is_dir() else set()
    return next(f"{subcommand}_{n}" for n in range(len(taken) + 1) if f"{subcommand}_{n}" not in taken)


DESCRIPTION = "sft-research: fine-tune a causal LM with any objective (trainer, model and data settings; --config FILE)"


def cli_arguments(args: list[str] | dict | None, run: bool) -> dict:
    """The LightningCLI settings of ``sft-research``, shared by every way of running or checking a config."""
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
    devices) or reading the model's files (:mod:`sft_research.run_checks` checks those)."""

    class ParseOnly(FitOnlyCLI):
        model_config = None

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


class Resume:
    """Where ``--ckpt_path last`` resumes: the checkpoint file and its optimizer step."""

    def __init__(self, checkpoint: Path):
        self.checkpoint = checkpoint
        self.step = saved_step(checkpoint)


def find_last_checkpoint(config) -> Resume:
    """The last checkpoint of the same run: in a ``ModelCheckpoint`` callback's pinned ``dirpath``, or else in the
    newest ``version_N`` of the logger's folder that has one (whose logs the resumed run then continues). Never None:
    a run asked to resume that finds nothing stops, saying where it looked."""
    trainer = config.trainer
    looked: list[Path] = []
    for callback in trainer.get("callbacks") or []:
        dirpath = callback.init_args.get("dirpath") if getattr(callback, "class_path", "").endswith("ModelCheckpoint") else None
        if dirpath:
            looked.append(Path(dirpath) / "last.ckpt")
    logger = trainer.get("logger")
    init = getattr(logger, "init_args", None) if logger not in (None, False, True) else None
    if init is not None and init.get("save_dir") is not None and not looked:
        root = Path(init.save_dir) / (init.get("name") or "")
        versions = sorted((p for p in root.glob("version_*") if p.name[8:].isdigit()), key=lambda p: int(p.name[8:]), reverse=True)
        for version in versions:
            looked.append(version / "checkpoints" / "last.ckpt")
            if looked[-1].exists():  # a file, or a folder of FSDP's shards
                init.version = int(version.name[8:])  # the resumed run logs into the same folder
                break
    for path in looked:
        if path.exists():
            return Resume(path)
    where = ", ".join(str(p) for p in looked) or "nowhere: no checkpoint callback with a dirpath and no CSV logger folder"
    raise ConfigError(
        f"--ckpt_path last: no last checkpoint of this run (looked in {where}); it would start from scratch. "
        "Add a checkpoint callback with save_last (see README, Resume), or give the checkpoint's path"
    )


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
