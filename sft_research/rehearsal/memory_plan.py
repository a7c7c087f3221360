"""The memory plan a rehearsal prints: for every fit of a config, the real run's memory per GPU at full scale
(:mod:`sft_research.train.memory`), from the real models' config.json and the config's own settings, against the card the
config names (``gpu_memory_gb``, default 80). A fit that does not fit stops the rehearsal, before anything runs, with
one line that names its largest term and the settings that would make it fit."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sft_research.errors import ConfigError
from sft_research.fit.lightning_cli import parse_fit, record_kind_of
from sft_research.fit.run_checks import ModelFiles, built, frozen_models
from sft_research.train.config_checks import configured_processes, fsdp_strategy
from sft_research.train.memory import (
    DTYPE_BYTES,
    GIB,
    Estimate,
    FitShape,
    Frozen,
    ModelShape,
    checkpoint_bytes,
    estimate,
    fsdp_shards,
    model_shape,
)

GB = 10**9


@dataclass(frozen=True)
class FitPlan:
    """One fit's plan: where it runs in the config, its model, its settings, their estimate, and the card's memory
    in bytes (None: the fit runs on CPUs)."""

    where: str
    name: str
    model: ModelShape
    fit: FitShape
    estimate: Estimate
    card: int | None
    setup: str
    state_shards: int = 1

    @property
    def fits(self) -> bool:
        return self.card is None or self.estimate.peak <= self.card


def plan_config(config: dict, files: ModelFiles) -> list[FitPlan]:
    """The plan of every fit that a fit or pipeline config runs, its models' config.json read through ``files``."""
    if "stages" not in config:
        return [fit_plan("fit", config, files)]
    from sft_research.pipelines.stages import build_pipeline

    fits, files = build_pipeline(config).stage_fits(files)
    return [fit_plan(f"stage {stage.name}", fit.config, files) for stage, fit in fits]


def fit_plan(where: str, config: dict, files: ModelFiles) -> FitPlan:
    parsed = parse_fit(config)
    pretrained = parsed.model.pretrained
    shape = model_shape(files.config(pretrained.name_or_path), pretrained.get("lora"))
    fit = fit_shape(parsed, files)
    on_gpus = parsed.trainer.get("accelerator", "auto") != "cpu"
    card = int(parsed.get("gpu_memory_gb", 80.0) * GB) if on_gpus else None
    strategy = fsdp_strategy(parsed.trainer.get("strategy"))
    state_shards = fit.processes if strategy is not None and strategy._state_dict_type == "sharded" else 1
    result = estimate(shape, fit)
    return FitPlan(where, files.shown(pretrained.name_or_path), shape, fit, result, card, setup(parsed, fit, on_gpus), state_shards)


