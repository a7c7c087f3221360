"""The CSV logger of a rehearsal's fits: the stand-in's speed and memory logged under names that say whose they are."""

from __future__ import annotations

from sft_research.runs.csv_logger import RunCSVLogger

# The throughput callback's metrics, which in a rehearsal measure a tiny random model on this CPU, not the run.
STAND_IN_METRICS = {"train/tokens_per_s": "stand_in/tokens_per_s", "train/peak_memory_gib": "stand_in/peak_memory_gib"}


class RehearsalCSVLogger(RunCSVLogger):
    """:class:`~sft_research.runs.csv_logger.RunCSVLogger` whose ``metrics.csv`` names the stand-in's tokens per second
    and peak memory ``stand_in/...``: the run's memory is the rehearsal's memory plan, its speed is not rehearsed."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        super().log_metrics({STAND_IN_METRICS.get(name, name): value for name, value in metrics.items()}, step)
