"""Every config under experiments/ runs: ``sft-research rehearse`` takes each through the real run's code path on this
CPU (stand-in models, schema fixtures of hub data, 2 CPU processes where the config has several devices, 2 steps per
fit), and a config with a known defect fails there, early."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sft_research.rehearsal.plan import CPU_FSDP, plan

REPO = Path(__file__).parents[1]
EXPERIMENTS = sorted(REPO.glob("experiments/**/*.yaml"))
COMMAND = str(Path(sys.executable).with_name("sft-research"))


def rehearse(config: Path, output: Path, *options: str, **env) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [COMMAND, "rehearse", f"--config={config}", f"--output_dir={output}", *options],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
    )


def test_there_are_experiments():
    assert {path.parent.name for path in EXPERIMENTS} >= {"quickstart", "iw_sft", "poft", "dpo", "irft", "scale"}


@pytest.mark.slow
@pytest.mark.parametrize("path", EXPERIMENTS, ids=[str(p.relative_to(p.parents[1])) for p in EXPERIMENTS])
def test_every_experiment_config_rehearses(path, tmp_path):
    result = rehearse(path.relative_to(REPO), tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert f"rehearsal of {path.relative_to(REPO)} passed" in result.stdout
    if "ModelCheckpoint" in path.read_text():  # a config that keeps training states proves it can resume from one
        assert re.search(r"^resumed .* from its training state after step 1: .* every weight as unbroken$", result.stdout, re.M)
    finals = [p for p in tmp_path.rglob("hf_model") if (p / "config.json").is_file()]
    assert finals, "every fit exported its model"
    # The real run's checks ran first, then every fit's memory plan at full scale, and the end says what is untested.
    assert "checks before training: passed, with the real models' config.json" in result.stdout
    plans = re.findall(r"^    peak [\d.]+ GiB of [\d.]+ GiB a GPU \(gpu_memory_gb 80\): fits$|^    on CPUs: ", result.stdout, re.M)
    assert plans and len(plans) == len(re.findall(r"^  (?:fit|stage \S+): .*micro-batch \d+ x \d+ tokens", result.stdout, re.M))
    assert result.stdout.rstrip().splitlines()[-6] == "not tested by this rehearsal:"
    headers = [set(metrics.read_text().splitlines()[0].split(",")) for metrics in tmp_path.rglob("metrics.csv")]
    assert not any(header & {"train/tokens_per_s", "train/peak_memory_gib"} for header in headers)
    # Where training metrics were logged (log_every_n_steps within 2 steps), the stand-in's speed and memory were too.
    assert all({"stand_in/tokens_per_s", "stand_in/peak_memory_gib"} <= header for header in headers if "train/loss" in header)


@pytest.mark.slow
def test_an_fsdp_config_without_its_wrap_policy_fails_the_rehearsal_before_any_frozen_pass(tmp_path):
    config = yaml.safe_load((REPO / "experiments/iw_sft/full_scale.yaml").read_text())
    del config["trainer"]["strategy"]["init_args"]["auto_wrap_policy"]
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(config))
    cache = tmp_path / "cache"
    result = rehearse(broken, tmp_path / "out", SFT_RESEARCH_CACHE=str(cache))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("sft-research: error:")]
    assert errors and all("add its class Qwen2ForCausalLM" in line and "auto_wrap_policy" in line for line in errors)
    assert "Traceback" not in result.stderr
    assert not (cache / "frozen").exists(), "stopped before the reference's log-probs were computed"


def differences(before, after, path=""):
    """The dotted paths where two parsed YAML trees differ."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [
            d for key in before.keys() | after.keys() for d in differences(before.get(key), after.get(key), f"{path}.{key}".lstrip("."))
        ]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [d for i, (a, b) in enumerate(zip(before, after)) for d in differences(a, b, f"{path}[{i}]")]
    return [] if before == after else [path]


# What a rehearsal may change (models, hub data, devices, sizes, length); everything else stays as written.
MAY_CHANGE = (
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy.class_path",
    "trainer.max_steps",
    "trainer.max_epochs",
    "trainer.val_check_interval",
    "trainer.check_val_every_n_epoch",
    "data.batch_size",
    "data.micro_batch_size",
    "data.max_eval_prompts",
    "data.lengths.max_length",  # the block length of a config that packs blocks (plan.scale_blocks)
    "data.train.init_args.path",
    "data.val.init_args.path",
    "data.train.init_args.train_size",
    "data.val.init_args.train_size",
    "model.pretrained",
    "model.pretrained.name_or_path",
    "model.reference",
    "model.objective.init_args.baselines",
    "model.objective.init_args.baseline_chat_templates",
    "model.generation",
    "model.generation.max_new_tokens",
    "output_dir",
    "rounds",
    "generation.max_new_tokens",
    # the stand-in's speed and memory logged as such (RehearsalCSVLogger)
    "trainer.logger",
    "trainer.logger.class_path",
    # training states after every step, for the resume check
    "every_n_train_steps",
    "save_top_k",
    "filename",
)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[str(p.relative_to(p.parents[1])) for p in EXPERIMENTS])
def test_a_rehearsal_changes_only_models_data_devices_sizes_and_length(path, tmp_path):
    config = yaml.safe_load(path.read_text())
    rehearsal = plan(config, str(tmp_path))
    changed = differences(config, rehearsal.config)
    ignored = r"\[\d+\]$|(?<=baseline_chat_templates)\..*|^trainer\.callbacks\[\d+\]\.init_args\."
    settings = [re.sub(ignored, "", d.split("].init_args.", 1)[-1].removeprefix("fit.")) for d in changed]
    assert [d for d in settings if d not in MAY_CHANGE] == []
    assert rehearsal.changes and all(": " in line and " -> " in line for line in rehearsal.changes)


