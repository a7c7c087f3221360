"""The GPU tests are skipped here, so nothing else would notice their helpers drifting from the module's API: build
every module they train, run their validation capture and their bf16 checks (inv_freq at every step, float32 masters)
on the CPU, show that the inv_freq check catches a rounded inv_freq, and keep the GPU suite's CPU rehearsal
(benchmarks/gpu/tiny_suite.yaml) the same suite as part 3's at toy sizes."""

from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from tests.conftest import SFT_ROWS, quiet_trainer, write_jsonl
from tests.test_fp32_buffers import exact_inv_freq
from tests.test_gpu import ValidationLogprobs, build_rope_model, check_inv_freq_every_step, check_masters_move, gpu_module

REPO = Path(__file__).parents[1]
# Every execution setting the GPU tests pass to fit().
SETTINGS = [{"packing": False}, {"packing": True}, {"logprob_chunk_size": None}, {"logprob_chunk_size": 1024, "compile": True}]


@pytest.mark.parametrize("execution", SETTINGS, ids=str)
def test_the_gpu_tests_modules_build_on_the_current_api(tiny_model_dir, tmp_path, execution):
    module = gpu_module(tiny_model_dir, tmp_path, **execution)
    assert all(getattr(module.execution, name) == value for name, value in execution.items())
    assert module.optimizer_config.max_grad_norm is None


def test_the_fsdp_tests_validation_capture_runs(tiny_model_dir, tmp_path):
    from sft_research.data import FileDataset, SFTDataModule
    from sft_research.model.loading import ModelConfig
    from sft_research.objectives import SFT
    from sft_research.optim import OptimizerConfig

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
    return build_rope_model(tmp_path_factory.mktemp("rope") / "model", tiny_model_dir)


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
