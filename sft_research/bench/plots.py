"""The harness's plots: task score against each forgetting metric along the arms' curves, and every metric against
a sweep's values."""

from __future__ import annotations

from pathlib import Path

from sft_research.bench.curves import Point
from sft_research.bench.probes import Metric, task_and_forgetting
from sft_research.bench.report import SummaryRow
from sft_research.runs.atomic_files import atomic_write


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(figure, path: Path) -> None:
    atomic_write(path, lambda temporary: figure.savefig(temporary, dpi=120), suffix=".png")
    pyplot().close(figure)


def tradeoff_plot(table: list[SummaryRow], curves: dict[str, list[Point]], metrics: list[Metric], path: Path) -> None:
    """One panel per forgetting metric: each arm's mean curve from the base model (a star) through its points to its
    end, which carries 95% CI error bars in both directions."""
    plt = pyplot()
    task, forgetting = task_and_forgetting(metrics)
    figure, axes = plt.subplots(1, len(forgetting), figsize=(5 * len(forgetting), 4.2), sharey=True, squeeze=False)
    ends = {row.arm: row.estimates for row in table if row.runs}
    for axis, metric in zip(axes[0], forgetting):
        base = table[0].estimates
        axis.plot(base[metric.name][0], base[task.name][0], marker="*", markersize=16, color="black", linestyle="none", label="base model")
        for arm, curve in curves.items():
            line = axis.plot([p.values[metric.name] for p in curve], [p.values[task.name] for p in curve], marker=".", alpha=0.8)[0]
            (y, dy, _), (x, dx, _) = ends[arm][task.name], ends[arm][metric.name]
            axis.errorbar(x, y, xerr=dx, yerr=dy, marker="o", capsize=3, linestyle="none", color=line.get_color(), label=arm)
        axis.set_xlabel(metric.label + (" (higher: better)" if metric.higher_is_better else " (lower: better)"))
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel(task.label)
    axes[0][-1].legend(fontsize=8, loc="best")
    figure.suptitle("Task score against forgetting along training (mean over seeds; 95% CI at the ends)")
    figure.tight_layout()
    save(figure, path)


def sweep_plot(points: list[tuple[str, list[SummaryRow]]], metrics: list[Metric], key: str, path: Path) -> None:
    """One panel per metric: each arm's mean and 95% CI at every sweep point (``points``: the point's value as text,
    and its summary table), the base model dashed."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 4.0), squeeze=False)
    labels = [label for label, _ in points]
    arms = list(dict.fromkeys(row.arm for _, table in points for row in table))
    for axis, metric in zip(axes[0], metrics):
        for arm in arms:
            cells = [next((row.estimates[metric.name] for row in table if row.arm == arm), None) for _, table in points]
            shown = [(i, c) for i, c in enumerate(cells) if c is not None]
            axis.errorbar(
                [i for i, _ in shown],
                [c[0] for _, c in shown],
                yerr=[c[1] for _, c in shown],
                marker="o",
                capsize=3,
                linestyle="--" if arm == "base model" else "-",
                color="black" if arm == "base model" else None,
                label=arm,
            )
        axis.set_xticks(range(len(labels)), labels, rotation=30 if max(map(len, labels)) > 6 else 0)
        axis.set_xlabel(key)
        axis.set_title(metric.label, fontsize=10)
        axis.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="best")
    figure.suptitle("Every metric against the swept value (mean, 95% CI)")
    figure.tight_layout()
    save(figure, path)
