"""SFT then DPO and IRFT rounds from one pipeline YAML, with resume."""

import csv
import json

import pytest
import yaml

from sft_research.cli.main import main
from sft_research.errors import ConfigError
from tests.conftest import PAIR_ROWS, SFT_ROWS, write_jsonl

pytestmark = pytest.mark.usefixtures("private_cache")


def fit_config(model, objective, data_path, steps=2):
    return {
        "seed_everything": 0,
        "trainer": {
            "max_steps": steps,
            "accelerator": "cpu",
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "enable_checkpointing": False,
        },
        "model": {"pretrained": {"name_or_path": str(model)}, "objective": objective, "optimizer": {"lr": 1e-3}},
        "data": {"train": {"class_path": "sft_research.data.FileDataset", "init_args": {"path": str(data_path)}}, "batch_size": 4},
    }


def train_rows(log_dir):
    with open(log_dir / "logs" / "version_0" / "metrics.csv") as file:
        return [row for row in csv.DictReader(file) if row.get("train/loss")]


@pytest.mark.slow
def test_sft_then_dpo_pipeline_and_resume(tiny_model_dir, tmp_path, capsys):
    sft_data = write_jsonl(tmp_path / "sft.jsonl", SFT_ROWS)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIR_ROWS)
    out = tmp_path / "run"
    pipeline = {
        "output_dir": str(out),
        "stages": [
            {
                "class_path": "sft_research.pipelines.FitStage",
                "init_args": {"name": "sft", "fit": fit_config(tiny_model_dir, "sft_research.objectives.SFT", sft_data)},
            },
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
    assert dpo_config["model"]["frozen"]["reference"] is None  # defaults to the start model: stage 1's
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
            {
                "class_path": "sft_research.pipelines.FitStage",
                "init_args": {"name": "sft", "fit": fit_config(tiny_model_dir, "sft_research.objectives.SFT", sft_data)},
            },
            {"class_path": "sft_research.pipelines.FitStage", "init_args": {"name": "dpo", "start_from": "sft", "fit": bad}},
        ],
    }
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(pipeline))
    with pytest.raises(
        ConfigError, match=r"stage 'dpo': Group 'model' does not accept option 'optimizer.learning_rate'; did you mean --model"
    ):
        main(["pipeline", f"--config={config}"])
    assert not (tmp_path / "run" / "sft" / "hf_model").exists()


def scripted_generations(monkeypatch):
    """Generations that the test controls: every fourth one stops at max_new_tokens without an end of turn."""
    from sft_research.model.generation import Generations
    from sft_research.pipelines import irft

    def fake(model, tokenizer, prompt_ids, attention_mask, config):
        assert next(model.parameters()).device.type == "cpu"
        finished = [n % 4 != 3 for n in range(len(prompt_ids))]
        # a finished one took 2 tokens and its end of turn; a cut one, max_new_tokens
        return Generations([f"{n}0" for n in range(len(prompt_ids))], finished, [3 if done else config.max_new_tokens for done in finished])

    monkeypatch.setattr(irft, "generate_with_status", fake)


