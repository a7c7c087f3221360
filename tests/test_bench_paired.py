"""Paired differences between arms against hand-computed values, against unpaired intervals, and their verdicts."""

import csv
import io
import math

import pytest
from scipy import stats

from sft_research.bench.evaluate import Measures
from sft_research.bench.paired import PairedDifference, paired_difference, verdict
from sft_research.bench.probes import GeneralTextProbe, HeldOutSkillsProbe, KLProbe, TaskScore
from sft_research.bench.report import compare_to_reference, paired_csv, paired_markdown
from sft_research.bench.stats import confidence_interval, mean_se

T_975_3DF = 3.182446305284263


def test_one_seed_is_the_paired_t_interval_over_items():
    d = paired_difference({0: [1.0, 0.0, 1.0, 1.0]}, {0: [0.0, 0.0, 1.0, 0.0]})  # differences 1, 0, 0, 1
    half = T_975_3DF * math.sqrt((4 * 0.25 / 3) / 4)
    assert (d.mean, d.seeds, d.items) == (0.5, 1, 4)
    assert d.low == pytest.approx(0.5 - half) and d.high == pytest.approx(0.5 + half)


def test_seeds_and_items_by_hand():
    arm = {0: [0.5, 0.7, 0.9], 1: [0.6, 0.6, 1.2], 2: [9.0, 9.0, 9.0]}  # seed 2 has no reference run: left out
    reference = {0: [0.4, 0.5, 0.6], 1: [0.4, 0.5, 0.6]}
    d = paired_difference(arm, reference)
    # differences: seed 0 (0.1, 0.2, 0.3), seed 1 (0.2, 0.1, 0.6); seed means 0.2, 0.3; item means 0.15, 0.15, 0.45
    v_seeds = ((0.05**2 + 0.05**2) / 1) / 2
    v_items = ((0.1**2 + 0.1**2 + 0.2**2) / 2) / 3
    assert (v_seeds, v_items) == pytest.approx((0.0025, 0.01))
    dof = (v_seeds + v_items) ** 2 / (v_seeds**2 / 1 + v_items**2 / 2)
    assert dof == pytest.approx(25 / 9)
    half = stats.t.ppf(0.975, 25 / 9) * math.sqrt(0.0125)
    assert (d.mean, d.seeds, d.items) == (pytest.approx(0.25), 2, 3)
    assert (d.low, d.high) == pytest.approx((0.25 - half, 0.25 + half))


def test_degenerate_spreads():
    assert paired_difference({0: [0.3, 0.3]}, {0: [0.1, 0.1]}) == PairedDifference(
        pytest.approx(0.2), pytest.approx(0.2), pytest.approx(0.2), 1, 2
    )
    one = paired_difference({0: [0.3]}, {0: [0.1]})
    assert (one.low, one.high) == (-math.inf, math.inf) and verdict(one, True) == "no clear difference"


def test_mismatched_runs_are_refused():
    with pytest.raises(ValueError, match="no seed in common"):
        paired_difference({0: [1.0]}, {1: [1.0]})
    with pytest.raises(ValueError, match="paired items differ"):
        paired_difference({0: [1.0, 0.0]}, {0: [1.0]})


def unpaired_half_width(arm, reference):
    """The interval of the difference of means from the two arms' own intervals (the report's per-arm method)."""
    halves = [confidence_interval([mean_se(values) for values in runs.values()])[1] for runs in (arm, reference)]
    return math.sqrt(halves[0] ** 2 + halves[1] ** 2)


def test_pairing_over_items_narrows_the_interval():
    """Items differ far more in difficulty than the arms differ from each other: pairing removes the item spread."""
    reference = {0: [0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6]}
    arm = {0: [r + g for r, g in zip(reference[0], [0.1, 0.12, 0.08, 0.1, 0.11, 0.09, 0.1, 0.1])]}
    d = paired_difference(arm, reference)
    unpaired = unpaired_half_width(arm, reference)
    assert d.mean == pytest.approx(0.1)
    assert abs(d.mean) < unpaired, "unpaired, the difference is not clear of 0"
    assert d.low > 0 and verdict(d, higher_is_better=True) == "better"
    assert (d.high - d.low) / 2 < unpaired / 10


