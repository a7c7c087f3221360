"""Settings of a fit config checked before anything loads: runs that would train nothing, a weights' dtype that the
precision does not hold, a micro-batch larger than a process's share, and everything that needs the model's
architecture (read from its config.json, never its weights): lengths the model cannot take, LoRA settings peft would
refuse after loading the model, an FSDP wrap policy that misses the model's class. Each stops the command with one
line that names the setting and what to use instead.

The real run reads the architecture of the model it names (:func:`~sft_research.checkpoints.names.model_config`); a
rehearsal calls the same functions with the architecture its stand-in stands for."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from sft_research.errors import ConfigError

# The dtype the weights are held in under each of Lightning's precisions: the "true" ones hold them in the dtype they
# compute in; the mixed ones (and 32, 64) keep float32 weights.
PRECISION_DTYPES = {"bf16-true": "bfloat16", "16-true": "float16"}


def check_fit_config(subcommand: str, config, model_config: Callable[[str], dict] | None) -> None:
    """Every check of this file, on the parsed (not yet built) config of ``sft-research SUBCOMMAND``; those that need
    the architecture read it with ``model_config`` (None: settings only)."""
    check_settings(subcommand, config)
    pretrained = config.model.get("pretrained")
    name = pretrained.get("name_or_path") if pretrained is not None else None
    if model_config is not None and name is not None:
        check_architecture(config, name, model_config(name))


def check_settings(subcommand: str, config) -> None:
    """The checks that need nothing but the config."""
    trainer, data = config.trainer, config.data
    for option, unit in (("max_steps", "optimizer steps"), ("max_epochs", "epochs")):
        value = trainer.get(option)
        if value is not None and value < -1:  # else Lightning stops in its loop, 40 lines of traceback
            raise ConfigError(f"--trainer.{option} {value}: the {unit} to train, or -1 for no limit")
    if subcommand == "fit":
        if trainer.get("max_steps") == 0 or trainer.get("max_epochs") == 0:
            raise ConfigError("--trainer.max_steps 0: nothing would be trained; `sft-research validate` evaluates a model without training")
        if data.get("train") is None:
            raise ConfigError("fit needs training data: --data.train (e.g. sft_research.data.FileDataset with --data.train.path FILE)")
        world = configured_processes(trainer)
        if world is not None:
            check_micro_batch(data.get("batch_size"), data.get("micro_batch_size"), world)
    elif data.get("val") is None and not is_task(data.get("train")) and not data.get("val_fraction"):
        raise ConfigError(
            f"{subcommand} needs held-out data: --data.val (e.g. sft_research.data.FileDataset with --data.val.path FILE), "
            "--data.val_fraction with training records, or a task with held-out prompts as --data.train (ReasoningGymTask)"
        )


def weights_dtype(precision, dtype: str | None) -> str:
    """``model.pretrained.dtype`` as ``trainer.precision`` holds the weights: the precision's own where the config
    names none; one that differs from it is refused, so that bf16 is set in one place."""
    precision = str(precision or "32-true")  # Lightning's default
    follows = PRECISION_DTYPES.get(precision, "float32")
    if dtype is not None and dtype != follows:
        raise ConfigError(
            f"--model.pretrained.dtype {dtype} with --trainer.precision {precision}: that precision holds the weights in "
            f"{follows}; leave model.pretrained.dtype out, it follows trainer.precision"
        )
    return follows


def check_micro_batch(batch_size: int, micro_batch_size: int | None, processes: int) -> None:
    """The micro-batch must fit in each process's share of the global batch."""
    share = batch_size // processes
    if micro_batch_size is not None and micro_batch_size > share:
        raise ConfigError(
            f"data.micro_batch_size={micro_batch_size} is larger than each process's share of the batch "
            f"(data.batch_size={batch_size} over {processes} processes: {share})"
        )