def test_batches_shrink_to_two_processes_keeping_gradient_accumulation(tmp_path):
    poft = plan(yaml.safe_load((REPO / "experiments/poft/full_scale.yaml").read_text()), str(tmp_path))
    trainer, data = poft.config["trainer"], poft.config["data"]
    assert (trainer["devices"], trainer["accelerator"], trainer["strategy"]["class_path"]) == (2, "cpu", CPU_FSDP)
    # 512 over 8 GPUs in micro-batches of 16: accumulation 4; here 2 processes, micro-batches of 2, accumulation 2.
    assert (data["batch_size"], data["micro_batch_size"]) == (8, 2)
    assert "fit: batch: 512 (micro-batch 16, accumulation 4) -> 8 (micro-batch 2, accumulation 2)" in poft.changes
    iw = plan(yaml.safe_load((REPO / "experiments/iw_sft/full_scale.yaml").read_text()), str(tmp_path))
    assert (iw.config["data"]["batch_size"], iw.config["data"]["micro_batch_size"]) == (2, 1)
    quickstart = plan(yaml.safe_load((REPO / "experiments/quickstart/sft.yaml").read_text()), str(tmp_path))
    assert quickstart.config["trainer"]["devices"] == 1 and quickstart.config["data"]["batch_size"] == 2


@pytest.mark.slow
def test_packing_and_chunked_log_probs_run_under_fsdp_with_the_unpacked_loss(tmp_path):
    """No config packs under FSDP yet; the FSDP config with packing on trains to the same first loss as without."""
    import csv

    config = yaml.safe_load((REPO / "experiments/scale/fsdp_gpus.yaml").read_text())
    config["trainer"]["log_every_n_steps"] = 1
    losses = {}
    for packing in (False, True):
        config["model"]["execution"] = {"packing": packing}
        path = tmp_path / f"packing_{packing}.yaml"
        path.write_text(yaml.safe_dump(config))
        result = rehearse(path, tmp_path / f"out_{packing}")
        assert result.returncode == 0, result.stderr[-4000:]
        with open(tmp_path / f"out_{packing}" / "logs" / "version_0" / "metrics.csv", newline="") as file:
            losses[packing] = [float(row["train/loss"]) for row in csv.DictReader(file) if row["train/loss"]]
    assert len(losses[True]) == 2 and losses[True][0] == pytest.approx(losses[False][0], abs=2e-2)


def test_a_micro_batch_over_a_process_share_is_the_same_error_in_the_rehearsal_and_the_real_run(tmp_path):
    """8 examples over 8 GPUs leave 1 a process: a micro-batch of 2 stops both with the real run's line (the
    rehearsal used to say "data.batch_size must be at least 1, got 0" after shrinking the batch)."""
    from sft_research.errors import ConfigError
    from sft_research.fit.lightning_cli import parse_fit

    config = yaml.safe_load((REPO / "experiments/iw_sft/full_scale.yaml").read_text())
    config["data"]["micro_batch_size"] = 2
    with pytest.raises(ConfigError) as rehearsed:
        plan(config, str(tmp_path))
    with pytest.raises(ConfigError) as real:
        parse_fit(config)  # the fit command's checks of its settings, before any process starts
    expected = "data.micro_batch_size=2 is larger than each process's share of the batch (data.batch_size=8 over 8 processes: 1)"
    assert str(rehearsed.value) == str(real.value) == expected


def memory_plans(config: dict, tmp_path):
    from sft_research.fit.run_checks import ModelFiles
    from sft_research.rehearsal.memory_plan import plan_config

    return plan_config(config, ModelFiles(configs=plan(config, str(tmp_path)).architectures))


