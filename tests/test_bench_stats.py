"""The report's arithmetic against hand-computed values."""

import math

import pytest

from sft_research.bench.evaluate import Measures
from sft_research.bench.probes import GeneralTextProbe, HeldOutSkillsProbe, KLProbe, Skill, TaskScore
from sft_research.bench.stats import Estimate, confidence_interval, differences, flips, mean_se


def test_mean_and_standard_error():
    e = mean_se([1.0, 2.0, 4.0])
    assert e.mean == pytest.approx(7 / 3)
    sd = math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    assert e.se == pytest.approx(sd / math.sqrt(3)) and e.n == 3
    assert mean_se([5.0]) == Estimate(5.0, 0.0, 1)


def test_confidence_interval_over_seeds_uses_student_t():
    runs = [Estimate(0.5, 0.1, 100), Estimate(0.6, 0.1, 100), Estimate(0.7, 0.1, 100)]
    mean, half, method = confidence_interval(runs)
    # sd of (0.5, 0.6, 0.7) is 0.1; t(0.975, 2 df) = 4.302652729911275
    assert mean == pytest.approx(0.6)
    assert half == pytest.approx(4.302652729911275 * 0.1 / math.sqrt(3))
    assert method == "t over 3 seeds"
    mean, half, _ = confidence_interval(runs[:2])  # t(0.975, 1 df) = 12.706204736174698
    assert half == pytest.approx(12.706204736174698 * (0.1 / math.sqrt(2)) / math.sqrt(2))


def test_confidence_interval_of_one_run_uses_its_items():
    mean, half, method = confidence_interval([Estimate(0.4, 0.05, 80)])
    assert (mean, method) == (0.4, "normal over 80 items")
    assert half == pytest.approx(1.959963984540054 * 0.05)


def test_paired_change_and_flip_rate_by_hand():
    base = [1.0, 1.0, 0.0, 1.0, 0.0]
    tuned = [1.0, 0.0, 1.0, 0.0, 0.0]
    assert differences(tuned, base) == [0.0, -1.0, 1.0, -1.0, 0.0]
    change = mean_se(differences(tuned, base))
    assert change.mean == pytest.approx(-0.2)
    assert change.se == pytest.approx(math.sqrt((0.04 + 0.64 + 1.44 + 0.64 + 0.04) / 4) / math.sqrt(5))
    assert flips(tuned, base) == [0.0, 1.0, 0.0, 1.0, 0.0]  # right -> wrong on items 2 and 4 of 5
    for function in (differences, flips):
        with pytest.raises(ValueError, match="paired items differ"):
            function([1.0], base)


def test_forgetting_metrics_are_fine_tuned_minus_base():
    measures = Measures([TaskScore(), GeneralTextProbe(), HeldOutSkillsProbe([Skill("a"), Skill("b")]), KLProbe()])
    # the skills' items one after the other: a's two, then b's two
    base = {"task": [0, 0, 1, 0], "general_text": [-2.0, -3.0], "skills": [1, 1, 0, 1], "kl": [0.0, 0.0]}
    tuned = {"task": [1, 1, 1, 0], "general_text": [-2.5, -3.1], "skills": [1, 0, 1, 1], "kl": [0.2, 0.4]}
    assert measures.names == ["task_score", "general_text_loglik_change", "skill_accuracy_change", "flip_rate", "kl_from_base"]
    metrics = measures.estimates(tuned, base)
    assert metrics["task_score"].mean == pytest.approx(0.75)
    assert metrics["general_text_loglik_change"].mean == pytest.approx((-0.5 - 0.1) / 2)
    assert metrics["skill_accuracy_change"].mean == pytest.approx((0 - 1 + 1 + 0) / 4)
    assert metrics["flip_rate"].mean == pytest.approx(1 / 4)
    assert metrics["kl_from_base"].mean == pytest.approx(0.3)
    assert measures.estimates(base, base)["general_text_loglik_change"].mean == 0.0
    items = measures.item_values(tuned, base)
    assert items["skill_accuracy_change"] == [0.0, -1.0, 1.0, 0.0]
    assert items["flip_rate"] == [0.0, 1.0, 0.0, 0.0] and items["kl_from_base"] == [0.2, 0.4]
    assert {name: mean_se(values) for name, values in items.items()} == metrics


def test_probes_need_unique_names_and_every_probe_measured():
    with pytest.raises(ValueError, match="unique probe names"):
        Measures([TaskScore(), KLProbe(), KLProbe(num_prompts=4)])
    with pytest.raises(ValueError, match=r"no measurements of probe\(s\) \['kl'\]"):
        Measures([TaskScore(), KLProbe()]).item_values({"task": [1.0]}, {"task": [0.0]})
