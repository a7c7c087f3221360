"""What a rehearsal changes in a config, and nothing else: the models, the hub data, the devices, the batch sizes and
the length (and the length of packed blocks, which a fixture's few rows could not fill), and the names under which
the stand-in's speed and memory are logged. Every change is recorded as one line of the rehearsal's report.

Objective, optimizer, schedule, truncation, template options, precision, strategy settings and LoRA stay as written,
so the rehearsal takes the real run's code path and fails where it would fail. The plan keeps the config.json of the
real model behind each stand-in, for the checks before training and the memory plan.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from sft_research.checkpoints.embedded import DEFAULT_MODEL
from sft_research.fit.lightning_cli import CSV_LOGGER
from sft_research.rehearsal.fixtures import fixture
from sft_research.rehearsal.logger import STAND_IN_METRICS
from sft_research.rehearsal.resume_check import keep_every_state
from sft_research.rehearsal.standins import GivenFiles, stand_in
from sft_research.train.config_checks import check_micro_batch, is_task

CPU_FSDP = "sft_research.rehearsal.strategy.CPUFSDPStrategy"
REHEARSAL_LOGGER = "sft_research.rehearsal.logger.RehearsalCSVLogger"
FSDP_NAMES = ("lightning.pytorch.strategies.FSDPStrategy", "lightning.pytorch.strategies.fsdp.FSDPStrategy", "fsdp")
STEPS = 2  # optimizer steps per fit, with validation (where the config has any) after the second
MAX_NEW_TOKENS = 8  # generated tokens at most, in evaluation and in IRFT's sampling
EVAL_PROMPTS = 8  # held-out task prompts evaluated at most
TASK_ITEMS = 16  # training items of a generated task (reasoning-gym) at most
BLOCK_LENGTH = 256  # tokens per block where a config packs conversations into blocks (data.lengths.pack_into_blocks)


@dataclass
class Plan:
    """The rehearsal's config; the config as written with only its models and hub data stood in (``checked``: what
    the checks before training read, as the real run's read the real one); the report of what stands in for what; the
    real config.json behind each model the config names and each stand-in; and the models whose stand-ins have
    another tokenizer than theirs."""

    config: dict[str, Any]
    checked: dict[str, Any] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)
    architectures: dict[str, dict] = field(default_factory=dict)
    stand_in_tokenizers: list[str] = field(default_factory=list)
    given: GivenFiles = field(default_factory=GivenFiles)

    def note(self, where: str, what: str, before: Any, after: Any) -> None:
        line = f"{where}: {what}: {before} -> {after}"
        if line not in self.changes:
            self.changes.append(line)


def plan(config: dict[str, Any], output_dir: str, given: GivenFiles | None = None) -> Plan:
    """The rehearsal of a fit or pipeline config, with its outputs under ``output_dir``; ``given`` holds the files a
    user gave for models the rehearsal cannot find."""
    result = Plan(copy.deepcopy(config), copy.deepcopy(config), given=given or GivenFiles())
    if "stages" not in config:
        scale_fit(result, result.config, "fit", starts_elsewhere=False)
    else:
        result.config["output_dir"] = output_dir
    for stage in result.config.get("stages", []):
        init = stage.setdefault("init_args", {})
        where = f"stage {init.get('name')}"
        scale_fit(result, init["fit"], where, starts_elsewhere=init.get("start_from") is not None)
        if stage.get("class_path", "").endswith("IRFTStage"):
            rounds = init.get("rounds", 2)
            if rounds > 2:
                init["rounds"] = 2
                result.note(where, "IRFT rounds", rounds, "2 (each: generation, fit, export, the next round's reload)")
            shorten_generation(result, init.setdefault("generation", {}), where, "IRFT sampling")
    for fit, where, starts_elsewhere in fits_of(result.checked):  # the same stand-ins, nothing else changed
        stand_in_models(result, fit.setdefault("model", {}), where, starts_elsewhere)
        for key in ("train", "val"):
            stand_in_data(result, (fit.get("data") or {}).get(key), where)
    return result


def fits_of(config: dict[str, Any]) -> list[tuple[dict[str, Any], str, bool]]:
    """The fit configs of a fit or pipeline config, where each is, and whether it starts from an earlier stage."""
    if "stages" not in config:
        return [(config, "fit", False)]
    stages = [stage.setdefault("init_args", {}) for stage in config["stages"]]
    return [(init["fit"], f"stage {init.get('name')}", init.get("start_from") is not None) for init in stages]


def scale_fit(result: Plan, fit: dict[str, Any], where: str, starts_elsewhere: bool) -> None:
    trainer, model, data = (fit.setdefault(key, {}) for key in ("trainer", "model", "data"))
    wanted = configured_processes(trainer)
    processes = scale_devices(result, trainer, wanted, where)
    scale_batch(result, data, wanted, processes, where)
    scale_length(result, trainer, where)
    log_as_stand_in(result, trainer, where)
    scale_blocks(result, data, where)
    kept = keep_every_state(trainer)
    if kept is not None:
        result.note(where, "training states (every_n_train_steps, save_top_k)", kept, "(1, all): the resume check restarts after step 1")
    stand_in_models(result, model, where, starts_elsewhere)
    for key in ("train", "val"):
        stand_in_data(result, data.get(key), where)
    shorten_generation(result, model.setdefault("generation", {}), where, "evaluation decoding")
    for source in (data.get("train"), data.get("val")):
        if is_task(source):
            init = source.setdefault("init_args", {})
            if init.get("train_size", TASK_ITEMS + 1) > TASK_ITEMS:
                result.note(where, "task training items", init.get("train_size", "default"), TASK_ITEMS)
                init["train_size"] = TASK_ITEMS
    if any(is_task(data.get(key)) for key in ("train", "val")):
        before = data.get("max_eval_prompts")
        data["max_eval_prompts"] = min(before or EVAL_PROMPTS, EVAL_PROMPTS)
        result.note(where, "held-out task prompts", before or "all", data["max_eval_prompts"])


def configured_processes(trainer: dict[str, Any]) -> int:
    """How many processes the config asks for (a GPU config with ``devices: auto`` counts as several)."""
    devices, nodes = trainer.get("devices", "auto"), trainer.get("num_nodes", 1)
    if isinstance(devices, list):
        count = len(devices)
    elif isinstance(devices, int) and devices > 0:
        count = devices
    else:
        count = 1 if trainer.get("accelerator", "auto") in ("auto", "cpu") else 2
    return count * nodes


def scale_devices(result: Plan, trainer: dict[str, Any], wanted: int, where: str) -> int:
    processes = 2 if wanted > 1 else 1
    strategy = trainer.get("strategy", "auto")
    name = strategy.get("class_path") if isinstance(strategy, dict) else strategy
    if name in FSDP_NAMES:
        trainer["strategy"] = {
            "class_path": CPU_FSDP,
            "init_args": dict(strategy.get("init_args") or {}) if isinstance(strategy, dict) else {},
        }
    shown = str(name).rsplit(".", 1)[-1]
    accelerator = trainer.get("accelerator", "auto")
    before = f"{wanted} {'GPU' if accelerator in ('gpu', 'cuda') else 'device'}{'s' if wanted > 1 else ''} under {shown}"
    trainer.update(accelerator="cpu", devices=processes, num_nodes=1)
    after = f"2 CPU processes (gloo) under {shown}" if processes > 1 else f"1 CPU process under {shown}"
    result.note(where, "devices", before, after)
    if isinstance(strategy, dict) and (strategy.get("init_args") or {}).get("cpu_offload"):
        result.note(where, "CPU offload", "weights, gradients and optimizer in host memory", "none: CPU processes hold everything there")
    return processes


def scale_batch(result: Plan, data: dict[str, Any], wanted: int, processes: int, where: str) -> None:
    """Two micro-batches of at most 2 examples per process where the config accumulates gradients, one otherwise. A
    micro-batch larger than a process's share stops here, as the real run would stop."""
    batch, micro = data.get("batch_size", 8), data.get("micro_batch_size")
    check_micro_batch(batch, micro, wanted)
    share = max(1, batch // wanted)
    accumulation = share // micro if micro else 1
    new_micro = min(micro or share, 2)
    new_batch = processes * new_micro * min(accumulation, 2)
    data["batch_size"] = new_batch
    if micro is not None:
        data["micro_batch_size"] = new_micro
    result.note(
        where,
        "batch",
        f"{batch} (micro-batch {micro or share}, accumulation {accumulation})",
        f"{new_batch} (micro-batch {new_micro}, accumulation {min(accumulation, 2)})",
    )


def scale_length(result: Plan, trainer: dict[str, Any], where: str) -> None:
    epochs = trainer.get("max_epochs", 1)
    before = f"{trainer['max_steps']} steps" if trainer.get("max_steps") else f"{epochs} epoch{'s' if epochs != 1 else ''}"
    trainer["max_steps"] = STEPS
    trainer.pop("max_epochs", None)
    after = f"{STEPS} optimizer steps"
    if trainer.get("limit_val_batches") != 0:
        trainer.update(val_check_interval=STEPS, check_val_every_n_epoch=None)
        after += f" (validation, if any, after step {STEPS})"
    result.note(where, "length", before, after)


def scale_blocks(result: Plan, data: dict[str, Any], where: str) -> None:
    """Blocks of a few hundred tokens: a schema fixture's rows hold too few tokens to fill one of a real run's length."""
    lengths = data.get("lengths") or {}
    before = lengths.get("max_length", 1024)
    if lengths.get("pack_into_blocks") and before > BLOCK_LENGTH:
        lengths["max_length"] = BLOCK_LENGTH
        result.note(where, "block length (data.lengths.pack_into_blocks)", before, BLOCK_LENGTH)


def log_as_stand_in(result: Plan, trainer: dict[str, Any], where: str) -> None:
    """The CSV logger (the default) becomes the rehearsal's, which logs the stand-in's speed and memory as such."""
    logger = trainer.get("logger")
    if logger is False or isinstance(logger, dict) and logger.get("class_path") != CSV_LOGGER:
        return
    init = dict(logger.get("init_args") or {}) if isinstance(logger, dict) else {}
    trainer["logger"] = {"class_path": REHEARSAL_LOGGER, "init_args": init}
    after = f"{', '.join(STAND_IN_METRICS.values())} (a stand-in's, on this CPU)"
    result.note(where, "metrics.csv", ", ".join(STAND_IN_METRICS), after)


def stand_in_models(result: Plan, model: dict[str, Any], where: str, starts_elsewhere: bool) -> None:
    pretrained = model.setdefault("pretrained", {})
    if "name_or_path" in pretrained or not starts_elsewhere:
        pretrained["name_or_path"] = replace_model(result, pretrained.get("name_or_path", DEFAULT_MODEL), where, "model")
    if model.get("reference"):
        model["reference"] = replace_model(result, model["reference"], where, "reference")
    objective = model.get("objective")
    init = objective.get("init_args", {}) if isinstance(objective, dict) else {}
    if init.get("baselines"):
        replaced = {name: replace_model(result, name, where, "baseline") for name in init["baselines"]}
        init["baselines"] = list(replaced.values())
        templates = init.get("baseline_chat_templates") or {}
        init["baseline_chat_templates"] = {replaced.get(name, name): template for name, template in templates.items()} or None


def replace_model(result: Plan, name: str, where: str, role: str) -> str:
    standin = stand_in(name, result.given)
    result.note(where, role, name, standin.description)
    result.architectures[name] = result.architectures[standin.path] = standin.architecture
    if not standin.own_tokenizer and name not in result.stand_in_tokenizers:
        result.stand_in_tokenizers.append(name)
    return standin.path


def stand_in_data(result: Plan, source: Any, where: str) -> None:
    """Hub datasets, wherever they sit in a source (a mixture's parts too), become their schema fixtures."""
    if isinstance(source, list):
        for item in source:
            stand_in_data(result, item, where)
        return
    if not isinstance(source, dict):
        return
    init = source.get("init_args") or {}
    if str(source.get("class_path", "")).endswith("FileDataset") and isinstance(init.get("path"), str):
        folder = fixture(init["path"])
        if folder is not None:
            split = init.get("split", "train")
            result.note(
                where, "data", f"{init['path']} ({split})", f"schema fixture {folder.name} (real columns and types, synthetic rows)"
            )
            init["path"] = str(folder)
    for value in init.values():
        stand_in_data(result, value, where)


def shorten_generation(result: Plan, generation: dict[str, Any], where: str, what: str) -> None:
    before = generation.get("max_new_tokens")
    if before is None or before > MAX_NEW_TOKENS:
        generation["max_new_tokens"] = MAX_NEW_TOKENS
        result.note(where, f"{what} tokens", before or "default", MAX_NEW_TOKENS)
