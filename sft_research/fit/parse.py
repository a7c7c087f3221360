"""A command line or config that does not parse: the error said first, in one message, with the option that was
most likely meant (TRL's and Hugging Face's names mapped to ours, and near misses of our own)."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from sft_research.errors import ConfigError

# TRL's SFTConfig/DPOConfig and transformers' TrainingArguments names, by the last part a user types.
TRL_NAMES = {
    "learning_rate": "model.optimizer.lr",
    "lr": "model.optimizer.lr",
    "max_seq_length": "data.lengths.max_length",
    "max_length": "data.lengths.max_length",
    "max_prompt_length": "data.lengths.max_prompt_length",
    "truncation_mode": "data.lengths.truncation",
    "per_device_train_batch_size": "data.batch_size (the global batch)",
    "train_batch_size": "data.batch_size",
    "batch_size": "data.batch_size",
    "gradient_accumulation_steps": "data.micro_batch_size (the micro-batch is given, the batch split into it)",
    "per_device_eval_batch_size": "data.eval_batch_size",
    "num_train_epochs": "trainer.max_epochs",
    "epochs": "trainer.max_epochs",
    "max_step": "trainer.max_steps",
    "warmup_ratio": "model.optimizer.warmup_ratio",
    "lr_scheduler_type": "model.optimizer.schedule",
    "weight_decay": "model.optimizer.weight_decay",
    "optim": "model.optimizer.name",
    "max_grad_norm": "model.optimizer.max_grad_norm",
    "gradient_clip_val": "model.optimizer.max_grad_norm",
    "accumulate_grad_batches": "data.micro_batch_size",
    "adam_beta1": "model.optimizer.betas",
    "adam_epsilon": "model.optimizer.eps",
    "beta": "model.objective.init_args.beta (with --model.objective sft_research.objectives.DPO)",
    "loss_type": "model.objective.init_args.loss_type",
    "model_name_or_path": "model.pretrained.name_or_path",
    "model_name": "model.pretrained.name_or_path",
    "model": "model.pretrained.name_or_path",
    "ref_model": "model.frozen.reference",
    "precompute_ref_log_probs": "model.frozen.mode",
    "dataset_name": "data.train (sft_research.data.FileDataset with --data.train.path)",
    "dataset": "data.train",
    "train_file": "data.train.path (with --data.train sft_research.data.FileDataset)",
    "output_dir": "trainer.logger.init_args.save_dir",
    "logging_steps": "trainer.log_every_n_steps",
    "eval_steps": "trainer.val_check_interval",
    "save_steps": "trainer.callbacks (a ModelCheckpoint's every_n_train_steps)",
    "seed": "seed_everything",
    "bf16": "trainer.precision bf16-true (the weights' dtype, model.pretrained.dtype, follows it)",
    "fp16": "trainer.precision 16-mixed",
    "gradient_checkpointing": "model.pretrained.gradient_checkpointing",
    "packing": "model.execution.packing",
    "padding_free": "model.execution.packing",
    "torch_compile": "model.execution.compile",
    "use_peft": "model.pretrained.lora",
    "lora_r": "model.pretrained.lora.r",
    "lora_alpha": "model.pretrained.lora.alpha",
    "lora_dropout": "model.pretrained.lora.dropout",
    "lora_target_modules": "model.pretrained.lora.target_modules",
    "report_to": "trainer.logger",
    "completion_only_loss": "data.template.completion_only_loss",
    "chat_template_path": "data.template.chat_template",
}
# The data module's options that moved into its groups (sft_research.data.options), by their old flat name.
TEMPLATE_OPTIONS = ("prompt_format", "chat_template", "add_special_tokens", "auto_insert_empty_system_msg", "completion_only_loss")
MOVED_DATA_OPTIONS = {
    **{name: f"data.template.{name}" for name in TEMPLATE_OPTIONS},
    **{name: f"data.lengths.{name}" for name in ("max_length", "truncation", "max_prompt_length", "pack_into_blocks")},
}
# Lightning's options that the module replaces (it steps its optimizer itself, micro-batch by micro-batch) or that no
# command reads: they are left out of the parser, so of --help (fit/lightning_cli.py), and typing one says what to use instead.
REPLACED_TRAINER_OPTIONS = {
    "accumulate_grad_batches": "set data.micro_batch_size instead: the optimizer batch (data.batch_size) is split into micro-batches "
    "of that size, their gradients accumulated",
    "gradient_clip_val": "set model.optimizer.max_grad_norm instead: the module clips the gradient norm itself",
    "gradient_clip_algorithm": "the module clips the gradient's norm (model.optimizer.max_grad_norm)",
    "limit_predict_batches": "sft-research has no predict command (validate and test evaluate held-out data)",
}
# Where argparse and jsonargparse name the option they could not take.
UNKNOWN = (r"unrecognized arguments: (\S+)", r"does not accept (?:nested key|option) '([^']+)'", r"Key '([^']+)' is not expected")


def parse_error(subcommand: str, message: str, options: list[str]) -> ConfigError:
    """The error of ``sft-research SUBCOMMAND`` for jsonargparse's ``message``, given the options it accepts."""
    hints = []
    for pattern in UNKNOWN:
        for given in re.findall(pattern, message):
            hint = did_you_mean(given, options)
            if hint:
                hints.append(hint)
    negative = re.search(r"argument (--\S+): expected one argument", message)
    if negative:
        hints.append(f"a negative number after a space reads as an option: write {negative.group(1)}=-1e-5")
    for module, name in re.findall(r"module '([\w.]+)' has no attribute '(\w+)'", message):
        hints.append(did_you_mean_class(module, name))
    tip = f"sft-research {subcommand} --help lists every option" if subcommand else "sft-research --help lists the commands"
    said = " ".join(line.strip() for line in message.strip().splitlines())
    return ConfigError("; ".join([said, *[h for h in hints if h], tip]))


