"""The harness's outputs: results.jsonl (one row per arm and seed), summary.md/.csv, paired.csv, and tradeoff.png."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from sft_research.bench.curves import Point, Reading
from sft_research.bench.evaluate import Measurements, Measures
from sft_research.bench.paired import paired_difference, verdict
from sft_research.bench.probes import TASK_SCORE, Metric, task_and_forgetting
from sft_research.bench.stats import Estimate, confidence_interval
from sft_research.runs.atomic_files import atomic_write_text
from sft_research.train.callbacks.compute_record import Compute

# What a run spent (bench/compute.py), and its wall time.
SPENT_LABELS = {quantity.name: quantity.metadata["label"] for quantity in fields(Compute)} | {"wall_s": "wall s"}
SPENT = tuple(SPENT_LABELS)


def read_results(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_result(path: Path, row: dict) -> None:
    """Appends one row by rewriting the whole file atomically: a crash leaves the old file or the new one."""
    existing = path.read_text() if path.is_file() else ""
    atomic_write_text(path, existing + json.dumps(row) + "\n")


@dataclass
class SummaryRow:
    """One line of the summary: an arm, or the base model (no runs); per metric, its mean, the half-width of its 95%
    confidence interval and how that was computed (:func:`~sft_research.bench.stats.confidence_interval`); the mean
    compute of its runs (:func:`spent`); and its verdict on the task score against the base model's (none for the
    base model)."""

    arm: str
    runs: int
    estimates: dict[str, tuple[float, float, str]]
    spent: dict[str, float | None]
    verdict: str = ""


@dataclass(frozen=True)
class NumberFormat:
    """How one output writes a summary row's numbers, as format specs: the CSV files exactly enough to compute with,
    the markdown to be read.

    Args:
        estimate: a metric's mean and the half-width of its interval.
        count: a compute count.
        seconds: the wall time.
        missing: what stands for a compute quantity that the runs did not record.
    """

    estimate: str
    count: str
    seconds: str
    missing: str

    def interval_cells(self, row: SummaryRow, metric: str) -> tuple[str, str]:
        """A metric's mean and half-width."""
        mean, half, _ = row.estimates[metric]
        return format(mean, self.estimate), format(half, self.estimate)

    def spent_cells(self, row: SummaryRow) -> list[str]:
        """Each quantity of :data:`SPENT`."""
        return [
            self.missing if (v := row.spent[name]) is None else format(v, self.seconds if name == "wall_s" else self.count)
            for name in SPENT
        ]


CSV = NumberFormat(estimate=".6g", count=".6g", seconds=".6g", missing="")
MARKDOWN = NumberFormat(estimate=".3f", count=",.0f", seconds=".1f", missing="n/a")


def estimate_markdown(row: SummaryRow, metric: str) -> str:
    """Mean ± half-width; the base model's mean alone: it is measured once and not trained, so it has no interval."""
    mean, half = MARKDOWN.interval_cells(row, metric)
    return f"{mean} ± {half}" if row.runs else mean


def spent(runs: list[dict]) -> dict[str, float | None]:
    """Per quantity of :data:`SPENT`, its mean over the runs; None where a run does not have it (rows written before
    the harness counted compute)."""
    values = [{**run.get("compute", {}), "wall_s": run["wall_s"]} for run in runs]
    return {name: sum(v[name] for v in values) / len(values) if all(name in v for v in values) else None for name in SPENT}


def summarize(rows: list[dict], base: dict[str, Estimate], arms: list[str], metrics: list[Metric]) -> list[SummaryRow]:
    """Per arm with runs, its :class:`SummaryRow`; the base model first."""
    names = [m.name for m in metrics]
    table = [SummaryRow("base model", 0, {m: (base[m].mean, 0.0, "") for m in names}, dict.fromkeys(SPENT))]
    for arm in arms:
        runs = [row for row in rows if row["arm"] == arm]
        if runs:
            estimates = {m: confidence_interval([Estimate(**run["metrics"][m]) for run in runs]) for m in names}
            table.append(SummaryRow(arm, len(runs), estimates, spent(runs), task_verdict(estimates[TASK_SCORE], base[TASK_SCORE].mean)))
    return table


def with_values(rows: list[dict], measures: Measures) -> list[dict]:
    """Results rows whose metrics include each probe's own value on the run's model (:meth:`Measures.value_estimates`,
    from the row's items), for the summary's value columns."""
    return [
        {**row, "metrics": {**row["metrics"], **{name: asdict(e) for name, e in measures.value_estimates(row["items"]).items()}}}
        for row in rows
    ]


