"""Settings refused before any model loads, each with one line that names the setting and what to use instead; and
what a fit or validate does with settings that would silently do nothing."""

import os

import pytest

from sft_research.cli.main import main
from sft_research.errors import ConfigError
from tests.conftest import SFT_ROWS, file_fit_args, write_jsonl

pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture
def no_model_load(monkeypatch):
    """Any model load fails the test: the checks must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the settings were checked")

    monkeypatch.setattr("sft_research.train.module.load_model", refuse)


@pytest.mark.parametrize(
    "setting,message",
    [
        (
            "--trainer.accumulate_grad_batches=2",
            r"--trainer.accumulate_grad_batches 2: not used by this module; set data.micro_batch_size instead",
        ),
        ("--trainer.gradient_clip_val=0.5", r"--trainer.gradient_clip_val 0.5: not used by this module; set model.optimizer.max_grad_norm"),
        ("--trainer.max_steps=0", r"--trainer.max_steps 0: nothing would be trained; `sft-research validate` evaluates a model"),
        ("--trainer.max_steps=-5", r"^--trainer.max_steps -5: the optimizer steps to train, or -1 for no limit$"),
        ("--trainer.max_epochs=-2", r"^--trainer.max_epochs -2: the epochs to train, or -1 for no limit$"),
        (
            "--data.lengths.max_length=100000",
            r"--data.lengths.max_length 100000: .* takes at most 2048 positions \(max_position_embeddings\)",
        ),
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_batch_larger_than_the_data_warns(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS[:3])
    with pytest.warns(UserWarning, match=r"data.batch_size 4 is larger than the 3 training examples: every step trains on all of them"):
        main(["fit", *file_fit_args(tiny_model_dir, path, tmp_path, 1)])


@pytest.mark.slow
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


def hub_cache_with_config(root, repo_id: str, config: dict, monkeypatch):
    """A local Hugging Face hub cache (``HF_HUB_CACHE``) that holds one model's config.json and nothing else, laid out
    as huggingface_hub lays it out: ``models--org--name/refs/main`` naming a snapshot that holds the file. The hub
    itself is out of reach."""
    import json

    import huggingface_hub.constants

    from sft_research.checkpoints import hub

    revision = "0123456789abcdef0123456789abcdef01234567"
    folder = root / f"models--{repo_id.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    (folder / "snapshots" / revision).mkdir(parents=True)
    (folder / "snapshots" / revision / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    monkeypatch.setattr("sft_research.checkpoints.names.hub_reachable", lambda: False)


@pytest.mark.parametrize(
    "settings,message",
    [
        (
            # An FSDP config whose wrap policy lacks the causal LM's class: caught before 8 ranks load and wrap 32B.
            ["--trainer.strategy=fsdp", "--trainer.devices=8"],
            r"under FSDP the model must be wrapped as a unit of its own: add its class LlamaForCausalLM .* auto_wrap_policy",
        ),
        (
            ["--model.pretrained.lora.r=4", "--model.pretrained.lora.target_modules=[q_proj,query_key_value]"],
            r"--model.pretrained.lora.target_modules: \['query_key_value'\] match no module of some-org/tiny-llama; "
            r"its linear layers are \['down_proj', 'gate_proj', 'k_proj', 'lm_head', 'o_proj', 'q_proj', 'up_proj', 'v_proj'\]",
        ),
        (["--data.lengths.max_length=4096"], r"--data.lengths.max_length 4096: some-org/tiny-llama takes at most 2048 positions"),
    ],
)
def test_a_hub_model_is_checked_from_its_config_in_the_hub_cache_before_any_weights_load(
    tiny_model_dir, tmp_path, monkeypatch, capsys, settings, message
):
    """The real run checks a hub id as it checks a local folder: its config.json (here in a local hub cache made
    for the test, the hub out of reach) gives the architecture, and each defect stops the command in one line before
    any weights or tokenizer load."""
    import json
    import re
    import sys

    from sft_research.checkpoints import names
    from sft_research.cli.main import console
    from sft_research.train import module

    hub_cache_with_config(tmp_path / "hub", "some-org/tiny-llama", json.loads((tiny_model_dir / "config.json").read_text()), monkeypatch)
    monkeypatch.setattr(module, "load_model", lambda *a, **k: pytest.fail("weights were loaded before the check"))
    monkeypatch.setattr(names, "load_tokenizer", lambda *a, **k: pytest.fail("a tokenizer was loaded before the check"))
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    args = file_fit_args("some-org/tiny-llama", path, tmp_path, 1)
    monkeypatch.setattr(sys, "argv", ["sft-research", "fit", *[a for a in args if "accelerator" not in a], *settings])
    with pytest.raises(SystemExit) as stopped:
        console()
    assert stopped.value.code == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("sft-research: error: "), errors
    assert re.search(message, errors[0]), errors[0]


def test_the_same_hub_model_passes_the_checks_when_its_settings_fit(tiny_model_dir, tmp_path, monkeypatch):
    """The control: with settings the architecture allows, the checks pass and the fit goes on to load the model
    (which the cache, holding no weights, then cannot give)."""
    import json

    from sft_research.fit.lightning_cli import parse_fit
    from sft_research.train.config_checks import check_fit_config

    hub_cache_with_config(tmp_path / "hub", "some-org/tiny-llama", json.loads((tiny_model_dir / "config.json").read_text()), monkeypatch)
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    config = {
        "model": {"pretrained": {"name_or_path": "some-org/tiny-llama", "lora": {"r": 4, "target_modules": ["q_proj", "v_proj"]}}},
        "data": {
            "train": {"class_path": "sft_research.data.FileDataset", "init_args": {"path": str(path)}},
            "lengths": {"max_length": 2048},
        },
    }
    from sft_research.checkpoints.names import model_config

    check_fit_config("fit", parse_fit(config), model_config)
    assert model_config("some-org/tiny-llama")["architectures"] == ["LlamaForCausalLM"]


def test_minus_one_is_no_limit_and_a_negative_step_count_is_one_line(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """Lightning's -1 (no limit) parses; -5 after a space on the command line is one line, not a traceback."""
    from sft_research.cli.main import console
    from sft_research.fit.lightning_cli import parse_fit

    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    config = {
        "model": {"pretrained": {"name_or_path": str(tiny_model_dir)}},
        "data": {"train": {"class_path": "sft_research.data.FileDataset", "init_args": {"path": str(path)}}},
        "trainer": {"max_steps": -1, "max_epochs": 1},
    }
    assert parse_fit(config).trainer.max_steps == -1
    monkeypatch.setattr("sys.argv", ["sft-research", "fit", *file_fit_args(tiny_model_dir, path, tmp_path, 2), "--trainer.max_steps", "-5"])
    with pytest.raises(SystemExit):
        console()
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("sft-research: error: --trainer.max_steps -5: the optimizer steps to train, or -1 for no limit (")