def test_pairing_over_seeds_narrows_the_interval():
    """A seed that helps or hurts both arms alike (same data order) cancels in the paired difference."""
    shift = {0: -0.2, 1: 0.0, 2: 0.25}
    items = [0.3, 0.5, 0.4, 0.6]
    reference = {s: [v + shift[s] for v in items] for s in shift}
    arm = {s: [v + shift[s] + 0.05 + 0.01 * ((i + s) % 2) for i, v in enumerate(items)] for s in shift}
    d = paired_difference(arm, reference)
    unpaired = unpaired_half_width(arm, reference)
    assert d.low > 0 and abs(d.mean) < unpaired
    assert (d.high - d.low) / 2 < unpaired / 10


@pytest.mark.parametrize(
    "low,high,higher_is_better,expected",
    [
        (0.1, 0.3, True, "better"),
        (0.1, 0.3, False, "worse"),
        (-0.3, -0.1, True, "worse"),
        (-0.3, -0.1, False, "better"),
        (-0.1, 0.3, True, "no clear difference"),
        (0.0, 0.3, False, "no clear difference"),  # touching 0 is not clear of it
    ],
)
def test_verdict_minds_the_metric_direction(low, high, higher_is_better, expected):
    assert verdict(PairedDifference((low + high) / 2, low, high, 2, 10), higher_is_better) == expected


MEASURES = Measures([TaskScore(), GeneralTextProbe(), HeldOutSkillsProbe(), KLProbe()])


def evaluation(task, skills, kl):
    return {"task": task, "general_text": [-2.0, -3.0, -2.5], "skills": skills, "kl": kl}


def test_report_compares_every_arm_with_the_reference_and_minds_forgetting_direction():
    base = evaluation([0, 0, 0, 0], [1] * 8, [0.0] * 3)
    rows = []
    for seed in (0, 1):
        rows.append({"arm": "sft", "seed": seed, "items": evaluation([1, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1, 1], [2.0 + seed, 3.0, 4.0])})
        # keeps every skill item (fewer flips: better) and stays closer to the base (lower KL: better)
        rows.append({"arm": "gentle", "seed": seed, "items": evaluation([1, 0, 1, 0], [1] * 8, [0.5 + seed, 1.0, 1.2])})
    comparisons = compare_to_reference(rows, base, ["sft", "gentle", "never_ran"], MEASURES, reference_arm="sft")
    assert [c["arm"] for c in comparisons] == ["gentle"]
    gentle = comparisons[0]
    assert gentle["flip_rate"][0].mean == pytest.approx(-0.75) and gentle["flip_rate"][1] == "better"
    assert gentle["skill_accuracy_change"][0].mean == pytest.approx(0.75) and gentle["skill_accuracy_change"][1] == "better"
    assert gentle["kl_from_base"][0].mean == pytest.approx(-(1.5 + 2.0 + 2.8) / 3) and gentle["kl_from_base"][1] == "better"
    assert gentle["task_score"] == (PairedDifference(0.0, 0.0, 0.0, 2, 4), "no clear difference")

    markdown = paired_markdown(comparisons, MEASURES.metrics, "sft")
    assert "Difference to `sft`" in markdown and "| gentle | 2 |" in markdown and "| sft |" not in markdown
    table = list(csv.DictReader(io.StringIO(paired_csv(comparisons, MEASURES.metrics, "sft"))))
    assert len(table) == 5 and {r["reference_arm"] for r in table} == {"sft"}
    assert next(r for r in table if r["metric"] == "flip_rate")["verdict"] == "better"

    assert (
        "higher is better: task score (chain_sum, verifier), Δ general-text log-lik/token, Δ held-out-skill accuracy; "
        "lower is better: skill flip rate (1→0), KL(π_θ‖π_0) on task" in markdown
    )
    assert compare_to_reference(rows, base, ["sft", "gentle"], MEASURES, reference_arm="dpo") == []
    assert "No paired comparison" in paired_markdown([], MEASURES.metrics, "dpo")
