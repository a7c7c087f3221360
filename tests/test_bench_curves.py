"""Curves along training: reading one curve at another's end by hand, mean curves over seeds, where a fit writes its
points, and a sweep's grid."""

import pytest

from sft_research.bench.curves import Point, along_curves, first_crossing, mean_curves
from sft_research.bench.probes import Metric
from sft_research.bench.sweep import grid, point_config, point_name
from sft_research.curve_points import CurvePoints, curve_points
from sft_research.fit import run_fit

from tests.conftest import SFT_ROWS, write_jsonl

KL = Metric("kl_from_base", "KL", higher_is_better=False)


def curve(*pairs):
    """Points (task score, KL), the base model (0, 0) first."""
    return [Point("base", 0.0, {"task_score": 0.0, "kl_from_base": 0.0})] + [
        Point("fit", i / len(pairs), {"task_score": t, "kl_from_base": k}) for i, (t, k) in enumerate(pairs, 1)
    ]


def test_reading_a_curve_between_its_points():
    gentle = curve((0.3, 1.0), (0.5, 3.0))
    # KL 2.0 lies half-way between the points at KL 1 and 3: task score half-way between 0.3 and 0.5
    assert first_crossing(gentle, "kl_from_base", 2.0, "task_score") == pytest.approx(0.4)
    # task score 0.15 is reached half-way from the base (0, 0) to (0.3, 1.0)
    assert first_crossing(gentle, "task_score", 0.15, "kl_from_base") == pytest.approx(0.5)
    assert first_crossing(gentle, "kl_from_base", 4.0, "task_score") is None, "never that far from the base"
    # the first crossing along training, not a later one
    wavy = curve((0.4, 2.0), (0.2, 1.0), (0.6, 2.0))
    assert first_crossing(wavy, "kl_from_base", 1.5, "task_score") == pytest.approx(0.3)


def test_readings_against_the_reference_arms_end():
    curves = {"sft": curve((0.2, 2.0), (0.4, 4.0)), "gentle": curve((0.3, 1.0), (0.5, 3.0))}
    readings = along_curves(curves, "sft", [KL])
    assert list(readings) == ["gentle"]
    reading = readings["gentle"]["kl_from_base"]
    # gentle never reaches sft's final KL of 4.0; it reaches sft's final task score of 0.4 at KL 2.0
    assert reading.task_at_reference_forgetting is None
    assert reading.forgetting_at_reference_task == pytest.approx(2.0)
    assert along_curves(curves, "dpo", [KL]) == {}


def row(arm, seed, points, end):
    metrics = lambda t, k: {"task_score": {"mean": t}, "kl_from_base": {"mean": k}}
    return {
        "arm": arm, "seed": seed, "metrics": metrics(*end), "end": {"fit": "fit"},
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


def test_a_fit_writes_its_points_where_the_harness_reads_them(tmp_path):
    """8 steps at fractions 0.25 and 0.5: the models after steps 2 and 4; the end is the fit's own final model."""
    data = write_jsonl(tmp_path / "sums.jsonl", SFT_ROWS)
    config = {
        "trainer": {
            "max_steps": 8, "accelerator": "cpu", "enable_progress_bar": False,
            "callbacks": [{"class_path": "sft_research.curve_points.CurvePoints", "init_args": {"fractions": [0.25, 0.5, 1.0]}}],
        },
        "model": {"pretrained": {"name_or_path": "embedded:tiny-random"}, "optimizer": {"lr": 1e-2}},
        "data": {"train": {"class_path": "sft_research.data.FileDataset", "init_args": {"path": str(data)}}, "batch_size": 4},
    }
    run_fit(config, tmp_path / "run")
    points = curve_points(tmp_path / "run")
    assert [(fraction, path.name) for fraction, path in points] == [(0.25, "step_2_of_8"), (0.5, "step_4_of_8")]
    assert all((path / "config.json").is_file() and (path / "model.safetensors").is_file() for _, path in points)
    weights = [(path / "model.safetensors").read_bytes() for _, path in points] + [(tmp_path / "run" / "hf_model" / "model.safetensors").read_bytes()]
    assert len(set(weights)) == 3, "three different models along training"
    with pytest.raises(ValueError, match=r"curve fractions must lie in \(0, 1\]"):
        CurvePoints([0.0, 0.5])


def test_a_sweep_is_the_product_of_its_values_at_dotted_keys():
    points = grid({"task.noise_fraction": [0.0, 0.5], "budget.lr": [1e-4, 1e-3]})
    assert [point_name(p) for p in points] == [
        "task.noise_fraction=0.0,budget.lr=0.0001", "task.noise_fraction=0.0,budget.lr=0.001",
        "task.noise_fraction=0.5,budget.lr=0.0001", "task.noise_fraction=0.5,budget.lr=0.001",
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