def configured_processes(trainer) -> int | None:
    """The processes a trainer config asks for (devices x nodes), where the config alone says it: None for devices
    that Lightning counts on the machine (``auto`` or -1 on an accelerator)."""
    devices, nodes = trainer.get("devices", "auto"), trainer.get("num_nodes", 1)
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    if isinstance(devices, (list, tuple)):
        count = len(devices)
    elif isinstance(devices, int) and devices > 0:
        count = devices
    elif trainer.get("accelerator", "auto") == "cpu":
        count = 1  # Lightning's "auto" on CPUs: one process
    else:
        return None
    return count * (nodes if isinstance(nodes, int) else 1)


def is_task(source) -> bool:
    """Whether a data source's config, parsed (a Namespace) or as written (a dict), is a task with held-out prompts."""
    class_path = source.get("class_path") if isinstance(source, dict) else getattr(source, "class_path", None)
    return str(class_path or "").endswith("ReasoningGymTask")


def check_architecture(config, name: str, architecture: dict) -> None:
    """The checks that need the model's architecture, from its config.json (``architecture``): ``data.lengths.max_length``
    against its positions, LoRA against its modules, and the FSDP wrap policy against its class."""
    pretrained = config.model.pretrained
    check_max_length(name, architecture, config.data.lengths.max_length)
    check_lora(name, architecture, pretrained.get("lora"))
    strategy = fsdp_strategy(config.trainer.get("strategy"))
    if strategy is not None:
        from sft_research.model.fsdp import check_fsdp_policy

        check_fsdp_policy(strategy, (architecture.get("architectures") or [None])[0], pretrained.get("lora") is not None)


def check_max_length(name: str, architecture: dict, max_length: int | None, setting: str = "--data.lengths.max_length") -> None:
    positions = architecture.get("max_position_embeddings")
    if max_length is not None and positions is not None and max_length > positions:
        raise ConfigError(f"{setting} {max_length}: {name} takes at most {positions} positions (max_position_embeddings)")


def check_lora(name: str, architecture: dict, lora) -> None:
    """peft's own checks, made before the model loads: rank, scale and dropout, and target modules that match a
    module of the model (built on the meta device from its config.json, which allocates nothing)."""
    if lora is None:
        return
    if lora.r < 1:
        raise ConfigError(f"--model.pretrained.lora.r {lora.r}: the adapters' rank must be at least 1 (8 and 16 are usual)")
    if lora.alpha <= 0:
        raise ConfigError(f"--model.pretrained.lora.alpha {lora.alpha}: the scale must be positive (usually 2 x r)")
    if not 0 <= lora.dropout < 1:
        raise ConfigError(f"--model.pretrained.lora.dropout {lora.dropout}: must be in [0, 1)")
    if lora.target_modules == "all-linear":
        return
    names = module_names(architecture)
    missing = [t for t in lora.target_modules if not any(n == t or n.endswith(f".{t}") for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, kind in names.items() if kind == "Linear"})
        raise ConfigError(
            f"--model.pretrained.lora.target_modules: {missing} match no module of {name}; "
            f"its linear layers are {linear} (or use all-linear)"
        )


def meta_model(architecture: dict):
    """The causal LM of a config.json, built on the meta device: every module and parameter shape, no memory."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = {key: value for key, value in architecture.items() if key != "model_type"}
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.for_model(architecture["model_type"], **settings))


def module_names(architecture: dict) -> dict[str, str]:
    """Each module's dotted name and class name."""
    return {name: type(module).__name__ for name, module in meta_model(architecture).named_modules()}


def fsdp_strategy(strategy):
    """The FSDP strategy a parsed ``trainer.strategy`` builds (a registered name such as ``fsdp``, or a class path
    with its arguments), made without any process group or device; None for any other strategy."""
    from lightning.pytorch.strategies import FSDPStrategy, StrategyRegistry

    if isinstance(strategy, str):
        built = StrategyRegistry.get(strategy) if strategy in StrategyRegistry else None
        return built if isinstance(built, FSDPStrategy) else None
    class_path = getattr(strategy, "class_path", None)
    if class_path is None:
        return strategy if isinstance(strategy, FSDPStrategy) else None
    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    if not issubclass(cls, FSDPStrategy):
        return None
    init = strategy.get("init_args") or {}
    return cls(**{key: value for key, value in dict(init).items() if value is not None})
