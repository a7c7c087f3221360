"""Paired differences between two arms of a suite, on the same evaluation items and the same training seeds.

Every arm is evaluated on the same items (held-out prompts, text chunks, skill items), and every arm is trained with
the same seeds, so the comparison of an arm with a reference arm can subtract item by item within each seed. What
makes one item hard for one arm mostly makes it hard for the other, so the differences vary far less than the scores
themselves, and a paired interval is narrower than one built from the two arms' own intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class PairedDifference:
    """Mean of arm minus reference over items and seeds, with the bounds of its confidence interval."""

    mean: float
    low: float
    high: float
    seeds: int
    items: int


def sample_variance(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def paired_difference(arm: dict[int, list[float]], reference: dict[int, list[float]], level: float = 0.95) -> PairedDifference:
    """Arm minus reference, paired on the items within each seed and on the seeds both arms ran.

    With ``d_si`` the difference on item i under seed s (S seeds, n items), the estimate is the grand mean ``D`` of
    ``d``. The items are the same under every seed, so items and seeds are crossed, and ``D`` varies both with which
    items were drawn and with the seeds' training noise. Its variance is estimated as the sum of two squared standard
    errors::

        v_seeds = var_s(mean_i d_si) / S        (training noise, over seeds)
        v_items = var_i(mean_s d_si) / n        (which items were drawn, over items)

    Under ``d_si = mu + a_s + b_i + e_si`` the sum's expectation is ``var(a)/S + var(b)/n + 2 var(e)/(S n)``, against
    the true ``var(a)/S + var(b)/n + var(e)/(S n)``: it counts the seed-by-item noise twice, so the interval errs
    wide, never narrow. The interval is Student's t with Welch-Satterthwaite degrees of freedom: with one seed it is
    the textbook paired-t interval over items (``v_seeds`` = 0, n - 1 degrees of freedom), and when the training noise
    dominates it tends to the t interval over seeds that the report uses for each arm.

    An analytic interval rather than a bootstrap: with the 1 to 3 seeds of a suite, resampling seeds underestimates
    their variance by a factor (S - 1)/S and has no small-sample correction, and an analytic interval is reproducible
    without a random seed.

    Args:
        arm, reference: per seed, the per-item values of one metric (the same items in the same order).

    Raises:
        ValueError: if the arms share no seed, or their item counts differ.
    """
    seeds = sorted(set(arm) & set(reference))
    if not seeds:
        raise ValueError(f"no seed in common: {sorted(arm)} vs {sorted(reference)}")
    items = {len(arm[s]) for s in seeds} | {len(reference[s]) for s in seeds}
    if len(items) != 1:
        raise ValueError(f"paired items differ in number across arms or seeds: {sorted(items)}")
    d = [[a - r for a, r in zip(arm[s], reference[s])] for s in seeds]
    n_seeds, (n_items,) = len(seeds), items
    seed_means = [sum(row) / n_items for row in d]
    item_means = [sum(row[i] for row in d) / n_seeds for i in range(n_items)]
    mean = sum(seed_means) / n_seeds
    parts = [(sample_variance(means) / len(means), len(means) - 1) for means in (seed_means, item_means) if len(means) > 1]
    variance = sum(v for v, _ in parts)
    if not parts:  # one seed and one item: nothing to estimate a spread from
        half = math.inf
    elif variance == 0:
        half = 0.0
    else:
        dof = variance**2 / sum(v**2 / df for v, df in parts)
        half = float(stats.t.ppf((1 + level) / 2, dof)) * math.sqrt(variance)
    return PairedDifference(mean, mean - half, mean + half, n_seeds, n_items)


def verdict(difference: PairedDifference, higher_is_better: bool) -> str:
    """``better`` or ``worse`` than the reference where the interval is clear of 0, minding the metric's direction;
    ``no clear difference`` otherwise."""
    if difference.low > 0:
        return "better" if higher_is_better else "worse"
    if difference.high < 0:
        return "worse" if higher_is_better else "better"
    return "no clear difference"
