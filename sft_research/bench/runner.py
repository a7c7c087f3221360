"""Runs a suite: evaluates the base model once, trains every arm for every seed and evaluates it along its training
(the suite's ``eval_at``), and reports.

Resumable: a run whose row is in results.jsonl is skipped, a run killed part-way starts again (its finished
pipeline stages are kept), and the base model's evaluation and the frozen-model log-probs are computed once per
suite and reused by every arm and seed.

Each run's row records what the run spent on training (:mod:`sft_research.bench.compute`) and where its result came
from: fingerprints of its training data as rendered and of the base model's files, the git commit of the code, the
library versions and the seeds.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import sft_research
from sft_research.bench.arms import Arm
from sft_research.bench.compute import run_compute
from sft_research.bench.curves import along_curves, mean_curves
from sft_research.bench.evaluate import Evaluator, Measurements
from sft_research.bench.plots import tradeoff_plot
from sft_research.bench.probes import task_and_forgetting
from sft_research.bench.report import (
    SummaryRow,
    append_result,
    compare_to_reference,
    curves_csv,
    curves_markdown,
    paired_csv,
    paired_markdown,
    read_results,
    summarize,
    summary_csv,
    summary_markdown,
    with_values,
)
from sft_research.bench.suite import Suite
from sft_research.frozen.cache import checkpoint_fingerprint
from sft_research.pipelines import Pipeline
from sft_research.pipelines.stages import named
from sft_research.runs import timings
from sft_research.runs.atomic_files import atomic_write_text
from sft_research.runs.run_record import git_commit, versions


@dataclass
class SuiteReport:
    """What a finished suite reports: the summary rows (base model first) and the paired comparisons with the
    reference arm (the readings off the curves are in summary.md)."""

    table: list[SummaryRow]
    comparisons: list[dict]


def run_suite(suite: Suite, output_dir: str | Path, suite_config: dict) -> SuiteReport:
    """Runs what is not done yet, writes the report, prints the summary, and returns it. Every arm is also compared
    with the suite's ``reference_arm`` on the same items and seeds."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    suite_started, before_suite = time.perf_counter(), dict(timings.SECONDS)
    atomic_write_text(out / "suite.json", json.dumps(suite_config, indent=1, default=str))
    results = out / "results.jsonl"
    done = {(row["arm"], row["seed"]) for row in read_results(results)}
    todo = [(arm, seed) for seed in suite.seeds for arm in suite.arms if (arm.name, seed) not in done]
    check_arms(suite, todo, out)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    evaluator = Evaluator(suite, device)
    base = base_evaluation(evaluator, out / "base.json")
    commit = git_commit(Path(sft_research.__file__).parent)
    base_fingerprint = checkpoint_fingerprint(suite.base_model) if todo else None
    started = time.perf_counter()
    for index, (arm, seed) in enumerate(todo):
        elapsed = time.perf_counter() - started
        eta = f", about {elapsed / index * (len(todo) - index) / 60:.1f} min left" if index else ""
        print(f"[{index + 1}/{len(todo)}] arm {arm.name} · seed {seed} ({elapsed / 60:.1f} min elapsed{eta})", flush=True)
        run_started, before_run = time.perf_counter(), dict(timings.SECONDS)
        run_dir = out / "runs" / arm.name / f"seed_{seed}"
        stages = arm.stages(suite, seed)
        pipeline = Pipeline(str(run_dir), stages)
        targets = plan_curve(pipeline, suite.eval_at)
        pipeline.run(checked=True)  # by check_arms
        points = curve(pipeline, targets)
        *before, (end_fit, _, end) = [(fit, fraction, evaluator.evaluate(str(model))) for fit, fraction, model in points]
        compute, data_fingerprints = run_compute(run_dir)
        row = {
            "arm": arm.name,
            "seed": seed,
            "metrics": estimates(evaluator, end, base),
            "items": end,
            "end": {"fit": end_fit},
            "curve": [
                {"fit": fit, "fraction": fraction, "metrics": estimates(evaluator, values, base), "items": values}
                for fit, fraction, values in before
            ],
            "wall_s": round(time.perf_counter() - run_started, 1),
            "timings": timings.since(before_run),
            "compute": asdict(compute),
            "provenance": {
                "data": data_fingerprints,
                "base_model": base_fingerprint,
                "git_commit": commit,
                "seeds": {"training": seed, "data": suite.task.seed},
            },
            "config": {"suite": suite_config, "stages": {stage.name: getattr(stage, "fit", None) for stage in stages}},
            "versions": versions(),
        }
        append_result(results, row)
        if not suite.keep_checkpoints:  # the training logs stay; the weights (hundreds of MB a run) go
            for checkpoint in [*run_dir.rglob("hf_model"), *run_dir.rglob("points")]:
                shutil.rmtree(checkpoint, ignore_errors=True)
    suite_report = report(suite, out, base)
    write_timings(out / "timings.md", time.perf_counter() - suite_started, timings.since(before_suite))
    return suite_report


