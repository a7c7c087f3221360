"""Curves along training: reading one curve at another's end by hand, mean curves over seeds, where a fit writes its
points, and a sweep's grid."""

from types import SimpleNamespace

import pytest

from sft_research.bench.curves import Point, along_curves, first_crossing, mean_curves
from sft_research.bench.probes import Metric
from sft_research.bench.runner import curve, plan_curve
from sft_research.bench.sweep import grid, point_config, point_name
from sft_research.fit.run import run_fit
from sft_research.pipelines import FitStage, IRFTStage, Pipeline
from sft_research.train.curve_points import CurvePoints, add_curve_points, curve_points
from tests.conftest import SFT_ROWS, write_jsonl

KL = Metric("kl_from_base", "KL", higher_is_better=False)


def made_curve(*pairs):
    """Points (task score, KL), the base model (0, 0) first."""
    return [Point("base", 0.0, {"task_score": 0.0, "kl_from_base": 0.0})] + [
        Point("fit", i / len(pairs), {"task_score": t, "kl_from_base": k}) for i, (t, k) in enumerate(pairs, 1)
    ]


def test_reading_a_curve_between_its_points():
    gentle = made_curve((0.3, 1.0), (0.5, 3.0))
    # KL 2.0 lies half-way between the points at KL 1 and 3: task score half-way between 0.3 and 0.5
    assert first_crossing(gentle, "kl_from_base", 2.0, "task_score") == pytest.approx(0.4)
    # task score 0.15 is reached half-way from the base (0, 0) to (0.3, 1.0)
    assert first_crossing(gentle, "task_score", 0.15, "kl_from_base") == pytest.approx(0.5)
    assert first_crossing(gentle, "kl_from_base", 4.0, "task_score") is None, "never that far from the base"
    # the first crossing along training, not a later one
    wavy = made_curve((0.4, 2.0), (0.2, 1.0), (0.6, 2.0))
    assert first_crossing(wavy, "kl_from_base", 1.5, "task_score") == pytest.approx(0.3)


def test_readings_against_the_reference_arms_end():
    curves = {"sft": made_curve((0.2, 2.0), (0.4, 4.0)), "gentle": made_curve((0.3, 1.0), (0.5, 3.0))}
    readings = along_curves(curves, "sft", [KL])
    assert list(readings) == ["gentle"]
    reading = readings["gentle"]["kl_from_base"]
    # gentle never reaches sft's final KL of 4.0; it reaches sft's final task score of 0.4 at KL 2.0
    assert reading.task_at_reference_forgetting is None
    assert reading.forgetting_at_reference_task == pytest.approx(2.0)
    assert along_curves(curves, "dpo", [KL]) == {}


def row(arm, seed, points, end):
    def metrics(t, k):
        return {"task_score": {"mean": t}, "kl_from_base": {"mean": k}}

    return {
        "arm": arm,
        "seed": seed,
        "metrics": metrics(*end),
        "end": {"fit": "fit"},
        "curve": [{"fit": "fit", "fraction": 0.5, "metrics": metrics(*p)} for p in points],
    }


def test_mean_curves_average_seeds_point_by_point():
    rows = [row("sft", 0, [(0.2, 1.0)], (0.4, 3.0)), row("sft", 1, [(0.4, 2.0)], (0.6, 5.0))]
    (base, middle, end) = mean_curves(rows, {"task_score": 0.1, "kl_from_base": 0.0}, ["sft", "never_ran"])["sft"]
    assert (base.fit, base.values) == ("base", {"task_score": 0.1, "kl_from_base": 0.0})
    assert (middle.fit, middle.fraction) == ("fit", 0.5) and middle.values == pytest.approx({"task_score": 0.3, "kl_from_base": 1.5})
    assert end.fraction == 1.0 and end.values == pytest.approx({"task_score": 0.5, "kl_from_base": 4.0})
    with pytest.raises(ValueError, match="different points"):
        mean_curves([row("sft", 0, [(0.2, 1.0)], (0.4, 3.0)), row("sft", 1, [], (0.6, 5.0))], base.values, ["sft"])