def parse_or_explain(parser, args, subcommand: str):
    """``parser.parse_args(args)`` (a dict: ``parse_object``), with a failure turned into :func:`parse_error`. The
    parser must be made with ``exit_on_error=False``, so that it raises instead of printing its usage."""
    from argparse import ArgumentError

    from sft_research.fit.yaml_files import check_config_files

    if not isinstance(args, dict):
        check_config_files(list(args))  # jsonargparse would name a broken file "<unicode string>"
    try:
        return parser.parse_object(args) if isinstance(args, dict) else parser.parse_args(args)
    except ArgumentError as error:
        replaced = replaced_option(str(error), args, subcommand) or moved_option(str(error))
        raise replaced or parse_error(subcommand, str(error), known_options(parser, subcommand)) from None


def replaced_option(message: str, args, subcommand: str) -> ConfigError | None:
    """The one line for a Trainer option of :data:`REPLACED_TRAINER_OPTIONS` that ``message`` says was not taken."""
    named = re.findall(r"\btrainer\.(\w+)(?:=(\S+))?", message)  # --trainer.x=1, 'fit.trainer.x'
    named += [(option, "") for option in re.findall(r"Group 'trainer' does not accept (?:nested key|option) '(\w+)'", message)]
    for option, value in named:
        if option in REPLACED_TRAINER_OPTIONS:
            value = value or given_value(args, f"trainer.{option}", subcommand)
            shown = f"--trainer.{option}" + (f" {value}" if value not in ("", None) else "")
            return ConfigError(f"{shown}: not used by this module; {REPLACED_TRAINER_OPTIONS[option]}")
    return None


def moved_option(message: str) -> ConfigError | None:
    """The one line for a data option of its old flat name (``data.max_length``) that ``message`` says was not taken."""
    named = re.findall(r"\bdata\.(\w+)", message)
    named += re.findall(r"Group 'data' does not accept (?:nested key|option) '(\w+)'", message)
    for option in named:
        if option in MOVED_DATA_OPTIONS:
            grouped = "the data options are grouped: data.template, data.lengths"
            return ConfigError(f"--data.{option} is now --{MOVED_DATA_OPTIONS[option]} ({grouped})")
    return None


def given_value(args, key: str, subcommand: str):
    """The value ``args`` (a command line or a config dict) gives the dotted ``key``, where it can be read back; else None."""
    import yaml

    if isinstance(args, dict):
        configs = [args.get(subcommand), args] if subcommand else [args]
    else:
        for i, word in enumerate(args):
            if word == f"--{key}" and i + 1 < len(args):
                return args[i + 1]
        files = [args[i + 1] for i, word in enumerate(args[:-1]) if word == "--config"]
        files += [word.partition("=")[2] for word in args if word.startswith("--config=")]
        configs = []
        for file in files:
            loaded = yaml.safe_load(Path(file).read_text())
            configs += [loaded.get(subcommand), loaded] if subcommand and isinstance(loaded, dict) else [loaded]
    for config in configs:
        for part in key.split("."):
            config = config.get(part) if isinstance(config, dict) else None
        if config is not None:
            return config
    return None


def known_options(parser, subcommand: str) -> list[str]:
    """Every ``--option`` that ``parser`` (or its subcommand's parser) takes."""
    subcommands = getattr(parser, "_subcommands_action", None)
    if subcommands is not None and subcommand in subcommands.choices:
        parser = subcommands.choices[subcommand]
    return sorted({s for action in parser._actions for s in action.option_strings if s.startswith("--")})


def did_you_mean_class(module: str, name: str) -> str | None:
    import importlib

    try:
        names = [n for n in dir(importlib.import_module(module)) if n[:1].isupper()]
    except ImportError:
        return None
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return f"did you mean {module}.{close[0]}?" if close else None


def did_you_mean(given: str, options: list[str]) -> str | None:
    key = given.lstrip("-")
    last = key.rsplit(".", 1)[-1]
    if last in TRL_NAMES:
        return f"did you mean --{TRL_NAMES[last]}?"
    keys = [option.lstrip("-") for option in options]
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.75)
    if not close:  # the right last part under the wrong group: --optimizer.lr for --model.optimizer.lr
        close = [k for k in keys if k.rsplit(".", 1)[-1] == last][:1]
    return f"did you mean --{close[0]}?" if close else None
