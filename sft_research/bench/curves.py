"""Curves of task score against forgetting along each arm's training, and comparisons read off them.

A run's curve is the base model, then the models at the suite's ``eval_at`` fractions of its training (optimizer
steps summed over the fits on its way to its final model), then its final model (the row's ``curve`` and end). An
arm's curve is the mean over its seeds, point by point (every seed runs the same schedule). Comparisons with the
reference arm are read off these mean curves by linear interpolation between neighbouring points: an arm's task
score where its forgetting first reaches the reference arm's final forgetting, and its forgetting where its task
score first reaches the reference arm's final task score. An earlier point of a curve is early stopping at that share
of the budget. The readings are point estimates on mean curves, without an interval; the end points carry the
intervals (summary.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from sft_research.bench.probes import TASK_SCORE, Metric


@dataclass
class Point:
    """One point of a curve: the fit it was taken in, the share of the run's whole training behind it (``"base"`` and 0
    for the base model), and the mean of each metric there."""

    fit: str
    fraction: float
    values: dict[str, float]


def run_points(row: dict) -> list[tuple[str, float, dict[str, float]]]:
    """The points a results row holds after the base model: its curve, then its end."""
    points = [(p["fit"], p["fraction"], {m: v["mean"] for m, v in p["metrics"].items()}) for p in row.get("curve", [])]
    return points + [(row.get("end", {}).get("fit", "end"), 1.0, {m: v["mean"] for m, v in row["metrics"].items()})]


def mean_curves(rows: list[dict], base: dict[str, float], arms: list[str]) -> dict[str, list[Point]]:
    """Per arm with runs, its curve: the base model, then each point's mean over the arm's seeds."""
    curves: dict[str, list[Point]] = {}
    for arm in arms:
        runs = [run_points(row) for row in rows if row["arm"] == arm]
        if not runs:
            continue
        schedules = {tuple((fit, fraction) for fit, fraction, _ in run) for run in runs}
        if len(schedules) != 1:
            raise ValueError(f"arm {arm!r}: its seeds were evaluated at different points {sorted(schedules)}")
        points = [Point("base", 0.0, dict(base))]
        for index, (fit, fraction, _) in enumerate(runs[0]):
            values = [run[index][2] for run in runs]
            points.append(Point(fit, fraction, {m: sum(v[m] for v in values) / len(values) for m in values[0]}))
        curves[arm] = points
    return curves


def first_crossing(curve: list[Point], along: str, target: float, read: str) -> float | None:
    """Walking the curve from the base model, the value of ``read`` where ``along`` first reaches ``target``
    (linear between the two points around it); None if it never does."""
    for a, b in zip(curve, curve[1:]):
        low, high = sorted((a.values[along], b.values[along]))
        if low <= target <= high:
            span = b.values[along] - a.values[along]
            t = 0.0 if span == 0 else (target - a.values[along]) / span
            return a.values[read] + t * (b.values[read] - a.values[read])
    return None


@dataclass
class Reading:
    """An arm against the reference on one forgetting metric: its task score at the reference's final forgetting,
    and its forgetting at the reference's final task score (None: its curve never gets there)."""

    task_at_reference_forgetting: float | None
    forgetting_at_reference_task: float | None


def along_curves(curves: dict[str, list[Point]], reference_arm: str, forgetting: list[Metric]) -> dict[str, dict[str, Reading]]:
    """Per arm other than the reference, per forgetting metric, its :class:`Reading`; empty without reference runs."""
    if reference_arm not in curves:
        return {}
    end = curves[reference_arm][-1].values
    return {
        arm: {
            m.name: Reading(
                first_crossing(curve, m.name, end[m.name], TASK_SCORE), first_crossing(curve, TASK_SCORE, end[TASK_SCORE], m.name)
            )
            for m in forgetting
        }
        for arm, curve in curves.items()
        if arm != reference_arm
    }
