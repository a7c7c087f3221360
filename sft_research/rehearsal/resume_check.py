"""The rehearsal's resume check: a config that keeps training states saves one after every step in the rehearsal,
and the first fit that did is run again from its state after step 1. Its second step must give the unbroken run's
loss and, bit for bit, its weights; so a lost node at full scale costs the steps since the last state, not the run.
Under FSDP this goes through the strategy's own saving and loading (sharded or full), on 2 processes."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
import yaml

from sft_research.fit.lightning_cli import FitOnlyCLI, cli_arguments
from sft_research.fit.run import in_run_dir

STATE_AFTER_STEP_1 = "step=1.ckpt"


def is_checkpoint_callback(callback: Any) -> bool:
    return isinstance(callback, dict) and str(callback.get("class_path", "")).endswith("ModelCheckpoint")


def keep_every_state(trainer: dict[str, Any]) -> tuple[Any, Any] | None:
    """Makes the fit's checkpoint callbacks keep a state after every step, named by its step; returns the interval
    and count they had, or None for a fit that keeps no states."""
    callbacks = [c for c in trainer.get("callbacks") or [] if is_checkpoint_callback(c)]
    if not callbacks:
        return None
    init = callbacks[0].setdefault("init_args", {})
    before = (init.get("every_n_train_steps"), init.get("save_top_k"))
    for callback in callbacks:
        callback["init_args"].update(every_n_train_steps=1, save_top_k=-1, filename="{step}")
    return before


def resumed_run(output: Path, fit_config: dict[str, Any] | None) -> tuple[Path, dict[str, Any]] | None:
    """The first fit of the rehearsal (in stage order) that saved a state after step 1, and its config: the plain
    fit's own, or the ``fit.yaml`` a pipeline stage or IRFT round wrote into its folder."""
    states = sorted(output.rglob(f"checkpoints/{STATE_AFTER_STEP_1}"), key=lambda p: (p.stat().st_mtime, str(p)))
    if not states:
        return None
    run_dir = states[0].parent.parent
    config = fit_config if run_dir == output else yaml.safe_load((run_dir / "fit.yaml").read_text())
    return run_dir, config


def check_resume(output: Path, fit_config: dict[str, Any] | None, report: bool) -> str | None:
    """Runs the first fit with states again from its state after step 1 (on every process), and compares its second
    step with the unbroken run's; returns the report's line (None when no fit kept states). Raises if they differ."""
    found = resumed_run(output, fit_config)
    if found is None:
        return None
    run_dir, config = found
    resumed_dir = run_dir / "resumed"
    config = {**in_run_dir(config, resumed_dir), "ckpt_path": str(run_dir / "checkpoints" / STATE_AFTER_STEP_1)}
    FitOnlyCLI(**cli_arguments({"fit": config}, run=True))
    if not report:
        return None
    losses = [last_loss(run / "logs") for run in (run_dir, resumed_dir)]
    differing = different_weights(run_dir / "hf_model", resumed_dir / "hf_model")
    where = run_dir.relative_to(output.parent) if run_dir != output else output
    if losses[0] != losses[1] or differing:
        raise RuntimeError(
            f"rehearsal: {where} resumed from its state after step 1 does not repeat the unbroken run: step 2's loss "
            f"{losses[1]} against {losses[0]}, {len(differing)} weights differ ({', '.join(differing[:3])})"
        )
    return f"resumed {where} from its training state after step 1: step 2's loss {losses[0]:.6g} and every weight as unbroken"


def last_loss(logs: Path) -> float:
    (metrics,) = logs.glob("version_*/metrics.csv")
    with metrics.open() as handle:
        return [float(row["train/loss"]) for row in csv.DictReader(handle) if row.get("train/loss")][-1]


def different_weights(first: Path, second: Path) -> list[str]:
    from safetensors.torch import load_file

    def weights(folder: Path) -> dict[str, torch.Tensor]:
        return {name: tensor for file in sorted(folder.glob("*.safetensors")) for name, tensor in load_file(file).items()}

    a, b = weights(first), weights(second)
    return sorted(set(a) ^ set(b)) + [name for name in sorted(set(a) & set(b)) if not torch.equal(a[name], b[name])]
