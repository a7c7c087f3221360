"""The smoke suite end to end (every arm, curves, a sweep over two noise levels), and a suite killed mid-run (SIGINT,
then SIGKILL) that resumes to the same summaries, curves included."""

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
from sft_research.cli.main import main
from sft_research.frozen.cache import checkpoint_fingerprint
from tests.conftest import interruptible

pytestmark = pytest.mark.slow  # the smoke suite's 20 runs, three times over for the killed one

ROOT = Path(__file__).parents[1]
SMOKE = ROOT / "sft_research" / "bench" / "suites" / "smoke.yaml"
ARMS = ["sft", "sft_quality", "iw_sft", "poft", "sft_then_dpo", "irft", "lora", "replay", "dft", "kl_to_base", "clean_data"]
POINTS = ["task.noise_fraction=0.25", "task.noise_fraction=0.5"]
METRICS = ["task_score", "general_text_loglik_change", "skill_accuracy_change", "flip_rate", "kl_from_base"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("smoke")
    patch = pytest.MonkeyPatch()
    patch.setenv("SFT_RESEARCH_CACHE", str(cache))
    try:
        reports = main(["bench", "--suite", "smoke", "--output_dir", str(out)])
    finally:
        patch.undo()
    return out, reports


def results(out: Path) -> dict[tuple[str, int], dict]:
    return {(r["arm"], r["seed"]): r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


PNG = b"\x89PNG\r\n\x1a\n"


def test_smoke_suite_writes_every_output(uninterrupted):
    out, reports = uninterrupted
    assert [point for point, _ in reports] == [{"task.noise_fraction": 0.25}, {"task.noise_fraction": 0.5}]
    for name in POINTS:
        point = out / name
        rows = results(point)
        assert sorted(rows) == sorted((a, 0) for a in ARMS)
        for row in rows.values():
            assert list(row["metrics"]) == METRICS and list(row["items"]) == ["task", "general_text", "skills", "kl"]
            assert row["versions"]["torch"] and row["config"]["suite"]["base_model"] == "embedded:tiny-random"
            assert row["config"]["suite"]["task"]["noise_fraction"] == float(name.split("=")[1]) and row["config"]["suite"]["sweep"] is None
            assert row["metrics"]["kl_from_base"]["mean"] > 0, "training moved the model away from the base"
        with open(point / "summary.csv") as file:
            summary = list(csv.DictReader(file))
        assert [r["arm"] for r in summary] == ["base model"] + ARMS
        assert all(r["ci_method"] == "normal over 4 items; normal over 6 items; normal over 8 items" for r in summary[1:]), (
            "one seed: over items"
        )
        assert "| base model |" in (point / "summary.md").read_text()
        assert (point / "tradeoff.png").read_bytes()[:8] == PNG
        assert json.loads((point / "base.json").read_text())["kl"] == [0.0] * 4
        assert not list((point / "runs").rglob("hf_model")) and not list((point / "runs").rglob("points")), (
            "models are deleted once evaluated"
        )
        assert list((point / "runs").rglob("metrics.csv")), "training logs are kept"
    assert (out / "sweep.png").read_bytes()[:8] == PNG
    sweep = list(csv.DictReader((out / "sweep.csv").open()))
    assert len(sweep) == 2 * (1 + len(ARMS)) * len(METRICS)
    clean = {r["task.noise_fraction"]: r for r in sweep if r["arm"] == "clean_data" and r["metric"] == "kl_from_base"}
    assert set(clean) == {"0.25", "0.5"}
    for r in clean.values():  # KL from the base: lower is better
        low, high = float(r["difference_low"]), float(r["difference_high"])
        assert r["verdict"] == ("better" if high < 0 else "worse" if low > 0 else "no clear difference")
    assert "Sweep over task.noise_fraction" in (out / "sweep.md").read_text()


def test_every_arm_is_evaluated_along_its_way(uninterrupted):
    """eval_at [0.5, 1.0] of each arm's training: after step 1 of 2 for one fit (PoFT's baseline is not on its way),
    at the end of SFT for SFT (2 steps) then DPO (2 steps), at the end of IRFT's first 1-step round."""
    out, _ = uninterrupted
    rows = results(out / POINTS[0])
    schedule = {arm: [(p["fit"], p["fraction"]) for p in row["curve"]] + [(row["end"]["fit"], 1.0)] for (arm, _), row in rows.items()}
    assert schedule == {
        **{
            arm: [("fit", 0.5), ("fit", 1.0)]
            for arm in ("sft", "sft_quality", "iw_sft", "lora", "replay", "dft", "kl_to_base", "clean_data")
        },
        "poft": [("poft", 0.5), ("poft", 1.0)],
        "sft_then_dpo": [("sft", 0.5), ("dpo", 1.0)],
        "irft": [("irft/round_0", 0.5), ("irft/round_1", 1.0)],
    }
    for row in rows.values():
        kl = [p["metrics"]["kl_from_base"]["mean"] for p in row["curve"]] + [row["metrics"]["kl_from_base"]["mean"]]
        assert all(value > 0 for value in kl) and len(set(kl)) == len(kl), "each point is another model, none the base"
        assert all(list(p["items"]) == list(row["items"]) for p in row["curve"])
    curves = list(csv.DictReader((out / POINTS[0] / "curves.csv").open()))
    sft_then_dpo = [(r["point"], r["fit"], r["fraction"]) for r in curves if r["arm"] == "sft_then_dpo"]
    assert sft_then_dpo == [("0", "base", "0"), ("1", "sft", "0.5"), ("2", "dpo", "1")]
    assert "Along the curves" in (out / POINTS[0] / "summary.md").read_text()


def test_smoke_suite_counts_what_every_arm_spent(uninterrupted):
    """The smoke suite: 16 training records, batches of 4, 2 steps (IRFT: 2 rounds of 1 step on 8 prompts each)."""
    out, _ = uninterrupted
    rows = results(out / POINTS[0])
    seed = 0
    spent = {arm: rows[arm, seed]["compute"] for arm in ARMS}
    steps, policy, frozen = (
        {arm: c[name] for arm, c in spent.items()} for name in ("optimizer_steps", "policy_sequences", "frozen_sequences")
    )
    assert steps == {**dict.fromkeys(ARMS, 2), "poft": 4, "sft_then_dpo": 4}
    # DPO and IRFT train on pairs (2 sequences an example); PoFT and SFT-then-DPO run two fits
    assert policy == {**dict.fromkeys(ARMS, 8), "poft": 16, "sft_then_dpo": 8 + 16, "irft": 2 * 4 * 2}
    # references score every training example, once: IwSFT's 16, DPO's 16 pairs, IRFT's 8 pairs a round;
    # PoFT's baseline scores its 16 responses; the KL arm's base model runs on every batch trained on
    assert frozen == {**dict.fromkeys(ARMS, 0), "iw_sft": 16, "poft": 16, "sft_then_dpo": 32, "irft": 2 * 8 * 2, "kl_to_base": 8}
    rounds = [
        json.loads((out / POINTS[0] / "runs" / "irft" / f"seed_{seed}" / "irft" / f"round_{t}" / "generation.json").read_text())
        for t in (0, 1)
    ]
    assert all(len(r["unfinished_generations"]) == r["prompts"] == 8 for r in rounds), "the random model never ends in 4 tokens"
    assert {arm: c["generated_tokens"] for arm, c in spent.items()} == {**dict.fromkeys(ARMS, 0), "irft": 2 * 8 * 4}
    # the same data in the same order: the same tokens, whatever the objective or LoRA
    same = [
        {k: v for k, v in spent[arm].items() if k in ("tokens", "completion_tokens")}
        for arm in ("sft", "sft_quality", "iw_sft", "lora", "dft", "kl_to_base")
    ]
    assert all(s == same[0] for s in same) and 0 < same[0]["completion_tokens"] < same[0]["tokens"]
    # replay trains 16 task records and 5 pieces of text (every text token in the loss): more of a batch is loss
    assert spent["replay"]["completion_tokens"] > 2 * spent["sft"]["completion_tokens"]
    with open(out / POINTS[0] / "summary.csv") as file:
        summary = {r["arm"]: r for r in csv.DictReader(file)}
    assert summary["irft"]["generated_tokens"] == "64" and summary["sft_then_dpo"]["frozen_sequences"] == "32"
    assert float(summary["sft"]["wall_s"]) > 0 and summary["base model"]["tokens"] == ""
    assert "| sft_then_dpo | 4 |" in (out / POINTS[0] / "summary.md").read_text().split("Compute per run")[1]
    # the clean-data arm trains on the 12 and then 8 uncorrupted records of 16: fewer distinct answers in its batches
    clean = [results(out / point)["clean_data", 0]["compute"] for point in POINTS]
    noisy = [results(out / point)["sft", 0]["compute"] for point in POINTS]
    assert [c["policy_sequences"] for c in clean] == [8, 8] and clean[0]["tokens"] != clean[1]["tokens"]
    assert all(c["frozen_sequences"] == n["frozen_sequences"] == 0 for c, n in zip(clean, noisy))


def test_smoke_suite_rows_say_where_they_came_from(uninterrupted):
    out, _ = uninterrupted
    rows = results(out / POINTS[0])
    base = checkpoint_fingerprint("embedded:tiny-random")
    for (_, seed), row in rows.items():
        provenance = row["provenance"]
        assert provenance["base_model"] == base and provenance["git_commit"] == git_commit(ROOT / "sft_research")
        assert provenance["seeds"] == {"training": seed, "data": 0}
        assert row["versions"]["peft"] and row["versions"]["reasoning_gym"]
    data = {key: row["provenance"]["data"] for key, row in rows.items()}
    assert set(data["poft", 0]) == {"baseline", "poft"} and set(data["irft", 0]) == {"irft/round_0", "irft/round_1"}
    same = {str(data[arm, 0]) for arm in ("sft", "sft_quality", "iw_sft", "lora", "dft", "kl_to_base")}
    assert len(same) == 1, "one rendering of the task's data for every SFT-style arm"
    assert len({str(data[arm, 0]) for arm in ("replay", "sft", "clean_data")}) == 3, "replay and clean data change the data"
    assert results(out / POINTS[1])["sft", 0]["provenance"]["data"] != data["sft", 0], "the sweep point's noise changes the data"
    assert data["sft_then_dpo", 0]["sft"] == data["sft", 0]["fit"] != data["sft_then_dpo", 0]["dpo"]
    assert data["poft", 0]["baseline"] != data["sft", 0]["fit"], "PoFT's baseline trains on clean data"


def bench_process(out: Path, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "SFT_RESEARCH_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "sft_research.cli", "bench", "--suite", str(SMOKE), "--output_dir", str(out)]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=interruptible)


def wait_for(condition, process, timeout=240.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the benchmark ended before it could be interrupted"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def rows(out: Path) -> int:
    return sum(len(path.read_text().splitlines()) for path in out.glob("*/results.jsonl"))


def test_killed_suite_resumes_to_the_same_summary(uninterrupted, tmp_path, cache):
    out = tmp_path / "killed"
    first = bench_process(out, cache)
    wait_for(lambda: rows(out) >= 2 and (out / POINTS[0] / "runs" / ARMS[2]).exists(), first)  # inside the third run
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=60) != 0
    done = rows(out)

    second = bench_process(out, cache)
    wait_for(lambda: rows(out) >= done + 2 and (out / POINTS[1] / "runs").exists(), second)  # at the second sweep point
    time.sleep(0.5)  # inside a run, and maybe inside a write
    second.send_signal(signal.SIGKILL)
    second.wait(timeout=60)

    third = bench_process(out, cache)
    assert third.wait(timeout=300) == 0
    reference, _ = uninterrupted
    for point in POINTS:
        lines = (out / point / "results.jsonl").read_text().splitlines()
        assert sorted((r["arm"], r["seed"]) for r in map(json.loads, lines)) == sorted((a, 0) for a in ARMS), "none lost or duplicated"
        assert without_wall_time(out / point) == without_wall_time(reference / point), "the same scores and compute; only wall time differs"
        assert (out / point / "curves.csv").read_text() == (reference / point / "curves.csv").read_text()
    assert (out / "sweep.csv").read_text() == (reference / "sweep.csv").read_text()


def without_wall_time(out: Path) -> tuple[list[dict], str]:
    with open(out / "summary.csv") as file:
        table = [{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(file)]
    before, compute = (out / "summary.md").read_text().split("Compute per run")
    return table, before + re.sub(r"\| [0-9.]+ \|$", "| |", compute, flags=re.MULTILINE)