@pytest.mark.slow
def test_a_fit_writes_its_points_where_the_harness_reads_them(tmp_path):
    """8 steps, points after steps 2, 4 and 8: the models after steps 2 and 4; the end is the fit's own final model."""
    data = write_jsonl(tmp_path / "sums.jsonl", SFT_ROWS)
    config = {
        "trainer": {"max_steps": 8, "accelerator": "cpu", "enable_progress_bar": False},
        "model": {"pretrained": {"name_or_path": "embedded:tiny-random"}, "optimizer": {"lr": 1e-2}},
        "data": {"train": {"class_path": "sft_research.data.FileDataset", "init_args": {"path": str(data)}}, "batch_size": 4},
    }
    run_fit(add_curve_points(config, [2, 4, 8]), tmp_path / "run")
    points = curve_points(tmp_path / "run")
    assert [(step, path.name) for step, path in points] == [(2, "step_2"), (4, "step_4")]
    assert all((path / "config.json").is_file() and (path / "model.safetensors").is_file() for _, path in points)
    weights = [(path / "model.safetensors").read_bytes() for _, path in points] + [
        (tmp_path / "run" / "hf_model" / "model.safetensors").read_bytes()
    ]
    assert len(set(weights)) == 3, "three different models along training"
    assert "callbacks" not in config["trainer"], "the config it was given is left as it was"
    with pytest.raises(ValueError, match="curve points are optimizer steps from 1 on"):
        CurvePoints([0, 2])


def test_a_skipped_batch_does_not_export_its_step_again(tmp_path, monkeypatch):
    """A batch skipped for a non-finite loss leaves the optimizer step where it was, and its batch end comes again."""
    import sft_research.train.curve_points

    exported = []
    monkeypatch.setattr(sft_research.train.curve_points, "export_model", lambda module, target: exported.append(target.name))

    monkeypatch.setattr(sft_research.train.curve_points, "model_dir", lambda module: tmp_path / "hf_model")

    class Module:
        pass

    points, trainer = CurvePoints([2, 3]), SimpleNamespace(estimated_stepping_batches=4)
    for step in (1, 2, 2, 3, 3, 4):
        trainer.global_step = step
        points.on_train_batch_end(trainer, Module(), None, None, 0)
    assert exported == ["step_2", "step_3"]


def test_curves_are_planned_over_the_fits_on_the_arms_way(tmp_path):
    """SFT (6 steps) then DPO (2): eval_at 0.25, 0.5 and 1.0 of 8 steps are SFT's steps 2 and 4 and DPO's end; a PoFT
    baseline stage is not on PoFT's way; IRFT's rounds of 3 steps split the steps between them."""

    def fit(steps):
        return {"trainer": {"max_steps": steps}}

    sft_then_dpo = Pipeline(str(tmp_path / "a"), [FitStage("sft", fit(6)), FitStage("dpo", fit(2), start_from="sft")])
    assert plan_curve(sft_then_dpo, [0.25, 0.5, 1.0]) == [2, 4, 8]
    assert [c["init_args"]["steps"] for c in sft_then_dpo.stages[0].fit["trainer"]["callbacks"]] == [[2, 4]]
    assert "callbacks" not in sft_then_dpo.stages[1].fit["trainer"], "the DPO fit's end is the last point"
    for stage, steps in (("sft", (2, 4)), ("dpo", ())):
        for step in steps:
            (tmp_path / "a" / stage / "points" / f"step_{step}").mkdir(parents=True)
    assert curve(sft_then_dpo, [2, 4, 8]) == [
        ("sft", 0.25, tmp_path / "a" / "sft" / "points" / "step_2"),
        ("sft", 0.5, tmp_path / "a" / "sft" / "points" / "step_4"),
        ("dpo", 1.0, tmp_path / "a" / "dpo" / "hf_model"),
    ]
    poft = Pipeline(str(tmp_path / "b"), [FitStage("baseline", fit(10)), FitStage("poft", fit(4), baselines_from=["baseline"])])
    assert plan_curve(poft, [0.5, 1.0]) == [2, 4] and "callbacks" not in poft.stages[0].fit["trainer"]
    irft = IRFTStage("irft", fit(3), rounds=2)
    assert plan_curve(Pipeline(str(tmp_path / "c"), [irft]), [1 / 3, 0.5, 1.0]) == [2, 3, 6]
    assert (irft.round_curve_steps(0), irft.round_curve_steps(1)) == ([2], []), "step 3 is round 0's end"
    assert plan_curve(Pipeline(str(tmp_path / "d"), [FitStage("fit", fit(4))]), [1.0]) == [], "the end only: nothing to export"


