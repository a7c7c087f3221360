"""Callbacks that the training module brings to every fit (``FineTuningModule.configure_callbacks``)."""

from sft_research.callbacks.stale_updates import StaleUpdates

__all__ = ["StaleUpdates"]
