"""The smoke suite end to end, and a suite killed mid-run (SIGINT, then SIGKILL) that resumes to the same summary."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sft_research.bench.runner import git_commit
from sft_research.cli import main
from sft_research.frozen.cache import checkpoint_fingerprint

ROOT = Path(__file__).parents[1]
SMOKE = ROOT / "benchmarks" / "suites" / "smoke.yaml"
ARMS = ["sft", "sft_quality", "iw_sft", "poft", "sft_then_dpo", "irft", "lora", "replay", "dft"]


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


def test_smoke_suite_counts_what_every_arm_spent(uninterrupted):
    """The smoke suite: 16 training records, batches of 4, 2 steps (IRFT: 2 rounds of 1 step on 8 prompts each)."""
    out, _ = uninterrupted
    rows = {(r["arm"], r["seed"]): r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    for seed in (0, 1):
        spent = {arm: rows[arm, seed]["compute"] for arm in ARMS}
        steps, policy, frozen = ({arm: c[name] for arm, c in spent.items()} for name in ("optimizer_steps", "policy_sequences", "frozen_sequences"))
        assert steps == {**dict.fromkeys(ARMS, 2), "poft": 4, "sft_then_dpo": 4}
        # DPO and IRFT train on pairs (2 sequences an example); PoFT and SFT-then-DPO run two fits
        assert policy == {**dict.fromkeys(ARMS, 8), "poft": 16, "sft_then_dpo": 8 + 16, "irft": 2 * 4 * 2}
        # references score every training example, once: IwSFT's 16, DPO's 16 pairs, IRFT's 8 pairs a round;
        # PoFT's baseline scores its 16 responses
        assert frozen == {**dict.fromkeys(ARMS, 0), "iw_sft": 16, "poft": 16, "sft_then_dpo": 32, "irft": 2 * 8 * 2}
        rounds = [json.loads((out / "runs" / "irft" / f"seed_{seed}" / "irft" / f"round_{t}" / "generation.json").read_text()) for t in (0, 1)]
        assert all(len(r["unfinished_generations"]) == r["prompts"] == 8 for r in rounds), "the random model never ends in 4 tokens"
        assert {arm: c["generated_tokens"] for arm, c in spent.items()} == {**dict.fromkeys(ARMS, 0), "irft": 2 * 8 * 4}
        # the same data in the same order: the same tokens, whatever the objective or LoRA
        same = [{k: v for k, v in spent[arm].items() if k in ("tokens", "completion_tokens")} for arm in ("sft", "sft_quality", "iw_sft", "lora", "dft")]
        assert all(s == same[0] for s in same) and 0 < same[0]["completion_tokens"] < same[0]["tokens"]
        # replay trains 16 task records and 5 pieces of text (every text token in the loss): more of a batch is loss
        assert spent["replay"]["completion_tokens"] > 2 * spent["sft"]["completion_tokens"]
    with open(out / "summary.csv") as file:
        summary = {r["arm"]: r for r in csv.DictReader(file)}
    assert summary["irft"]["generated_tokens"] == "64" and summary["sft_then_dpo"]["frozen_sequences"] == "32"
    assert float(summary["sft"]["wall_s"]) > 0 and summary["base model"]["tokens"] == ""
    assert "| sft_then_dpo | 4 |" in (out / "summary.md").read_text().split("Compute per run")[1]


def test_smoke_suite_rows_say_where_they_came_from(uninterrupted):
    out, _ = uninterrupted
    rows = {(r["arm"], r["seed"]): r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    base = checkpoint_fingerprint("embedded:tiny-random")
    for (arm, seed), row in rows.items():
        provenance = row["provenance"]
        assert provenance["base_model"] == base and provenance["git_commit"] == git_commit(ROOT / "sft_research")
        assert provenance["seeds"] == {"training": seed, "data": 0}
        assert row["versions"]["peft"] and row["versions"]["reasoning_gym"]
    data = {key: row["provenance"]["data"] for key, row in rows.items()}
    assert set(data["poft", 0]) == {"baseline", "poft"} and set(data["irft", 0]) == {"irft/round_0", "irft/round_1"}
    same = {str(data[arm, seed]) for arm in ("sft", "sft_quality", "iw_sft", "lora", "dft") for seed in (0, 1)}
    assert len(same) == 1, "one rendering of the task's data for every SFT-style arm and seed"
    assert data["replay", 0] == data["replay", 1] != data["sft", 0]
    assert data["sft_then_dpo", 0]["sft"] == data["sft", 0]["fit"] != data["sft_then_dpo", 0]["dpo"]
    assert data["poft", 0]["baseline"] != data["sft", 0]["fit"], "PoFT's baseline trains on clean data"


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
    assert without_wall_time(out) == without_wall_time(reference), "the same scores and compute; only wall time differs"


def without_wall_time(out: Path) -> tuple[list[dict], str]:
    with open(out / "summary.csv") as file:
        table = [{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(file)]
    before, compute = (out / "summary.md").read_text().split("Compute per run")
    return table, before + re.sub(r"\| [0-9.]+ \|$", "| |", compute, flags=re.MULTILINE)
