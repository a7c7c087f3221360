"""The GPU tests are skipped here, so nothing else would notice their helpers drifting from the module's API: build
every module they train, and run their validation capture on the CPU."""

import pytest

from tests.conftest import SFT_ROWS, quiet_trainer, write_jsonl
from tests.test_gpu import ValidationLogprobs, gpu_module

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