def test_the_iw_sft_full_scale_config_fits_80_gb_gpus_by_the_memory_plan(tmp_path):
    """As written (FSDP with CPU offload, the reference scored one sequence at a time) it fits; as first written
    (no offload, 16 sequences a reference forward) it stops with one line naming each phase's largest term and what
    would make it fit. Hand check of the sharded state: 32.76B weights x 16 bytes (bf16 weight and gradient, float32
    master and two moments) / 8 GPUs = 61.0 GiB."""
    from sft_research.errors import ConfigError
    from sft_research.rehearsal.memory_plan import check_fits
    from sft_research.train.memory import GIB

    config = yaml.safe_load((REPO / "experiments/iw_sft/full_scale.yaml").read_text())
    (fits,) = memory_plans(config, tmp_path)
    assert fits.fits and fits.estimate.peak <= 80e9
    check_fits(fits)
    config["trainer"]["strategy"]["init_args"].pop("cpu_offload")
    config["model"].pop("frozen")
    (first,) = memory_plans(config, tmp_path)
    state = sum(first.estimate.term(name) for name in ("weights", "gradients", "float32 master weights", "optimizer states"))
    assert state == pytest.approx(first.model.parameters * 16 / 8) and round(state / GIB, 1) == 61.0
    with pytest.raises(ConfigError) as stopped:
        check_fits(first)
    line = str(stopped.value)
    assert "\n" not in line and line.startswith(
        "rehearse: fit: over a 80 GB GPU (74.5 GiB, gpu_memory_gb): the training step needs about 83.4 GiB"
    )
    assert "its largest term optimizer states (30.5 GiB): it would fit with trainer.strategy.init_args.cpu_offload: true" in line
    frozen = r"the frozen passes need about 1\d\d\.\d GiB, its largest term reference .*'s forward .*: it would fit with "
    assert re.search(frozen + "model.frozen.batch_size: 2", line)


def test_a_fit_without_activation_checkpointing_is_told_to_checkpoint(tmp_path):
    """The DPO pipeline's SFT stage (micro-batch 16 x 2048 packed tokens, Mistral-7B) fits only checkpointed."""
    from sft_research.errors import ConfigError
    from sft_research.rehearsal.memory_plan import check_fits

    config = yaml.safe_load((REPO / "experiments/dpo/full_scale.yaml").read_text())
    config["stages"][0]["init_args"]["fit"]["model"]["pretrained"]["gradient_checkpointing"] = False
    sft, dpo = memory_plans(config, tmp_path)
    assert dpo.fits and not sft.fits
    with pytest.raises(
        ConfigError, match=r"^rehearse: stage sft: .*its largest term activations .*model.pretrained.gradient_checkpointing"
    ):
        check_fits(sft)


def test_a_hub_model_without_a_shipped_stand_in_stands_in_from_the_hub_cache_or_a_given_config(tiny_model_dir, tmp_path, monkeypatch):
    """No package edit: a hub model whose config.json is in the local Hugging Face cache builds its stand-in (with a
    stand-in tokenizer when its own is not there), and so does a config.json the user gives, with their tokenizer."""
    import json

    from sft_research.rehearsal.standins import GivenFiles
    from tests.test_fit_checks import hub_cache_with_config

    monkeypatch.setenv("SFT_RESEARCH_CACHE", str(tmp_path / "cache"))
    real = json.loads((tiny_model_dir / "config.json").read_text())
    hub_cache_with_config(tmp_path / "hub", "some-org/tiny-llama", real, monkeypatch)
    config = yaml.safe_load((REPO / "experiments/quickstart/sft.yaml").read_text())
    config["model"]["pretrained"]["name_or_path"] = "some-org/tiny-llama"
    cached = plan(config, str(tmp_path))
    described = "fit: model: some-org/tiny-llama -> tiny random LlamaForCausalLM from its config.json from the Hugging Face"
    assert any(line.startswith(f"{described} cache, a stand-in tokenizer") for line in cached.changes)
    assert cached.architectures["some-org/tiny-llama"] == real and cached.stand_in_tokenizers == ["some-org/tiny-llama"]
    config["model"]["pretrained"]["name_or_path"] = "other-org/not-cached"
    given = GivenFiles({"other-org/not-cached": str(tiny_model_dir / "config.json")}, {"other-org/not-cached": str(tiny_model_dir)})
    pointed = plan(config, str(tmp_path), given)
    assert (
        "fit: model: other-org/not-cached -> tiny random LlamaForCausalLM from the config.json given, the model's own tokenizer"
        in pointed.changes
    )
    assert pointed.stand_in_tokenizers == []


@pytest.mark.slow
def test_a_rehearsal_of_a_model_given_by_its_config_runs_and_says_its_length_error_is_a_stand_in_count(tiny_model_dir, tmp_path):
    """The command with --model_config: the rehearsal passes; with a stand-in tokenizer (no --tokenizer) and a
    max_length its rows overrun, the length error says whose count it is."""
    config = yaml.safe_load((REPO / "experiments/quickstart/sft.yaml").read_text())
    config["model"]["pretrained"]["name_or_path"] = "other-org/not-cached"
    path = tmp_path / "hub_model.yaml"
    path.write_text(yaml.safe_dump(config))
    given = f"--model_config=other-org/not-cached={tiny_model_dir / 'config.json'}"
    result = rehearse(path, tmp_path / "out", given, f"--tokenizer=other-org/not-cached={tiny_model_dir}", HF_HUB_OFFLINE="1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the models' own tokenizers counted the tokens above" in result.stdout
    config["data"]["lengths"] = {"max_length": 8}
    path.write_text(yaml.safe_dump(config))
    result = rehearse(path, tmp_path / "short", given, HF_HUB_OFFLINE="1")
    assert result.returncode == 2
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("sft-research: error:")]
    assert "over max_length=8" in error and "[tokens counted by the rehearsal's stand-in tokenizer of other-org/not-cached" in error