def fit_shape(parsed, files: ModelFiles) -> FitShape:
    """The settings of a parsed fit config that decide its memory."""
    trainer, model, data = parsed.trainer, parsed.model, parsed.data
    pretrained = model.pretrained
    processes = configured_processes(trainer) or 1  # devices: auto counts the machine's GPUs: planned for one
    strategy = fsdp_strategy(trainer.get("strategy"))
    per_node = processes // (trainer.get("num_nodes") or 1)
    shards, shard_weights = fsdp_shards(str(strategy.sharding_strategy), processes, per_node) if strategy else (1, False)
    precision = str(trainer.get("precision") or "32-true")
    weight_bytes = DTYPE_BYTES[pretrained.dtype]  # the fit command made it follow the precision
    share = data.batch_size // processes
    micro = data.get("micro_batch_size") or share
    reference = model.frozen.get("reference") or pretrained.name_or_path
    objective = built(model.objective, "objective")
    models = frozen_models(objective, reference, model.frozen.mode == "on_the_fly")
    return FitShape(
        processes=processes,
        shards=shards,
        shard_weights=shard_weights,
        offload=bool(strategy is not None and getattr(strategy.cpu_offload, "offload_params", False)),
        fsdp=strategy is not None,
        weight_bytes=weight_bytes,
        compute_bytes=2 if precision.startswith(("bf16", "16")) else weight_bytes,
        autocast=precision.endswith("-mixed") and strategy is None,
        master_weights=model.optimizer.master_weights,
        optimizer=model.optimizer.name,
        micro_batch=micro,
        accumulation=max(1, share // micro),
        sequences=2 if record_kind_of(model.objective) == "preference" else 1,
        length=data.lengths.max_length,
        checkpointing=pretrained.gradient_checkpointing,
        packing=model.execution.packing,
        flex_attention=pretrained.attn_implementation == "flex_attention",
        chunk=model.execution.logprob_chunk_size,
        frozen=tuple(Frozen(role, files.shown(name), model_shape(files.config(name)), weight_bytes, fly) for role, name, fly in models),
        frozen_batch=model.frozen.batch_size,
        lora=pretrained.get("lora") is not None,
    )


def setup(parsed, fit: FitShape, on_gpus: bool) -> str:
    """``8 GPUs under FSDP (FULL_SHARD), bf16-true``."""
    devices = ("GPU" if on_gpus else "CPU process") + ("es" if not on_gpus and fit.processes > 1 else "s" if fit.processes > 1 else "")
    if fit.fsdp:
        strategy = str(fsdp_strategy(parsed.trainer.strategy).sharding_strategy).rsplit(".", 1)[-1]
        how = f"FSDP ({strategy}{', CPU offload' if fit.offload else ''})"
    else:
        how = "DDP" if fit.processes > 1 else "one process"
    return f"{fit.processes} {devices} under {how}, {parsed.trainer.get('precision') or '32-true'}"


def gib(size: int) -> str:
    return f"{size / GIB:.1f} GiB"


def plan_lines(plan: FitPlan) -> list[str]:
    """The plan as printed: the fit's model and settings, each term, the peaks, and whether it fits the card."""
    model, fit, result = plan.model, plan.fit, plan.estimate
    trained = "" if model.trained == model.parameters else f", {model.trained / 1e6:.1f}M trained"
    lines = [
        f"  {plan.where}: {plan.name} ({model.parameters / 1e9:.2f}B parameters{trained}), {plan.setup}, micro-batch "
        f"{fit.micro_batch} x {fit.sequences * fit.length} tokens, accumulation {fit.accumulation}"
    ]
    rows = [(f"{term.name} ({term.detail})", term.bytes) for term in result.terms]
    rows.append(("the training step's peak", result.training))
    rows += [(f"{term.name} ({term.detail})", term.bytes) for both in result.frozen for term in both]
    if result.frozen:
        rows.append(("the frozen passes' peak (before training, the policy not yet loaded)", result.frozen_peak))
    if result.host:
        rows.append((f"host memory a process (CPU offload; {fit.processes} processes: {gib(result.host * fit.processes)})", result.host))
    if fit.processes > 1:
        loading = f"host memory a process while loading (the whole model; {fit.processes}: {gib(result.loading * fit.processes)})"
        rows.append((loading, result.loading))
    width = max(len(label) for label, _ in rows) + 2
    for label, size in rows:
        extra = ""
        if label.startswith("activations"):
            extra = f"   (activation checkpointing {'off' if fit.checkpointing else 'on'}: {gib(result.other_activations)})"
        lines.append(f"    {label.ljust(width)}{gib(size):>10}{extra}")
    state = checkpoint_bytes(model.parameters, model.trained, fit)
    written = f"{plan.state_shards} shards of {gib(state // plan.state_shards)}" if plan.state_shards > 1 else "by the first process"
    holds = "the trained weights, their float32 masters, optimizer states"
    lines.append(f"    a training state on disk ({holds}): {gib(state)}, written {written}")
    if plan.card is None:
        lines.append(f"    on CPUs: {gib(result.peak)} of host memory at the peak")
    else:
        verdict = "fits" if plan.fits else "does NOT fit"
        lines.append(f"    peak {gib(result.peak)} of {gib(plan.card)} a GPU (gpu_memory_gb {plan.card / GB:g}): {verdict}")
    return lines


def check_fits(plan: FitPlan) -> None:
    """Stops with one line when the fit's peak is over the card: for the training step and for the frozen passes,
    whichever is over, its largest term and each single change that would make it fit."""
    if plan.fits:
        return
    result, card = plan.estimate, plan.card
    changes = remedies(plan)
    problems = []
    for phase, peak_of, terms in (
        ("the training step needs", training_peak, result.terms),
        ("the frozen passes need", frozen_peak, [term for both in result.frozen for term in both]),
    ):
        if peak_of(result) <= card:
            continue
        largest = max(terms, key=lambda term: term.bytes)
        cures = [f"{change} ({gib(peak_of(changed))})" for change, changed in first_that_fit(changes, peak_of, card)]
        cure = f"it would fit with {' or '.join(cures)}" if cures else f"no single change of {TRIED} makes it fit"
        problems.append(f"{phase} about {gib(peak_of(result))}, its largest term {largest.name} ({gib(largest.bytes)}): {cure}")
    raise ConfigError(f"rehearse: {plan.where}: over a {card / GB:g} GB GPU ({gib(card)}, gpu_memory_gb): {'; '.join(problems)}")


TRIED = "checkpointing, micro-batch, frozen batch, attention, offload or GPUs"


def training_peak(result: Estimate) -> int:
    return result.training


def frozen_peak(result: Estimate) -> int:
    return result.frozen_peak


def first_that_fit(changes: list[tuple[str, Estimate]], peak_of, card: int) -> list[tuple[str, Estimate]]:
    """Of each kind of change (its setting), the first that fits: the largest micro-batch, the fewest GPUs."""
    kept: dict[str, tuple[str, Estimate]] = {}
    for change, changed in changes:
        if peak_of(changed) <= card:
            kept.setdefault(change.split(":")[0].split(" ")[-1], (change, changed))
    return list(kept.values())


def remedies(plan: FitPlan) -> list[tuple[str, Estimate]]:
    """Single changes of the fit's settings, each with its estimate: activation checkpointing, smaller micro-batches,
    smaller frozen batches, FlexAttention for packing, CPU offload under FSDP, FSDP in place of DDP, more GPUs."""
    fit, model = plan.fit, plan.model

    def changed(**settings) -> Estimate:
        return estimate(model, dataclasses.replace(fit, **settings))

    changes = []
    if not fit.checkpointing:
        changes.append(("model.pretrained.gradient_checkpointing: true", changed(checkpointing=True)))
    share = fit.micro_batch * fit.accumulation
    for micro in (m for m in (fit.micro_batch // 2**k for k in range(1, 12)) if m >= 1 and share % m == 0):
        changes.append((f"data.micro_batch_size: {micro}", changed(micro_batch=micro, accumulation=share // micro)))
    for batch in (b for b in (fit.frozen_batch // 2**k for k in range(1, 12)) if b >= 1 and fit.frozen):
        changes.append((f"model.frozen.batch_size: {batch}", changed(frozen_batch=batch)))
    if fit.packing and not fit.flex_attention:
        changes.append(("model.pretrained.attn_implementation: flex_attention", changed(flex_attention=True)))
    if fit.fsdp and not fit.offload:
        changes.append(("trainer.strategy.init_args.cpu_offload: true", changed(offload=True)))
    if not fit.fsdp and fit.processes > 1:
        changes.append(("FSDP (FULL_SHARD) in place of DDP", changed(fsdp=True, shards=fit.processes, shard_weights=True)))
    if fit.fsdp and fit.shard_weights:
        for factor in (f for f in (2, 4, 8) if share % f == 0):
            micro = min(fit.micro_batch, share // factor)
            more = changed(
                processes=fit.processes * factor, shards=fit.shards * factor, micro_batch=micro, accumulation=share // factor // micro
            )
            changes.append((f"{fit.processes * factor} GPUs", more))
    return changes