def check_arms(suite: Suite, todo: list[tuple[Arm, int]], out: Path) -> None:
    """Every arm still to run, checked whole (each stage's settings, model, data and frozen models:
    :meth:`~sft_research.pipelines.Pipeline.check`) before the base model is evaluated or any arm trains, at its
    first seed to run: the seed changes nothing that is checked."""
    first: dict[str, tuple[Arm, int]] = {}
    for arm, seed in todo:
        first.setdefault(arm.name, (arm, seed))
    for arm, seed in first.values():
        with named(f"arm {arm.name!r}"):
            Pipeline(str(out / "runs" / arm.name / f"seed_{seed}"), arm.stages(suite, seed)).check()


def write_timings(path: Path, wall_s: float, phases: dict[str, float]) -> None:
    """Where this invocation's time went, phase by phase (:mod:`sft_research.runs.timings`), largest first; printed too.
    The rest is starting runs (Lightning, data, tokenization), the report, and what no phase times."""
    rest = wall_s - sum(phases.values())
    rows = sorted(phases.items(), key=lambda item: -item[1]) + [("other (run set-up, data, Lightning, report)", rest)]
    lines = [f"Where the time went: {wall_s / 60:.1f} min in all, from the suite's start (imports before it not counted).", ""]
    lines += ["| phase | seconds | share |", "|---|---|---|"]
    lines += [f"| {phase} | {seconds:.0f} | {seconds / wall_s:.0%} |" for phase, seconds in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def plan_curve(pipeline: Pipeline, eval_at: list[float]) -> list[int]:
    """The optimizer steps, counted along the fits on the way to the final model, at which a run is evaluated
    (``eval_at`` of their sum; the last is the end); each stage on the way is told to export its model at those
    that fall inside it."""
    if eval_at == [1.0]:
        return []
    path = pipeline.policy_stages()
    total = sum(stage.steps() for stage in path)
    targets = sorted({max(1, math.floor(fraction * total + 0.5)) for fraction in eval_at} | {total})  # halves round up
    start = 0
    for stage in path:
        stage.add_curve_points([t - start for t in targets if start < t < start + stage.steps()])
        start += stage.steps()
    return targets


def curve(pipeline: Pipeline, targets: list[int]) -> list[tuple[str, float, Path]]:
    """The models a run is evaluated at, as (fit, fraction of the run's training, model folder): those at the planned
    steps (:func:`plan_curve`), the final model last."""
    final = pipeline.stages[-1]
    if not targets:
        return [(final.end_fit(), 1.0, final.final_model(pipeline.output_dir / final.name))]
    points, start = [], 0
    for stage in pipeline.policy_stages():
        points += [(fit, start + step, model) for fit, step, model in stage.curve(pipeline.output_dir / stage.name)]
        start += stage.steps()
    found = [(fit, step / start, model) for fit, step, model in points if step in targets]
    missing = sorted(set(targets) - {step for _, step, _ in points})
    if missing:
        raise ValueError(
            f"{pipeline.output_dir}: no model after step(s) {missing} of {start} "
            "(stages finished by an earlier run with another eval_at? start a new output_dir)"
        )
    return found


def estimates(evaluator: Evaluator, values: Measurements, base: Measurements) -> dict[str, dict]:
    return {name: asdict(estimate) for name, estimate in evaluator.measures.estimates(values, base).items()}


def base_evaluation(evaluator: Evaluator, path: Path) -> Measurements:
    if path.is_file():
        return json.loads(path.read_text())
    measurements = evaluator.evaluate(evaluator.suite.base_model, is_base=True)
    atomic_write_text(path, json.dumps(measurements))
    return measurements


def report(suite: Suite, out: Path, base: Measurements) -> SuiteReport:
    rows = read_results(out / "results.jsonl")
    reference_arm = suite.reference_arm
    measures = suite.measures()
    metrics = measures.metrics
    base_metrics = measures.estimates(base, base)
    arms = [arm.name for arm in suite.arms]
    # The summary shows each probe's own value (an accuracy, a log-likelihood) beside the changes.
    table = summarize(with_values(rows, measures), base_metrics | measures.value_estimates(base), arms, measures.columns)
    comparisons = compare_to_reference(rows, base, arms, measures, reference_arm)
    curves = mean_curves(rows, {name: e.mean for name, e in base_metrics.items()}, arms)
    _, forgetting = task_and_forgetting(metrics)
    readings = along_curves(curves, reference_arm, forgetting)
    markdown = (
        summary_markdown(table, metrics, measures.columns)
        + paired_markdown(comparisons, metrics, reference_arm, len(arms))
        + curves_markdown(curves, readings, metrics, reference_arm)
    )
    atomic_write_text(out / "summary.md", markdown)
    atomic_write_text(out / "summary.csv", summary_csv(table, metrics, measures.columns))
    atomic_write_text(out / "paired.csv", paired_csv(comparisons, metrics, reference_arm))
    atomic_write_text(out / "curves.csv", curves_csv(curves, metrics))
    tradeoff_plot(table, curves, metrics, out / "tradeoff.png")
    print(markdown, flush=True)
    return SuiteReport(table, comparisons)