def task_verdict(task: tuple[float, float, str], base_score: float) -> str:
    """Whether an arm's task score is above or below the base model's, its interval clear of it."""
    mean, half, _ = task
    if mean - half > base_score:
        return "task score above base (CI clear of it)"
    if mean + half < base_score:
        return "task score below base (CI clear of it)"
    return "no clear effect on the task score"


def compare_to_reference(
    rows: list[dict], base: Measurements, arms: list[str], measures: Measures, reference_arm: str = "sft"
) -> list[dict]:
    """Per arm other than the reference, per metric: the paired difference to the reference arm on the same items and
    seeds (see :func:`~sft_research.bench.paired.paired_difference`) and its verdict. Empty without reference runs."""
    values: dict[str, dict[int, dict[str, list[float]]]] = {}
    for row in rows:
        values.setdefault(row["arm"], {})[row["seed"]] = measures.item_values(row["items"], base)
    reference = values.get(reference_arm, {})
    comparisons = []
    for arm in arms:
        runs = values.get(arm, {})
        if arm == reference_arm or not set(runs) & set(reference):
            continue
        entry: dict = {"arm": arm}
        for m in measures.metrics:
            difference = paired_difference({s: v[m.name] for s, v in runs.items()}, {s: v[m.name] for s, v in reference.items()})
            entry[m.name] = (difference, verdict(difference, m.higher_is_better))
        comparisons.append(entry)
    return comparisons


def directions(metrics: list[Metric]) -> str:
    higher = ", ".join(m.label for m in metrics if m.higher_is_better)
    lower = ", ".join(m.label for m in metrics if not m.higher_is_better)
    return f"higher is better: {higher}" + (f"; lower is better: {lower}" if lower else "")


def summary_csv(table: list[SummaryRow], metrics: list[Metric], columns: list[Metric] | None = None) -> str:
    """``columns``: the metrics with the probes' own values among them (:meth:`Measures.columns`); None: the metrics."""
    names = [m.name for m in columns or metrics]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["arm", "runs"] + [f"{m}{suffix}" for m in names for suffix in ("", "_ci95")] + ["ci_method", "verdict", *SPENT])
    for row in table:
        methods = sorted({row.estimates[m.name][2] for m in metrics if row.estimates[m.name][2]})
        writer.writerow(
            [row.arm, row.runs]
            + [cell for m in names for cell in CSV.interval_cells(row, m)]
            + ["; ".join(methods), row.verdict]
            + CSV.spent_cells(row)
        )
    return out.getvalue()


def summary_markdown(table: list[SummaryRow], metrics: list[Metric], columns: list[Metric] | None = None) -> str:
    """The summary table; ``columns``: the metrics with the probes' own values among them (the base model's and each
    arm's accuracy or log-likelihood beside the changes; :meth:`Measures.columns`), None: the metrics alone."""
    shown = columns or metrics
    names = [m.name for m in shown]
    header = "| arm | runs | " + " | ".join(m.label for m in shown) + " | verdict |"
    lines = [header, "|" + "---|" * (len(names) + 3)]
    for row in table:
        lines.append(f"| {row.arm} | {row.runs} | " + " | ".join(estimate_markdown(row, m) for m in names) + f" | {row.verdict} |")
    methods = sorted({row.estimates[m.name][2] for row in table for m in metrics if row.estimates[m.name][2]})
    notes = [
        "",
        "Mean ± 95% confidence interval (" + "; ".join(methods) + "). Changes are fine-tuned minus base on the same items",
        f"({directions(metrics)}).",
    ]
    if len(shown) > len(metrics):
        notes.append("Beside the changes: each probe's own measurement, the base model's and each arm's (the mean over its items).")
    return "\n".join(lines + notes) + "\n" + spent_markdown(table)


def spent_markdown(table: list[SummaryRow]) -> str:
    """What each arm spent on training, so that no arm's scores are read apart from their cost."""
    lines = [
        "",
        "Compute per run (mean over seeds; training only, the evaluation is the same for every arm):",
        "",
        "| arm | " + " | ".join(SPENT_LABELS[name] for name in SPENT) + " |",
        "|" + "---|" * (len(SPENT) + 1),
    ]
    for row in table[1:]:
        lines.append(f"| {row.arm} | " + " | ".join(MARKDOWN.spent_cells(row)) + " |")
    lines += [
        "",
        "Tokens and sequences are those trained on (forward and backward), frozen-model sequences those scored by",
        "references and baselines, generated tokens those sampled (`bench/compute.py`); n/a: a row from before counting.",
    ]
    return "\n".join(lines) + "\n"