def test_a_sweep_is_the_product_of_its_values_at_dotted_keys():
    points = grid({"task.noise_fraction": [0.0, 0.5], "budget.lr": [1e-4, 1e-3]})
    assert [point_name(p) for p in points] == [
        "task.noise_fraction=0.0,budget.lr=0.0001",
        "task.noise_fraction=0.0,budget.lr=0.001",
        "task.noise_fraction=0.5,budget.lr=0.0001",
        "task.noise_fraction=0.5,budget.lr=0.001",
    ]
    suite = {"task": {"noise_fraction": 0.25, "seed": 0}, "budget": {"lr": 1e-4}, "sweep": {"task.noise_fraction": [0.5]}}
    config = point_config(suite, points[3])
    assert config == {"task": {"noise_fraction": 0.5, "seed": 0}, "budget": {"lr": 1e-3}, "sweep": None}
    assert suite["task"]["noise_fraction"] == 0.25, "the suite's own config is left as it was"
    with pytest.raises(ValueError, match="sweep key 'task.noise': the suite has no setting 'noise' there"):
        point_config(suite, {"task.noise": 0.1})
    with pytest.raises(ValueError, match="sweep key 'model.lr'"):
        point_config(suite, {"model.lr": 0.1})
    with pytest.raises(ValueError, match="at least one value"):
        grid({"task.noise_fraction": []})


def test_irft_rounds_place_their_points_after_the_rounds_before(tmp_path):
    """2 rounds of 4 steps, eval_at 0.25 and 0.75 of 8: step 2 of round 0 and step 2 of round 1 (step 6 overall)."""
    irft = IRFTStage("irft", {"trainer": {"max_steps": 4}}, rounds=2)
    pipeline = Pipeline(str(tmp_path), [irft])
    assert plan_curve(pipeline, [0.25, 0.75, 1.0]) == [2, 6, 8]
    assert (irft.round_curve_steps(0), irft.round_curve_steps(1)) == ([2], [2])
    for t in (0, 1):
        (tmp_path / "irft" / f"round_{t}" / "points" / "step_2").mkdir(parents=True)
    assert curve(pipeline, [2, 6, 8]) == [
        ("irft/round_0", 0.25, tmp_path / "irft" / "round_0" / "points" / "step_2"),
        ("irft/round_1", 0.75, tmp_path / "irft" / "round_1" / "points" / "step_2"),
        ("irft/round_1", 1.0, tmp_path / "irft" / "round_1" / "hf_model"),
    ]
    assert curve(pipeline, []) == [("irft/round_1", 1.0, tmp_path / "irft" / "round_1" / "hf_model")], "the same end label"
    (tmp_path / "irft" / "round_1" / "points" / "step_2").rmdir()
    with pytest.raises(ValueError, match=r"no model after step\(s\) \[6\] of 8"):
        curve(pipeline, [2, 6, 8])
    assert plan_curve(Pipeline(str(tmp_path / "odd"), [FitStage("fit", {"trainer": {"max_steps": 5}})]), [0.5, 1.0]) == [3, 5], (
        "halves round up"
    )
