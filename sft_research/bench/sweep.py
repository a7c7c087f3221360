"""A sweep: the same suite at every point of a grid over suite keys, each point a suite of its own (resumable in its
own folder), and a report of every metric against the swept values.

``sweep: {task.noise_fraction: [0.0, 0.25, 0.5]}`` in a suite runs it three times, under
``<output_dir>/task.noise_fraction=0.0`` and so on; several keys make their product. The sweep's own outputs are
``sweep.md``, ``sweep.csv`` (every point, arm and metric: mean and 95% interval, and the paired difference to the
reference arm) and ``sweep.png``.
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
from pathlib import Path

from sft_research.bench.plots import sweep_plot
from sft_research.bench.probes import Metric, task_and_forgetting
from sft_research.bench.report import CSV, estimate_markdown
from sft_research.bench.runner import SuiteReport, run_suite
from sft_research.runs.atomic_files import atomic_write_text

Value = int | float | str | bool | None


def grid(sweep: dict[str, list[Value]]) -> list[dict[str, Value]]:
    """Every combination of the swept values, the first key slowest."""
    if not sweep or any(not values for values in sweep.values()):
        raise ValueError(f"a sweep needs at least one key with at least one value, got {sweep}")
    return [dict(zip(sweep, values)) for values in itertools.product(*sweep.values())]


def point_name(point: dict[str, Value]) -> str:
    return ",".join(f"{key}={value}" for key, value in point.items())


def point_config(suite_config: dict, point: dict[str, Value]) -> dict:
    """The suite's config with the point's values set at their dotted keys, and no sweep."""
    config = copy.deepcopy(suite_config)
    config["sweep"] = None
    for key, value in point.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"sweep key {key!r}: the suite has no setting {part!r} there (settings: {sorted(node)})")
            node = node[part]
        if leaf not in node:
            raise ValueError(f"sweep key {key!r}: the suite has no setting {leaf!r} there (settings: {sorted(node)})")
        node[leaf] = value
    return config


def sweep_report(points: list[tuple[dict[str, Value], SuiteReport]], metrics: list[Metric], reference_arm: str, out: Path) -> str:
    """Writes sweep.md, sweep.csv and sweep.png; returns the markdown."""
    key = ", ".join(points[0][0])
    labels = [",".join(str(v) for v in point.values()) for point, _ in points]
    tables = [{row.arm: row for row in report.table} for _, report in points]
    comparisons = [{c["arm"]: c for c in report.comparisons} for _, report in points]
    lines = [f"Sweep over {key}: mean ± 95% interval at each point (each point's own summary.md has the rest)."]
    for metric in metrics:
        lines += ["", f"**{metric.label}**", "", "| arm | " + " | ".join(labels) + " |", "|" + "---|" * (len(labels) + 1)]
        for arm in dict.fromkeys(arm for table in tables for arm in table):
            cells = ["" if arm not in table else estimate_markdown(table[arm], metric.name) for table in tables]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    task, _ = task_and_forgetting(metrics)
    lines += ["", f"Paired difference to `{reference_arm}` on the {task.label} (same items and seeds; 95% interval, verdict):", ""]
    lines += ["| arm | " + " | ".join(labels) + " |", "|" + "---|" * (len(labels) + 1)]
    for arm in dict.fromkeys(arm for compared in comparisons for arm in compared):
        cells = []
        for compared in comparisons:
            d, v = compared[arm][task.name] if arm in compared else (None, None)
            cells.append("" if d is None else f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}] {v}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    markdown = "\n".join(lines) + "\n"
    atomic_write_text(out / "sweep.md", markdown)
    atomic_write_text(out / "sweep.csv", sweep_csv(points, metrics, reference_arm))
    sweep_plot([(label, report.table) for label, (_, report) in zip(labels, points)], metrics, key, out / "sweep.png")
    return markdown


def sweep_csv(points: list[tuple[dict[str, Value], SuiteReport]], metrics: list[Metric], reference_arm: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    keys = list(points[0][0])
    writer.writerow(
        [*keys, "arm", "runs", "metric", "mean", "ci95", f"difference_to_{reference_arm}", "difference_low", "difference_high", "verdict"]
    )
    for point, report in points:
        comparisons = {c["arm"]: c for c in report.comparisons}
        for row in report.table:
            for metric in metrics:
                d, v = comparisons[row.arm][metric.name] if row.arm in comparisons else (None, "")
                paired = [f"{d.mean:.6g}", f"{d.low:.6g}", f"{d.high:.6g}"] if d is not None else ["", "", ""]
                writer.writerow([*point.values(), row.arm, row.runs, metric.name, *CSV.interval_cells(row, metric.name), *paired, v])
    return out.getvalue()


def run_sweep(parser, suite_config: dict, out: Path) -> list[tuple[dict[str, Value], SuiteReport]]:
    """Runs the suite at every point of its ``sweep`` (each resumable in its own folder) and writes the sweep report.
    ``parser`` is the ``bench`` command's, which checks every point's config before the first one runs."""
    configs = [(point, point_config(suite_config, point)) for point in grid(suite_config["sweep"])]
    # parse_object turns the dicts it is given into namespaces: it gets a copy, and the rows record the plain config.
    suites = [
        parser.instantiate(parser.parse_object({"suite": copy.deepcopy(config), "output_dir": str(out)})).suite for _, config in configs
    ]
    reports = []
    for index, ((point, config), suite) in enumerate(zip(configs, suites)):
        print(f"sweep point {index + 1}/{len(configs)}: {point_name(point)}", flush=True)
        reports.append((point, run_suite(suite, out / point_name(point), config)))
    print(sweep_report(reports, suites[0].measures().metrics, suites[0].reference_arm, out), flush=True)
    return reports
