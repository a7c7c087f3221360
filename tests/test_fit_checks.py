"""Settings refused before any model loads, each with one line that names the setting and what to use instead; and
what a fit or validate does with settings that would silently do nothing."""

import os

import pytest

from sft_research.cli import main
from sft_research.errors import ConfigError
from tests.conftest import SFT_ROWS, file_fit_args, write_jsonl

pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture
def no_model_load(monkeypatch):
    """Any model load fails the test: the checks must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the settings were checked")

    monkeypatch.setattr("sft_research.module.load_model", refuse)


@pytest.mark.parametrize(
    "setting,message",
    [
        (
            "--trainer.accumulate_grad_batches=2",
            r"--trainer.accumulate_grad_batches 2: not used by this module; set data.micro_batch_size instead",
        ),
        ("--trainer.gradient_clip_val=0.5", r"--trainer.gradient_clip_val 0.5: not used by this module; set model.optimizer.max_grad_norm"),
        ("--trainer.max_steps=0", r"--trainer.max_steps 0: nothing would be trained; `sft-research validate` evaluates a model"),
        ("--data.max_length=100000", r"--data.max_length 100000: .* takes at most 2048 positions \(max_position_embeddings\)"),
        ("--model.pretrained.lora.r=0", r"--model.pretrained.lora.r 0: the adapters' rank must be at least 1"),
        ("--model.pretrained.lora.dropout=1.5", r"--model.pretrained.lora.dropout 1.5: must be in \[0, 1\)"),
        (
            "--model.pretrained.lora.target_modules=[q_proj,qkv]",
            r"--model.pretrained.lora.target_modules: \['qkv'\] match no module of .*; its linear layers are \['down_proj', .*'q_proj'",
        ),
    ],
)
def test_a_setting_that_cannot_work_stops_before_any_model_loads(tiny_model_dir, tmp_path, no_model_load, setting, message):
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    with pytest.raises(ConfigError, match=message):
        main(["fit", *file_fit_args(tiny_model_dir, path, tmp_path, 2), setting])
    assert not list(tmp_path.rglob("version_*")), "no run folder is left behind"


def test_validate_without_held_out_data_stops_and_validate_needs_no_training_data(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    args = [
        f"--model.pretrained.name_or_path={tiny_model_dir}",
        "--trainer.accelerator=cpu",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]
    with pytest.raises(ConfigError, match=r"validate needs held-out data: --data.val .*--data.val_fraction.*ReasoningGymTask"):
        main(["validate", *args, "--data.train=sft_research.data.FileDataset", f"--data.train.path={path}"])
    with pytest.raises(ConfigError, match=r"fit needs training data: --data.train"):
        main(["fit", *args])
    cli = main(
        ["validate", *args, "--data.val=sft_research.data.FileDataset", f"--data.val.path={path}", "--trainer.logger.init_args.name=run"]
    )
    assert cli.trainer.callback_metrics["val/loss"] > 0
    main(["fit", *file_fit_args(tiny_model_dir, path, tmp_path, 1), "--trainer.logger.init_args.name=run"])
    main(["validate", *args, "--data.val=sft_research.data.FileDataset", f"--data.val.path={path}", "--trainer.logger.init_args.name=run"])
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["validate_0", "validate_1", "version_0"], "evaluations take no version"


def test_a_batch_larger_than_the_data_warns(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS[:3])
    with pytest.warns(UserWarning, match=r"data.batch_size 4 is larger than the 3 training examples: every step trains on all of them"):
        main(["fit", *file_fit_args(tiny_model_dir, path, tmp_path, 1)])


def test_a_lora_fit_with_activation_checkpointing_prints_no_warning(tiny_model_dir, tmp_path):
    """What a run prints: its own lines (data, model, outputs), nothing from the libraries it does not act on."""
    import subprocess
    import sys

    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    args = [
        *file_fit_args(tiny_model_dir, path, tmp_path, 2),
        "--model.pretrained.lora.r=4",
        "--model.pretrained.gradient_checkpointing=true",
    ]
    env = {**os.environ, "SFT_RESEARCH_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "sft_research.cli", "fit", *args], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = done.stderr.splitlines()
    assert not [line for line in printed if "Warning" in line or "available:" in line], printed
    assert any(line.startswith("outputs: ") for line in printed)
