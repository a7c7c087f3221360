"""Callbacks that the training module brings to every fit (``FineTuningModule.configure_callbacks``)."""

from sft_research.train.callbacks.compute_record import ComputeRecord
from sft_research.train.callbacks.preflight import Preflight
from sft_research.train.callbacks.resume_hint import ResumeHint
from sft_research.train.callbacks.rng_state import RNGState
from sft_research.train.callbacks.stale_updates import StaleUpdates
from sft_research.train.callbacks.throughput import Throughput

__all__ = ["ComputeRecord", "Preflight", "RNGState", "ResumeHint", "StaleUpdates", "Throughput"]
