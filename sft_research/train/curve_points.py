"""Exports the policy part-way through a fit, so that a model can be evaluated along its training (the benchmark
harness's curves)."""

from __future__ import annotations

import re
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from sft_research.train.export import export_model, model_dir

POINT = re.compile(r"step_(\d+)")


class CurvePoints(Callback):
    """After each of the given optimizer steps, writes the policy to ``<run folder>/points/step_<N>`` (a Hugging Face
    checkpoint, or the LoRA adapters while they train). The fit's final model is its last point.

    Args:
        steps: optimizer steps of this fit after which to export (a step at or past the fit's end needs none).
    """

    def __init__(self, steps: list[int]):
        if not all(step >= 1 for step in steps):
            raise ValueError(f"curve points are optimizer steps from 1 on, got {steps}")
        self.steps = sorted(set(steps))
        self.exported: int | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        # A batch skipped for a non-finite loss makes no optimizer step: the step it ends was exported already.
        if step in self.steps and step < trainer.estimated_stepping_batches and step != self.exported:
            export_model(pl_module, model_dir(pl_module).parent / "points" / f"step_{step}")
            self.exported = step


def curve_points(run_dir: Path) -> list[tuple[int, Path]]:
    """The points :class:`CurvePoints` wrote under ``run_dir``, as (optimizer step, model folder), in order."""
    found = [(int(m[1]), path) for path in (run_dir / "points").glob("step_*") if (m := POINT.fullmatch(path.name))]
    return sorted(found)


def add_curve_points(fit: dict, steps: list[int]) -> dict:
    """A copy of a fit config whose trainer also exports the model after ``steps`` (none: the config unchanged)."""
    if not steps:
        return fit
    trainer = dict(fit.get("trainer") or {})
    given = trainer.get("callbacks") or []
    given = given if isinstance(given, list) else [given]  # a config may give one callback without a list
    trainer["callbacks"] = [*given, {"class_path": "sft_research.train.curve_points.CurvePoints", "init_args": {"steps": sorted(steps)}}]
    return {**fit, "trainer": trainer}
