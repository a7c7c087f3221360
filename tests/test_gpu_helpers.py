"""The GPU tests are skipped here, so nothing else would notice their helpers drifting from the module's API: build
every module they train, run their validation capture and their bf16 checks (inv_freq at every step, float32 masters)
on the CPU, show that the inv_freq check catches a rounded inv_freq, and keep the GPU suite's CPU rehearsal
(benchmarks/gpu/tiny_suite.yaml) the same suite as part 3's at toy sizes. And benchmarks/gpu/check.sh itself: a
part's rehearsal passes, and a failed stage fails the part."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from tests.conftest import SFT_ROWS, quiet_trainer, write_jsonl
from tests.test_fp32_buffers import build_long_rope_model, exact_inv_freq
from tests.test_gpu import ValidationLogprobs, check_inv_freq_every_step, check_masters_move, gpu_module

REPO = Path(__file__).parents[1]
# Every execution setting the GPU tests pass to fit().
SETTINGS = [{"packing": False}, {"packing": True}, {"logprob_chunk_size": None}, {"logprob_chunk_size": 1024, "compile": True}]


@pytest.mark.parametrize("execution", SETTINGS, ids=str)
def test_the_gpu_tests_modules_build_on_the_current_api(tiny_model_dir, tmp_path, execution):
    module = gpu_module(tiny_model_dir, tmp_path, **execution)
    assert all(getattr(module.execution, name) == value for name, value in execution.items())
    assert module.optimizer_config.max_grad_norm is None


@pytest.mark.slow
def test_the_fsdp_tests_validation_capture_runs(tiny_model_dir, tmp_path):
    from sft_research.data import FileDataset, SFTDataModule
    from sft_research.model.loading import ModelConfig
    from sft_research.objectives import SFT
    from sft_research.train.optim import OptimizerConfig

    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    module = ValidationLogprobs(ModelConfig(str(tiny_model_dir)), SFT(), OptimizerConfig(lr=1e-2), save_dir=str(tmp_path / "hf_model"))
    module.captured = []
    data = SFTDataModule(FileDataset(str(path)), val=FileDataset(str(path)), tokenizer=str(tiny_model_dir), batch_size=4, eval_batch_size=4)
    trainer = quiet_trainer(tmp_path, max_steps=1, limit_val_batches=1, num_sanity_val_steps=0, val_check_interval=1)
    trainer.fit(module, data)
    batch, logps = module.captured[0]
    assert logps.shape[:2] == batch["input_ids"].shape[:2] and (logps[batch["loss_mask"]] < 0).all()


@pytest.fixture(scope="module")
def rope_model(tiny_model_dir, tmp_path_factory) -> Path:
    return build_long_rope_model(tmp_path_factory.mktemp("rope") / "model", tiny_model_dir)


@pytest.mark.slow
@pytest.mark.parametrize("compile_step", [False, True], ids=["eager", "compiled"])
def test_the_inv_freq_check_passes_on_the_cpu(rope_model, tmp_path, compile_step):
    # Compiled, one step: one batch shape, one graph (each costs about 20 s of compilation on 2 cores).
    check_inv_freq_every_step(rope_model, tmp_path, "cpu", compile_step, steps=1 if compile_step else 4)


class RoundInvFreq(Callback):
    """The defect the check is for, after the first step: inv_freq still float32 (so nothing restores it), but with
    bf16-rounded values."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        pl_module.model.model.rotary_emb.inv_freq = exact_inv_freq().to(torch.bfloat16).float()


@pytest.mark.slow
def test_the_inv_freq_check_catches_a_rounded_inv_freq(rope_model, tmp_path):
    with pytest.raises(AssertionError, match="inv_freq before step 2 does not hold its float32 values"):
        check_inv_freq_every_step(rope_model, tmp_path, "cpu", compile_step=False, steps=2, callbacks=[RoundInvFreq()])


@pytest.mark.slow
def test_the_masters_check_passes_on_the_cpu(tiny_model_dir, tmp_path):
    check_masters_move(tiny_model_dir, tmp_path, "cpu")


