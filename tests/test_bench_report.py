"""The report of a suite from results written by hand (nothing trained): the summary names the task and its scorer and
shows each probe's own value (the base model's and each arm's) beside the changes, the curves table leaves out what no
arm reaches, and a one-arm suite says it has nothing to pair with."""

import csv
from dataclasses import asdict

import pytest

from sft_research.bench import GeneralTextProbe, HeldOutSkillsProbe, KLProbe, ObjectiveArm, Suite
from sft_research.bench.report import append_result
from sft_research.bench.runner import report

SFT = {"class_path": "sft_research.objectives.SFT"}


def measured(task, text, skills, kl) -> dict:
    return {"task": task, "general_text": text, "skills": skills, "kl": kl}


BASE = measured([0.0, 0.0, 0.0, 0.0], [-2.0, -3.0, -2.5], [1.0] * 4, [0.0, 0.0])
RUNS = {
    "sft": measured([1.0, 1.0, 0.0, 0.0], [-2.5, -3.5, -3.0], [0.0, 0.0, 1.0, 1.0], [4.0, 2.0]),
    "gentle": measured([1.0, 1.0, 0.0, 0.0], [-2.1, -3.1, -2.6], [1.0, 1.0, 1.0, 0.0], [1.0, 1.0]),
}


def write(suite: Suite, out) -> None:
    out.mkdir()
    measures = suite.measures()
    for arm in suite.arms:
        items = RUNS[arm.name]
        metrics = {name: asdict(e) for name, e in measures.estimates(items, BASE).items()}
        append_result(
            out / "results.jsonl", {"arm": arm.name, "seed": 0, "items": items, "metrics": metrics, "end": {"fit": "fit"}, "wall_s": 1.0}
        )


def suite_of(*arms: str) -> Suite:
    probes = [GeneralTextProbe(), HeldOutSkillsProbe(), KLProbe()]
    return Suite([ObjectiveArm(name, SFT) for name in arms], base_model="embedded:tiny-random", probes=probes)


def test_the_summary_shows_each_probes_value_beside_its_changes(tmp_path, capsys):
    suite = suite_of("sft", "gentle")
    write(suite, tmp_path / "out")
    report(suite, tmp_path / "out", BASE)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert summary.splitlines()[0] == (
        "| arm | runs | task score (chain_sum, verifier) | general-text log-lik/token | Δ general-text log-lik/token "
        "| held-out-skill accuracy | Δ held-out-skill accuracy | skill flip rate (1→0) | KL(π_θ‖π_0) on task | verdict |"
    )
    assert summary.splitlines()[2].startswith("| base model | 0 | 0.000 | -2.500 | 0.000 | 1.000 | 0.000 | 0.000 | 0.000 |")
    assert "Beside the changes: each probe's own measurement" in summary
    rows = {row["arm"]: row for row in csv.DictReader((tmp_path / "out" / "summary.csv").open())}
    # by hand: sft's general text -3.0 (base -2.5: -0.5); its skills 0.5 (base 1.0: -0.5, two flips of four)
    assert {
        k: float(rows["sft"][k]) for k in ("general_text_value", "general_text_loglik_change", "skills_value", "skill_accuracy_change")
    } == (
        pytest.approx({"general_text_value": -3.0, "general_text_loglik_change": -0.5, "skills_value": 0.5, "skill_accuracy_change": -0.5})
    )
    assert float(rows["gentle"]["general_text_value"]) == pytest.approx(-2.6) and float(rows["base model"]["skills_value"]) == 1.0
    assert summary in capsys.readouterr().out


def test_the_curves_table_leaves_out_columns_no_arm_reaches(tmp_path):
    """gentle's curve runs from the base model (task 0, Δ log-lik 0) to (0.5, -0.1): it never reaches sft's final
    Δ log-lik of -0.5 (no task score there), but reaches sft's final task score 0.5 at its end (Δ log-lik -0.1)."""
    suite = suite_of("sft", "gentle")
    write(suite, tmp_path / "out")
    report(suite, tmp_path / "out", BASE)
    summary = (tmp_path / "out" / "summary.md").read_text()
    along = summary[summary.index("Along the curves") :]
    header, _, gentle = along.splitlines()[-3:]
    task = "task score (chain_sum, verifier)"
    assert f"{task} at `sft`'s Δ general-text log-lik/token" not in header
    assert header.startswith(f"| arm | points | Δ general-text log-lik/token at `sft`'s {task} |")
    assert gentle.startswith("| gentle | 1 | -0.100 |")
    assert "Left out: " in along and "column(s) that no arm's curve reaches" in along


def test_a_one_arm_suite_says_there_is_nothing_to_pair_with(tmp_path):
    suite = suite_of("sft")
    write(suite, tmp_path / "out")
    report(suite, tmp_path / "out", BASE)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "One arm, `sft`: there is nothing to pair it with." in summary
    assert "Difference to" not in summary and "Along the curves" not in summary and "No paired comparison" not in summary
