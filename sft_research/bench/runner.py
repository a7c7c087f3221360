"""Runs a suite: evaluates the base model once, trains and evaluates every arm for every seed, and reports.

Resumable: a run whose row is in results.jsonl is skipped, a run killed part-way starts again (its finished
pipeline stages are kept), and the base model's evaluation and the frozen-model log-probs are computed once per
suite and reused by every arm and seed.

Each run's row records what the run spent on training (:mod:`sft_research.bench.compute`) and where its result came
from: fingerprints of its training data as rendered and of the base model's files, the git commit of the code, the
library versions and the seeds.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import time
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path

import torch

import sft_research
from sft_research.bench.compute import run_compute
from sft_research.bench.evaluate import Evaluation, Evaluator
from sft_research.bench.report import (
    append_result,
    compare_to_reference,
    paired_csv,
    paired_markdown,
    read_results,
    summarize,
    summary_csv,
    summary_markdown,
    tradeoff_plot,
    write_atomically,
)
from sft_research.bench.stats import Estimate
from sft_research.bench.suite import Suite
from sft_research.frozen.cache import checkpoint_fingerprint
from sft_research.pipelines import Pipeline


def versions() -> dict[str, str]:
    import lightning
    import transformers

    return {
        "sft_research": sft_research.__version__,
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "transformers": transformers.__version__,
        "peft": version("peft"),
        "reasoning_gym": version("reasoning-gym"),
        "python": platform.python_version(),
    }


def git_commit(package_dir: Path) -> str | None:
    """The commit checked out where the package's code lives; None when that code is not tracked by git (an
    installed copy, even one inside another checkout) or git is missing. Uncommitted changes are not recorded."""
    try:
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", "__init__.py"], cwd=package_dir, capture_output=True, timeout=30)
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=package_dir, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() if tracked.returncode == 0 and head.returncode == 0 else None


def run_suite(suite: Suite, output_dir: str | Path, suite_config: dict, reference_arm: str = "sft") -> list[dict]:
    """Runs what is not done yet, writes the report, prints the summary table, and returns the summary rows.
    Every arm is also compared with ``reference_arm`` on the same items and seeds."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / "suite.json", json.dumps(suite_config, indent=1, default=str))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    evaluator = Evaluator(suite, device)
    base = base_evaluation(evaluator, out / "base.json")
    results = out / "results.jsonl"
    done = {(row["arm"], row["seed"]) for row in read_results(results)}
    todo = [(arm, seed) for seed in suite.seeds for arm in suite.arms if (arm.name, seed) not in done]
    commit = git_commit(Path(sft_research.__file__).parent)
    base_fingerprint = checkpoint_fingerprint(suite.base_model) if todo else None
    started = time.perf_counter()
    for index, (arm, seed) in enumerate(todo):
        elapsed = time.perf_counter() - started
        eta = f", about {elapsed / index * (len(todo) - index) / 60:.1f} min left" if index else ""
        print(f"[{index + 1}/{len(todo)}] arm {arm.name} · seed {seed} ({elapsed / 60:.1f} min elapsed{eta})", flush=True)
        run_started = time.perf_counter()
        run_dir = out / "runs" / arm.name / f"seed_{seed}"
        stages = arm.stages(suite, seed)
        final = Pipeline(str(run_dir), stages).run()[stages[-1].name]
        evaluation = evaluator.evaluate(str(final))
        compute, data_fingerprints = run_compute(run_dir)
        row = {
            "arm": arm.name,
            "seed": seed,
            "metrics": {name: asdict(value) for name, value in evaluation.metrics(base).items()},
            "items": evaluation.to_dict(),
            "wall_s": round(time.perf_counter() - run_started, 1),
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
            for checkpoint in run_dir.rglob("hf_model"):
                shutil.rmtree(checkpoint, ignore_errors=True)
    return report(suite, out, base, reference_arm)


def base_evaluation(evaluator: Evaluator, path: Path) -> Evaluation:
    if path.is_file():
        return Evaluation(**json.loads(path.read_text()))
    evaluation = evaluator.evaluate(evaluator.suite.base_model, is_base=True)
    write_atomically(path, json.dumps(evaluation.to_dict()))
    return evaluation


def report(suite: Suite, out: Path, base: Evaluation, reference_arm: str = "sft") -> list[dict]:
    rows = read_results(out / "results.jsonl")
    base_metrics: dict[str, Estimate] = base.metrics(base)
    arms = [arm.name for arm in suite.arms]
    table = summarize(rows, base_metrics, arms)
    comparisons = compare_to_reference(rows, base, arms, reference_arm)
    markdown = summary_markdown(table) + paired_markdown(comparisons, reference_arm)
    write_atomically(out / "summary.md", markdown)
    write_atomically(out / "summary.csv", summary_csv(table))
    write_atomically(out / "paired.csv", paired_csv(comparisons, reference_arm))
    tradeoff_plot(table, out / "tradeoff.png")
    print(markdown, flush=True)
    return table
