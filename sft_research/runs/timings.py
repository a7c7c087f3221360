"""Where a process's time goes, by phase (model loads, frozen-model passes, training steps, exports, each probe's
evaluation, IRFT's sampling): seconds summed over the process, read by the benchmark harness before and after each
run. A phase is timed where it happens, so that the breakdown needs no profiler."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator

SECONDS: Counter[str] = Counter()


@contextlib.contextmanager
def timed(phase: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        SECONDS[phase] += time.perf_counter() - start


def add(phase: str, seconds: float) -> None:
    SECONDS[phase] += seconds


def since(before: dict[str, float]) -> dict[str, float]:
    """Seconds per phase spent after the snapshot ``before`` (``dict(SECONDS)`` then)."""
    return {phase: round(seconds - before.get(phase, 0.0), 2) for phase, seconds in SECONDS.items() if seconds > before.get(phase, 0.0)}
