"""Lightning's progress bar, with the training loss as of the last logged step."""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar

from sft_research.train.callbacks.throughput import logged_step


class StepProgressBar(TQDMProgressBar):
    """Steps and ETA every step, and ``train/loss`` (shown as ``loss``) read from the device on logged steps only:
    a metric logged with ``prog_bar=True`` would be read on every step, making the host wait for the device each time.

    Args:
        label: shown before the bar (a benchmark's arm and seed), if given.
    """

    def __init__(self, label: str | None = None):
        super().__init__()
        self.label, self.shown = label, {}

    def init_train_tqdm(self):
        bar = super().init_train_tqdm()
        if self.label:
            bar.set_description(self.label)
        return bar

    def on_train_epoch_start(self, trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        if self.label:
            self.train_progress_bar.set_description(self.label)

    def get_metrics(self, trainer, module) -> dict:
        if trainer.training and logged_step(trainer, trainer.global_step) and "train/loss" in trainer.callback_metrics:
            self.shown = {"loss": f"{float(trainer.callback_metrics['train/loss']):.4g}"}
        return {**super().get_metrics(trainer, module), **self.shown}