@pytest.mark.slow
@pytest.mark.parametrize(
    "lora,unfinished", [(None, "drop"), ({"r": 4, "alpha": 8, "target_modules": "all-linear"}, "keep")], ids=["full-drop", "lora-keep"]
)
def test_irft_rounds(tiny_model_dir, tmp_path, monkeypatch, lora, unfinished):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    scripted_generations(monkeypatch)
    demos = write_jsonl(tmp_path / "demos.jsonl", [{"prompt": r["prompt"], "completion": r["completion"]} for r in SFT_ROWS[:8]])
    out = tmp_path / "run"
    fit = fit_config(tiny_model_dir, {"class_path": "sft_research.objectives.IRFT", "init_args": {"beta": 0.1}}, demos, steps=1)
    if lora is not None:
        fit["model"]["pretrained"]["lora"] = lora
    stage = {
        "name": "irft",
        "rounds": 2,
        "generation": {"max_new_tokens": 6, "do_sample": True},
        "generation_batch_size": 4,
        "unfinished": unfinished,
        "fit": fit,
    }
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        yaml.safe_dump({"output_dir": str(out), "stages": [{"class_path": "sft_research.pipelines.IRFTStage", "init_args": stage}]})
    )
    finals = main(["pipeline", f"--config={config}"])
    assert finals == {"irft": out / "irft" / "round_1" / "hf_model"}
    # The prompts in the official run's order, datasets' shuffle with the run's seed, before the split into rounds.
    shuffled = list(Dataset.from_list(SFT_ROWS[:8]).shuffle(seed=0))
    for t in range(2):
        report = json.loads((out / "irft" / f"round_{t}" / "generation.json").read_text())
        pairs = [json.loads(line) for line in (out / "irft" / f"round_{t}" / "pairs.jsonl").read_text().splitlines()]
        assert report["unfinished_generations"] == [3], "the generation cut at max_new_tokens is counted"
        assert report["prompts"] == 4 and report["pairs"] == len(pairs) == (3 if unfinished == "drop" else 4)
        assert report["generated_tokens"] == 3 * 3 + 6, "every generation counted, kept or not"
        assert report["device"] == "cpu" and report["generation"]["max_new_tokens"] == 6
        (record,) = (out / "irft" / f"round_{t}" / "logs").glob("version_*/compute.json")
        compute = json.loads(record.read_text())
        assert compute["generated_tokens"] == 3 * 3 + 6 and compute["computed_per_process"]["generated_prompts"] == [4]
        expected = shuffled[4 * t : 4 * t + len(pairs)]
        assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == [
            (r["prompt"], r["completion"], f"{n}0") for n, r in enumerate(expected)
        ]
        assert [p["rejected_finished"] for p in pairs] == [True, True, True, False][: len(pairs)]
        first = train_rows(out / "irft" / f"round_{t}")[0]
        assert float(first["train/rewards/margins"]) == pytest.approx(0.0, abs=1e-5), "the reference is the round-start model"
        # Each round ends with full weights (LoRA merged), which plain transformers loads and the next round starts from.
        model = AutoModelForCausalLM.from_pretrained(out / "irft" / f"round_{t}" / "hf_model")
        assert not any("lora" in name for name, _ in model.named_parameters())
    round1 = yaml.safe_load((out / "irft" / "round_1" / "logs" / "version_0" / "config.yaml").read_text())
    assert round1["model"]["pretrained"]["name_or_path"] == str(out / "irft" / "round_0" / "hf_model")


def test_irft_prompts_are_in_the_order_of_datasets_shuffle(tmp_path):
    """The official run shuffles its demonstrations with ``Dataset.shuffle(seed=42)`` before cutting them into rounds."""
    from datasets import Dataset

    from sft_research.pipelines.irft import round_rows

    rows = [{"prompt": f"{a} + {a} =", "completion": str(2 * a)} for a in range(50)]
    demos = Dataset.from_json(str(write_jsonl(tmp_path / "demos.jsonl", rows)))
    for seed in (42, 0):
        shuffled = [rows.index(row) for row in demos.shuffle(seed=seed)]
        assert round_rows(len(rows), seed, 1, 0) == shuffled
        assert [round_rows(len(rows), seed, 5, t) for t in range(5)] == [shuffled[10 * t : 10 * (t + 1)] for t in range(5)]
    assert round_rows(len(rows), 42, 1, 0) != sorted(round_rows(len(rows), 42, 1, 0))


def test_an_unfinished_rejected_answer_has_no_end_of_turn(tiny_tokenizer):
    from sft_research.data.records import parse_record
    from sft_research.data.sources import RawRecord
    from sft_research.data.tokenize import ChatTokenizer

    raw = RawRecord("pairs.jsonl", 1, {"prompt": "1 + 1 =", "chosen": "2", "rejected": "11 and", "rejected_finished": False})
    chosen, rejected = ChatTokenizer(tiny_tokenizer)(raw, parse_record(raw)).sequences
    trained = [tiny_tokenizer.decode([t for t, m in zip(s.input_ids, s.completion_mask) if m]) for s in (chosen, rejected)]
    assert trained == ["2<|im_end|>\n", "11 and"]
    assert tiny_tokenizer.decode(rejected.input_ids).endswith("<|im_start|>assistant\n11 and")
