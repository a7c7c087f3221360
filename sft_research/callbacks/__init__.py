"""Callbacks that the training module brings to every fit (``FineTuningModule.configure_callbacks``)."""

from sft_research.callbacks.compute_record import ComputeRecord
from sft_research.callbacks.preflight import Preflight
from sft_research.callbacks.resume_hint import ResumeHint
from sft_research.callbacks.rng_state import RNGState
from sft_research.callbacks.stale_updates import StaleUpdates
from sft_research.callbacks.throughput import Throughput

__all__ = ["ComputeRecord", "Preflight", "RNGState", "ResumeHint", "StaleUpdates", "Throughput"]
