"""The arithmetic of the report: per-item changes against the base model, and 95% confidence intervals."""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Estimate:
    """A mean with its standard error and the number of values behind it."""

    mean: float
    se: float
    n: int


def mean_se(values: list[float]) -> Estimate:
    """The mean and its standard error (sample standard deviation / sqrt(n); 0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return Estimate(mean, 0.0, n)
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return Estimate(mean, math.sqrt(variance / n), n)


def differences(finetuned: list[float], base: list[float]) -> list[float]:
    """Per item, fine-tuned minus base on the same items."""
    if len(finetuned) != len(base):
        raise ValueError(f"paired items differ in number: {len(finetuned)} vs {len(base)}")
    return [f - b for f, b in zip(finetuned, base)]


def flips(finetuned: list[float], base: list[float]) -> list[float]:
    """Per item, 1.0 where the base model is right and the fine-tuned one wrong (1 -> 0), else 0.0."""
    if len(finetuned) != len(base):
        raise ValueError(f"paired items differ in number: {len(finetuned)} vs {len(base)}")
    return [float(b >= 1.0 and f < 1.0) for f, b in zip(finetuned, base)]


def confidence_interval(estimates: list[Estimate], level: float = 0.95) -> tuple[float, float, str]:
    """Mean and half-width of a ``level`` confidence interval.

    Over seeds when there are two or more (Student's t on the seed means); for a single seed, the normal interval
    from that run's item-level standard error. The third value says which.
    """
    if len(estimates) >= 2:
        seeds = mean_se([e.mean for e in estimates])
        return seeds.mean, float(stats.t.ppf((1 + level) / 2, seeds.n - 1)) * seeds.se, f"t over {seeds.n} seeds"
    (single,) = estimates
    return single.mean, float(stats.norm.ppf((1 + level) / 2)) * single.se, f"normal over {single.n} items"
