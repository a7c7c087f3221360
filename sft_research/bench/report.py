"""The harness's outputs: results.jsonl (one row per arm and seed), summary.md/.csv, paired.csv, and tradeoff.png."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from dataclasses import fields
from pathlib import Path

from sft_research.bench.compute import Compute
from sft_research.bench.evaluate import METRICS, Evaluation
from sft_research.bench.paired import paired_difference, verdict
from sft_research.bench.stats import Estimate, confidence_interval

LABELS = {
    "task_score": "task score",
    "general_text_loglik_change": "Δ general-text log-lik/token",
    "skill_accuracy_change": "Δ held-out-skill accuracy",
    "flip_rate": "skill flip rate (1→0)",
    "kl_from_base": "KL(π_θ‖π_0) on task",
}
# Forgetting shows as a fall in log-likelihood and accuracy, and as a rise in flips and KL.
HIGHER_IS_BETTER = {
    "task_score": True,
    "general_text_loglik_change": True,
    "skill_accuracy_change": True,
    "flip_rate": False,
    "kl_from_base": False,
}
# What a run spent (bench/compute.py), and its wall time.
SPENT = tuple(field.name for field in fields(Compute)) + ("wall_s",)
SPENT_LABELS = {
    "optimizer_steps": "optimizer steps",
    "tokens": "tokens trained",
    "completion_tokens": "of them in the loss",
    "policy_sequences": "policy fwd+bwd sequences",
    "frozen_sequences": "frozen-model sequences",
    "generated_tokens": "generated tokens",
    "wall_s": "wall s",
}


def write_atomically(path: Path, text: str) -> None:
    """Writes under a temporary name and renames, so a killed process never leaves a half-written file."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def read_results(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_result(path: Path, row: dict) -> None:
    """Appends one row by rewriting the whole file atomically: a crash leaves the old file or the new one."""
    existing = path.read_text() if path.is_file() else ""
    write_atomically(path, existing + json.dumps(row) + "\n")


def spent(runs: list[dict]) -> dict[str, float | None]:
    """Per quantity of :data:`SPENT`, its mean over the runs; None where a run does not have it (rows written before
    the harness counted compute)."""
    values = [{**run.get("compute", {}), "wall_s": run["wall_s"]} for run in runs]
    return {name: sum(v[name] for v in values) / len(values) if all(name in v for v in values) else None for name in SPENT}


def summarize(rows: list[dict], base: dict[str, Estimate], arms: list[str]) -> list[dict]:
    """Per arm and metric: mean, 95% CI half-width and how it was computed, and the mean compute of its runs; the base
    model first."""
    table = [{"arm": "base model", "runs": 0, **{m: (base[m].mean, 0.0, "") for m in METRICS}, "spent": dict.fromkeys(SPENT)}]
    for arm in arms:
        runs = [row for row in rows if row["arm"] == arm]
        if runs:
            estimates = {m: [Estimate(**run["metrics"][m]) for run in runs] for m in METRICS}
            table.append({"arm": arm, "runs": len(runs), **{m: confidence_interval(estimates[m]) for m in METRICS}, "spent": spent(runs)})
    base_score = base["task_score"].mean
    for entry in table[1:]:
        mean, half, _ = entry["task_score"]
        if mean - half > base_score:
            entry["verdict"] = "task score above base (CI clear of it)"
        elif mean + half < base_score:
            entry["verdict"] = "task score below base (CI clear of it)"
        else:
            entry["verdict"] = "no clear effect on the task score"
    return table


def compare_to_reference(rows: list[dict], base: Evaluation, arms: list[str], reference_arm: str = "sft") -> list[dict]:
    """Per arm other than the reference, per metric: the paired difference to the reference arm on the same items and
    seeds (see :func:`~sft_research.bench.paired.paired_difference`) and its verdict. Empty without reference runs."""
    values: dict[str, dict[int, dict[str, list[float]]]] = {}
    for row in rows:
        values.setdefault(row["arm"], {})[row["seed"]] = Evaluation(**row["items"]).item_values(base)
    reference = values.get(reference_arm, {})
    comparisons = []
    for arm in arms:
        runs = values.get(arm, {})
        if arm == reference_arm or not set(runs) & set(reference):
            continue
        entry: dict = {"arm": arm}
        for m in METRICS:
            difference = paired_difference({s: v[m] for s, v in runs.items()}, {s: v[m] for s, v in reference.items()})
            entry[m] = (difference, verdict(difference, HIGHER_IS_BETTER[m]))
        comparisons.append(entry)
    return comparisons


def summary_csv(table: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["arm", "runs"] + [f"{m}{suffix}" for m in METRICS for suffix in ("", "_ci95")] + ["ci_method", "verdict", *SPENT])
    for entry in table:
        methods = sorted({entry[m][2] for m in METRICS if entry[m][2]})
        writer.writerow(
            [entry["arm"], entry["runs"]]
            + [f"{v:.6g}" for m in METRICS for v in entry[m][:2]]
            + ["; ".join(methods), entry.get("verdict", "")]
            + ["" if entry["spent"][name] is None else f"{entry['spent'][name]:.6g}" for name in SPENT]
        )
    return out.getvalue()


