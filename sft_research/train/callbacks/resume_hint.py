"""What an interrupted fit prints last: how to continue it, or why it cannot be."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_info


class ResumeHint(L.Callback):
    """On Ctrl-C (or a scheduler's SIGINT): the step reached, and the same command with ``--ckpt_path last`` when a
    checkpoint callback keeps the last training state, or how to make the next run resumable."""

    def on_exception(self, trainer, module, exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt):
            return
        callback = trainer.checkpoint_callback
        if callback is not None and callback.last_model_path:
            rank_zero_info(
                f"interrupted at step {trainer.global_step}; the last training state is {callback.last_model_path}: "
                "the same command with --ckpt_path last continues the run from it"
            )
        else:
            rank_zero_info(
                f"interrupted at step {trainer.global_step}; no training state was saved, so the run cannot continue: add a "
                "ModelCheckpoint callback with save_last (README, Long runs: Resume) to make the next one resumable"
            )
