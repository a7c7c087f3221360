"""The smoke suite end to end, and a suite killed mid-run (SIGINT, then SIGKILL) that resumes to the same summary."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sft_research.cli import main

ROOT = Path(__file__).parents[1]
SMOKE = ROOT / "benchmarks" / "suites" / "smoke.yaml"
ARMS = ["sft", "sft_quality", "iw_sft", "poft", "sft_then_dpo", "irft"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("smoke")
    patch = pytest.MonkeyPatch()
    patch.setenv("SFT_RESEARCH_CACHE", str(cache))
    try:
        table = main(["bench", "--suite", str(SMOKE), "--output_dir", str(out)])
    finally:
        patch.undo()
    return out, table


def test_smoke_suite_writes_every_output(uninterrupted):
    out, table = uninterrupted
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["arm"], r["seed"]) for r in rows) == sorted((a, s) for a in ARMS for s in (0, 1))
    for row in rows:
        assert set(row["metrics"]) == {"task_score", "general_text_loglik_change", "skill_accuracy_change", "flip_rate", "kl_from_base"}
        assert row["versions"]["torch"] and row["config"]["suite"]["base_model"] == "embedded:tiny-random"
        assert row["metrics"]["kl_from_base"]["mean"] > 0, "training moved the model away from the base"
    with open(out / "summary.csv") as file:
        summary = list(csv.DictReader(file))
    assert [r["arm"] for r in summary] == ["base model"] + ARMS
    assert all(r["ci_method"] == "t over 2 seeds" for r in summary[1:])
    assert "| base model |" in (out / "summary.md").read_text()
    assert (out / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "base.json").read_text())["kl"] == [0.0] * 4
    assert not list((out / "runs").rglob("hf_model")), "checkpoints are deleted once evaluated"
    assert list((out / "runs").rglob("metrics.csv")), "training logs are kept"


def bench_process(out: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "SFT_RESEARCH_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "sft_research.cli", "bench", "--suite", str(SMOKE), "--output_dir", str(out)]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(condition, process, timeout=240.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the benchmark ended before it could be interrupted"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def rows(out: Path) -> int:
    path = out / "results.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_killed_suite_resumes_to_the_same_summary(uninterrupted, tmp_path, cache):
    out = tmp_path / "killed"
    first = bench_process(out, cache)
    wait_for(lambda: rows(out) >= 2 and (out / "runs" / ARMS[2]).exists(), first)  # inside the third run
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=60) != 0
    done = rows(out)

    second = bench_process(out, cache)
    wait_for(lambda: rows(out) >= done + 2 and any((out / "runs").glob("*/seed_1")) , second)
    time.sleep(0.5)  # inside a run, and maybe inside a write
    second.send_signal(signal.SIGKILL)
    second.wait(timeout=60)

    third = bench_process(out, cache)
    assert third.wait(timeout=300) == 0
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["arm"], r["seed"]) for r in results) == sorted((a, s) for a in ARMS for s in (0, 1)), "none lost or duplicated"
    reference, _ = uninterrupted
    assert (out / "summary.csv").read_text() == (reference / "summary.csv").read_text()
    assert (out / "summary.md").read_text() == (reference / "summary.md").read_text()
