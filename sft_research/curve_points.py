"""Exports the policy part-way through a fit, so that a model can be evaluated along its training (the benchmark
harness's curves)."""

from __future__ import annotations

import re
from pathlib import Path

from lightning.pytorch.callbacks import Callback

POINT = re.compile(r"step_(\d+)_of_(\d+)")


class CurvePoints(Callback):
    """At each fraction of the fit's optimizer steps below 1, writes the policy to
    ``<run folder>/points/step_<N>_of_<M>`` (a Hugging Face checkpoint, or the LoRA adapters while they train). The
    fit's final model is its end point.

    Args:
        fractions: fractions of the fit's optimizer steps; 1.0 (the end) needs no export.
    """

    def __init__(self, fractions: list[float]):
        if not all(0.0 < f <= 1.0 for f in fractions):
            raise ValueError(f"curve fractions must lie in (0, 1], got {fractions}")
        self.fractions = sorted(f for f in fractions if f < 1.0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        total = int(trainer.estimated_stepping_batches)
        steps = {max(1, round(f * total)) for f in self.fractions}
        target = Path(pl_module.hf_checkpoint_dir()).parent / "points" / f"step_{trainer.global_step}_of_{total}"
        if trainer.global_step in steps and trainer.global_step < total:
            pl_module.export_hf_checkpoint(target)


def curve_points(run_dir: Path) -> list[tuple[float, Path]]:
    """The points :class:`CurvePoints` wrote under ``run_dir``, as (fraction of the fit, model folder), in order."""
    found = [(m, path) for path in (run_dir / "points").glob("step_*") if (m := POINT.fullmatch(path.name))]
    return sorted((int(m[1]) / int(m[2]), path) for m, path in found)