def paired_markdown(comparisons: list[dict], metrics: list[Metric], reference_arm: str = "sft", arms: int = 2) -> str:
    """The paired differences to the reference arm; ``arms``: how many the suite has (one has nothing to pair with)."""
    names = [m.name for m in metrics]
    if arms == 1:
        return (
            f"\nOne arm, `{reference_arm}`: there is nothing to pair it with. The paired differences and the readings along the "
            "curves compare arms with each other; add a second arm (another objective) to have them.\n"
        )
    if not comparisons:
        return f"\nNo paired comparison: no arm shares a seed with the reference arm `{reference_arm}`.\n"
    lines = [
        "",
        f"Difference to `{reference_arm}` (arm minus `{reference_arm}` on the same items and seeds), 95% interval, verdict:",
        "",
        "| arm | seeds | " + " | ".join(m.label for m in metrics) + " |",
        "|" + "---|" * (len(names) + 2),
    ]
    for entry in comparisons:
        cells = [f"{d.mean:+.3g} [{d.low:+.3g}, {d.high:+.3g}] {v}" for d, v in (entry[m] for m in names)]
        lines.append(f"| {entry['arm']} | {entry[names[0]][0].seeds} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Better or worse: the interval is clear of 0 ({directions(metrics)}).",
        "Intervals pair items within seeds and seeds across arms; Student's t with Welch-Satterthwaite degrees of",
        "freedom over the seed and item variances (`bench/paired.py`).",
    ]
    return "\n".join(lines) + "\n"


def paired_csv(comparisons: list[dict], metrics: list[Metric], reference_arm: str = "sft") -> str:
    names = [m.name for m in metrics]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["arm", "reference_arm", "metric", "seeds", "items", "difference", "ci95_low", "ci95_high", "verdict"])
    for entry in comparisons:
        for m in names:
            d, v = entry[m]
            writer.writerow([entry["arm"], reference_arm, m, d.seeds, d.items, f"{d.mean:.6g}", f"{d.low:.6g}", f"{d.high:.6g}", v])
    return out.getvalue()


def curves_markdown(
    curves: dict[str, list[Point]], readings: dict[str, dict[str, Reading]], metrics: list[Metric], reference_arm: str
) -> str:
    """Each arm's readings off the curves against the reference arm's end (:mod:`sft_research.bench.curves`)."""
    if not readings:
        return ""
    task, forgetting = task_and_forgetting(metrics)
    # Per forgetting metric, its two readings (header, metric, Reading field); a column no arm's curve reaches is left out.
    columns = [
        column
        for m in forgetting
        for column in (
            (f"{task.label} at `{reference_arm}`'s {m.label}", m.name, "task_at_reference_forgetting"),
            (f"{m.label} at `{reference_arm}`'s {task.label}", m.name, "forgetting_at_reference_task"),
        )
    ]
    kept = [c for c in columns if any(getattr(by_metric[c[1]], c[2]) is not None for by_metric in readings.values())]
    left_out = len(columns) - len(kept)
    lines = [
        "",
        f"Along the curves (base model, {max(len(c) for c in curves.values()) - 1} points at most; mean over seeds): "
        "each arm's task score where its",
        f"forgetting first reaches `{reference_arm}`'s final forgetting, and its forgetting where its task score first reaches",
        f"`{reference_arm}`'s final task score, linear between points; —: its curve never gets there. "
        "Point estimates (`bench/curves.py`)." + (f" Left out: {left_out} column(s) that no arm's curve reaches." if left_out else ""),
        "",
        "| arm | points | " + " | ".join(header for header, _, _ in kept) + " |",
        "|" + "---|" * (len(kept) + 2),
    ]

    def show(value: float | None) -> str:
        return "—" if value is None else f"{value:.3f}"

    for arm, by_metric in readings.items():
        cells = [show(getattr(by_metric[metric], field)) for _, metric, field in kept]
        lines.append(f"| {arm} | {len(curves[arm]) - 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def curves_csv(curves: dict[str, list[Point]], metrics: list[Metric]) -> str:
    """Every arm's mean curve, one row per point, the base model first."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["arm", "point", "fit", "fraction", *(m.name for m in metrics)])
    for arm, curve in curves.items():
        for index, point in enumerate(curve):
            writer.writerow([arm, index, point.fit, f"{point.fraction:.4g}", *(f"{point.values[m.name]:.6g}" for m in metrics)])
    return out.getvalue()