def test_the_tiny_suite_is_part_3s_suite_at_toy_sizes():
    tiny, part3 = (yaml.safe_load((REPO / "benchmarks/gpu" / name).read_text()) for name in ("tiny_suite.yaml", "suite_part3.yaml"))
    gpu = yaml.safe_load((REPO / "sft_research/bench/suites/gpu.yaml").read_text())
    assert tiny["seeds"] == part3["seeds"] == gpu["seeds"] == [0, 1, 2]
    assert [arm["init_args"]["name"] for arm in tiny["arms"]] == [arm["init_args"]["name"] for arm in part3["arms"]]
    assert [arm["class_path"] for arm in tiny["arms"]] == [arm["class_path"] for arm in part3["arms"]]
    assert [probe["class_path"] for probe in tiny["probes"]] == [probe["class_path"] for probe in part3["probes"]]
    # Part 3 is gpu.yaml shrunk: the same arms, probes, task and model, only sizes and steps smaller.
    assert [arm["init_args"]["name"] for arm in part3["arms"]] == [arm["init_args"]["name"] for arm in gpu["arms"]]
    assert [probe["class_path"] for probe in part3["probes"]] == [probe["class_path"] for probe in gpu["probes"]]
    assert part3["base_model"] == gpu["base_model"] and part3["task"]["task"] == gpu["task"]["task"]
    assert part3["budget"]["max_steps"] < gpu["budget"]["max_steps"] and part3["task"]["train_size"] < gpu["task"]["train_size"]


def rehearse(part: str, out: Path, *arguments: str, **env: str) -> subprocess.CompletedProcess:
    """``DRY_RUN=1 bash benchmarks/gpu/check.sh OUT PART ARGUMENTS`` with this test's Python and its own cache."""
    variables = {**os.environ, "DRY_RUN": "1", "PY": sys.executable, "SFT_RESEARCH_CACHE": str(out / "cache"), **env}
    command = ["bash", str(REPO / "benchmarks/gpu/check.sh"), str(out / "part"), part, *arguments]
    return subprocess.run(command, env=variables, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_part_1s_rehearsal_is_done(tmp_path):
    done = rehearse("part1", tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]
    report = json.loads((tmp_path / "part/check.json").read_text())
    assert report["done"] and report["dry_run"] and report["stages"]["pytest"]["exit"] == 0
    assert len(report["tests"]) >= 13 and {test["outcome"] for test in report["tests"].values()} == {"skipped"}


@pytest.mark.slow
def test_part_2as_rehearsal_is_done(tiny_model_dir, tmp_path):
    """The headline SFT part at toy sizes, its GPU-only and compiled settings as CPU stand-ins: our packed step (profiled)
    against TRL padded and TRL packed with SDPA, every row with its ratio, MFU and peak memory."""
    done = rehearse("part2a", tmp_path, TOKENIZER=str(tiny_model_dir))
    assert done.returncode == 0, done.stdout[-3000:]
    report = json.loads((tmp_path / "part/check.json").read_text())
    assert report["done"] and report["stages"]["compare_trl"]["exit"] == 0
    rows = {(row["framework"], row["setting"]): row for row in report["compare_trl"]["rows"]}
    assert set(rows) == {("ours", "packed"), ("trl", "padded"), ("trl", "packed_sdpa")}
    assert all(row["tokens_per_s"] > 0 and row["mfu"] > 0 and row["peak_gib"] > 0 for row in rows.values())
    assert max(row["vs_trl_fastest"] for (framework, _), row in rows.items() if framework == "trl") == 1.0
    assert "top operators" in (tmp_path / "part/sft_step_profile.txt").read_text()


@pytest.mark.slow
def test_a_failed_stage_fails_the_part(tiny_model_dir, tmp_path):
    """compare_trl.py refuses an unknown setting before it builds anything: the stage exits 2, the part 1."""
    done = rehearse("part2a", tmp_path, "--settings", "trl:no_such_setting", TOKENIZER=str(tiny_model_dir))
    assert done.returncode == 1, done.stdout[-3000:]
    report = json.loads((tmp_path / "part/check.json").read_text())
    assert not report["done"] and report["problems"] == ["stage compare_trl exited 2"]
    assert "unknown settings ['trl:no_such_setting']" in (tmp_path / "part/check.log").read_text()
