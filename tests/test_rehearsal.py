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


def rehearse(config: Path, output: Path, **env) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [COMMAND, "rehearse", f"--config={config}", f"--output_dir={output}"],
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
    "data.max_length",  # the block length of a config that packs blocks (plan.scale_blocks)
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