def summary_markdown(table: list[dict]) -> str:
    header = "| arm | runs | " + " | ".join(LABELS[m] for m in METRICS) + " | verdict |"
    lines = [header, "|" + "---|" * (len(METRICS) + 3)]
    for entry in table:
        cells = [f"{entry[m][0]:.3f}" + (f" ± {entry[m][1]:.3f}" if entry["runs"] else "") for m in METRICS]
        lines.append(f"| {entry['arm']} | {entry['runs']} | " + " | ".join(cells) + f" | {entry.get('verdict', '')} |")
    methods = sorted({entry[m][2] for entry in table for m in METRICS if entry[m][2]})
    notes = [
        "",
        "Mean ± 95% confidence interval (" + "; ".join(methods) + "). Changes are fine-tuned minus base on the same items;",
        "negative log-likelihood and accuracy changes, a positive flip rate and a positive KL are forgetting.",
    ]
    return "\n".join(lines + notes) + "\n" + spent_markdown(table)


def spent_markdown(table: list[dict]) -> str:
    """What each arm spent on training, so that no arm's scores are read apart from their cost."""
    lines = [
        "",
        "Compute per run (mean over seeds; training only, the evaluation is the same for every arm):",
        "",
        "| arm | " + " | ".join(SPENT_LABELS[name] for name in SPENT) + " |",
        "|" + "---|" * (len(SPENT) + 1),
    ]
    for entry in table[1:]:
        cells = ["n/a" if (v := entry["spent"][name]) is None else f"{v:.1f}" if name == "wall_s" else f"{v:,.0f}" for name in SPENT]
        lines.append(f"| {entry['arm']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Tokens and sequences are those trained on (forward and backward), frozen-model sequences those scored by",
        "references and baselines, generated tokens those sampled (`bench/compute.py`); n/a: a row from before counting.",
    ]
    return "\n".join(lines) + "\n"


def paired_markdown(comparisons: list[dict], reference_arm: str = "sft") -> str:
    if not comparisons:
        return f"\nNo paired comparison: no arm shares a seed with the reference arm `{reference_arm}`.\n"
    lines = [
        "",
        f"Difference to `{reference_arm}` (arm minus `{reference_arm}` on the same items and seeds), 95% interval, verdict:",
        "",
        "| arm | seeds | " + " | ".join(LABELS[m] for m in METRICS) + " |",
        "|" + "---|" * (len(METRICS) + 2),
    ]
    for entry in comparisons:
        cells = [f"{d.mean:+.3g} [{d.low:+.3g}, {d.high:+.3g}] {v}" for d, v in (entry[m] for m in METRICS)]
        lines.append(f"| {entry['arm']} | {entry[METRICS[0]][0].seeds} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Better or worse: the interval is clear of 0 (higher is better for the task score and the log-likelihood and",
        "accuracy changes, lower for the flip rate and the KL). Intervals pair items within seeds and seeds across arms;",
        "Student's t with Welch-Satterthwaite degrees of freedom over the seed and item variances (`bench/paired.py`).",
    ]
    return "\n".join(lines) + "\n"


def paired_csv(comparisons: list[dict], reference_arm: str = "sft") -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["arm", "reference_arm", "metric", "seeds", "items", "difference", "ci95_low", "ci95_high", "verdict"])
    for entry in comparisons:
        for m in METRICS:
            d, v = entry[m]
            writer.writerow([entry["arm"], reference_arm, m, d.seeds, d.items, f"{d.mean:.6g}", f"{d.low:.6g}", f"{d.high:.6g}", v])
    return out.getvalue()


def tradeoff_plot(table: list[dict], path: Path) -> None:
    """Task score against each forgetting probe, one point per arm with 95% CI error bars, the base marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probes = ["general_text_loglik_change", "skill_accuracy_change", "kl_from_base"]
    figure, axes = plt.subplots(1, len(probes), figsize=(5 * len(probes), 4.2), sharey=True)
    for axis, probe in zip(axes, probes):
        for entry in table:
            (y, dy, _), (x, dx, _) = entry["task_score"], entry[probe]
            if entry["runs"] == 0:
                axis.plot(x, y, marker="*", markersize=16, color="black", linestyle="none", label="base model")
            else:
                axis.errorbar(x, y, xerr=dx, yerr=dy, marker="o", capsize=3, linestyle="none", label=entry["arm"])
        axis.set_xlabel(LABELS[probe])
        axis.grid(alpha=0.3)
    axes[0].set_ylabel(LABELS["task_score"])
    axes[-1].legend(fontsize=8, loc="best")
    figure.suptitle("Task score against forgetting (95% CI)")
    figure.tight_layout()
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(handle)
    figure.savefig(temporary, dpi=120)
    plt.close(figure)
    os.replace(temporary, path)
