"""Lightning's own progress bar, labelled with the run it belongs to (arm and seed)."""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar


class RunProgressBar(TQDMProgressBar):
    """Shows ``label`` (arm and seed) with the step and ETA of the run.

    Args:
        label: the run's name.
    """

    def __init__(self, label: str):
        super().__init__()
        self.label = label

    def init_train_tqdm(self):
        bar = super().init_train_tqdm()
        bar.set_description(self.label)
        return bar

    def on_train_epoch_start(self, trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(self.label)
