"""A command line or config that does not parse: the error said first, in one message, with the option that was
most likely meant (TRL's and Hugging Face's names mapped to ours, and near misses of our own)."""

from __future__ import annotations

import difflib
import re

from sft_research.errors import ConfigError

# TRL's SFTConfig/DPOConfig and transformers' TrainingArguments names, by the last part a user types.
TRL_NAMES = {
    "learning_rate": "model.optimizer.lr",
    "lr": "model.optimizer.lr",
    "max_seq_length": "data.max_length",
    "max_length": "data.max_length",
    "max_prompt_length": "data.max_prompt_length",
    "truncation_mode": "data.truncation",
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
    "completion_only_loss": "data.completion_only_loss",
    "chat_template_path": "data.chat_template",
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
        raise parse_error(subcommand, str(error), known_options(parser, subcommand)) from None


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
