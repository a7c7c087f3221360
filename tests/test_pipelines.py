"""SFT then DPO and IRFT rounds from one pipeline YAML, with resume."""

import csv
import json

import pytest
import yaml

from sft_research.cli import main
from tests.conftest import write_jsonl
from tests.test_objectives_training import PAIR_ROWS, SFT_ROWS


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SFT_RESEARCH_CACHE", str(tmp_path / "cache"))


def fit_config(model, objective, data_path, steps=2):
    return {
        "seed_everything": 0,
        "trainer": {"max_steps": steps, "accelerator": "cpu", "log_every_n_steps": 1, "enable_progress_bar": False, "enable_checkpointing": False},
        "model": {"pretrained": {"name_or_path": str(model)}, "objective": objective, "optimizer": {"lr": 1e-3}},
        "data": {"train": {"class_path": "sft_research.data.FileDataset", "init_args": {"path": str(data_path)}}, "batch_size": 4},
    }


def train_rows(log_dir):
    with open(log_dir / "logs" / "version_0" / "metrics.csv") as file:
        return [row for row in csv.DictReader(file) if row.get("train/loss")]


def test_sft_then_dpo_pipeline_and_resume(tiny_model_dir, tmp_path, capsys):
    sft_data = write_jsonl(tmp_path / "sft.jsonl", SFT_ROWS)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIR_ROWS)
    out = tmp_path / "run"
    pipeline = {
        "output_dir": str(out),
        "stages": [
            {"class_path": "sft_research.pipelines.FitStage", "init_args": {"name": "sft", "fit": fit_config(tiny_model_dir, "sft_research.objectives.SFT", sft_data)}},
            {
                "class_path": "sft_research.pipelines.FitStage",
                "init_args": {"name": "dpo", "start_from": "sft", "fit": fit_config(tiny_model_dir, "sft_research.objectives.DPO", pairs)},
            },
        ],
    }
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(pipeline))
    finals = main(["pipeline", f"--config={config}"])
    assert finals == {"sft": out / "sft" / "hf_model", "dpo": out / "dpo" / "hf_model"}
    assert (out / "sft" / "hf_model" / "config.json").is_file() and (out / "dpo" / "hf_model" / "config.json").is_file()
    dpo_config = yaml.safe_load((out / "dpo" / "logs" / "version_0" / "config.yaml").read_text())
    assert dpo_config["model"]["pretrained"]["name_or_path"] == str(out / "sft" / "hf_model")
    assert dpo_config["model"]["reference"] is None  # defaults to the start model: stage 1's
    first = train_rows(out / "dpo")[0]
    assert float(first["train/rewards/margins"]) == pytest.approx(0.0, abs=1e-5), "the reference is stage 1's model"

    # Stage 1 done, stage 2 lost: a rerun resumes at stage 2.
    import shutil

    shutil.rmtree(out / "dpo")
    capsys.readouterr()
    main(["pipeline", f"--config={config}"])
    printed = capsys.readouterr().out
    assert "stage sft: done already" in printed and "stage dpo: running" in printed
    assert not (out / "sft" / "logs" / "version_1").exists(), "stage 1 did not run again"
    assert (out / "dpo" / "hf_model" / "config.json").is_file()


def test_pipeline_checks_every_stage_before_running(tiny_model_dir, tmp_path):
    sft_data = write_jsonl(tmp_path / "sft.jsonl", SFT_ROWS)
    bad = fit_config(tiny_model_dir, "sft_research.objectives.DPO", sft_data)
    bad["model"]["optimizer"]["learning_rate"] = 1.0  # a typo
    pipeline = {
        "output_dir": str(tmp_path / "run"),
        "stages": [
            {"class_path": "sft_research.pipelines.FitStage", "init_args": {"name": "sft", "fit": fit_config(tiny_model_dir, "sft_research.objectives.SFT", sft_data)}},
            {"class_path": "sft_research.pipelines.FitStage", "init_args": {"name": "dpo", "start_from": "sft", "fit": bad}},
        ],
    }
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(pipeline))
    with pytest.raises(SystemExit):
        main(["pipeline", f"--config={config}"])
    assert not (tmp_path / "run" / "sft" / "hf_model").exists()


def test_irft_rounds(tiny_model_dir, tmp_path):
    demos = write_jsonl(tmp_path / "demos.jsonl", [{"prompt": r["prompt"], "completion": r["completion"]} for r in SFT_ROWS[:8]])
    out = tmp_path / "run"
    stage = {
        "name": "irft",
        "rounds": 2,
        "generation": {"max_new_tokens": 6, "do_sample": True, "temperature": 1.0, "top_p": 1.0},
        "fit": fit_config(tiny_model_dir, {"class_path": "sft_research.objectives.IRFT", "init_args": {"beta": 0.1}}, demos, steps=1),
    }
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump({"output_dir": str(out), "stages": [{"class_path": "sft_research.pipelines.IRFTStage", "init_args": stage}]}))
    finals = main(["pipeline", f"--config={config}"])
    assert finals == {"irft": out / "irft" / "round_1" / "hf_model"}
    for t in range(2):
        report = json.loads((out / "irft" / f"round_{t}" / "generation.json").read_text())
        pairs = [json.loads(line) for line in (out / "irft" / f"round_{t}" / "pairs.jsonl").read_text().splitlines()]
        assert report["prompts"] == 4 and report["pairs"] == len(pairs) == 4 - len(report["left_out_empty_generations"])
        assert report["generation"]["max_new_tokens"] == 6
        expected_prompts = [r["prompt"] for r in SFT_ROWS[4 * t : 4 * t + 4]]
        assert all(p["prompt"] in expected_prompts for p in pairs), "each round has its own half of the prompts"
        assert all(p["chosen"] == SFT_ROWS[expected_prompts.index(p["prompt"]) + 4 * t]["completion"] for p in pairs)
        first = train_rows(out / "irft" / f"round_{t}")[0]
        assert float(first["train/rewards/margins"]) == pytest.approx(0.0, abs=1e-5), "the reference is the round-start model"
    round1 = yaml.safe_load((out / "irft" / "round_1" / "logs" / "version_0" / "config.yaml").read_text())
    assert round1["model"]["pretrained"]["name_or_path"] == str(out / "irft" / "round_0" / "hf_model")
