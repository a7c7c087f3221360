"""What a fit does not print: Lightning's lines and warnings that say nothing a run can act on."""

from __future__ import annotations

import logging
import warnings


class WithoutBoilerplate(logging.Filter):
    """Lightning's lines that say nothing about this run: its cloud logger's advertisement, and which accelerators
    exist but are not used (the run's own first line names the model and where it writes)."""

    DROPPED = ("litlogger", "GPU available:", "TPU available:", "HPU available:", "IPU available:")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(part in message for part in self.DROPPED)


# Lightning's warnings that a run cannot act on, dropped by their text (every other warning is shown):
UNACTIONABLE_WARNINGS = (
    # Lightning 2.6 checks a pytree leaf the way torch 2.13 deprecates, once per fit.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # A fit without validation data hands Lightning an empty list of validation batches; an empty DataLoader
    # (validation data that came out empty) still warns.
    r"Total length of `list` across ranks is zero",
    # The module steps its optimizer itself (micro-batches), so a step's checkpoint holds the weights after that step:
    # the state a resume continues from (tests/test_resume.py: the same losses).
    r"Using ModelCheckpoint with manual optimization and every_n_train_steps",
    # The data module's sampler restores the position in the epoch itself (its state_dict), which Lightning's check of
    # the data loader does not see (tests/test_resume.py: the same batches after a resume mid-epoch).
    r"your dataloader is not resumable",
)


BOILERPLATE = WithoutBoilerplate()


def quiet_lightning() -> None:
    """Installs the filters above (again: a filter already installed is not added twice)."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).addFilter(BOILERPLATE)
    for message in UNACTIONABLE_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
