"""Non-finite guards and up-front checks."""

import math
import os
import socket

import lightning as L
import pytest
import torch

from sft_research.data import FileDataset, SFTDataModule
from sft_research.errors import PreflightError
from sft_research.model.loading import ModelConfig
from sft_research.objectives import SFT
from sft_research.train.module import FineTuningModule
from sft_research.train.nonfinite import NonFiniteError
from sft_research.train.optim import OptimizerConfig
from tests.conftest import ROWS, write_jsonl


def poisoned_data(tiny_model_dir, tmp_path, poisoned_id=5):
    data = SFTDataModule(FileDataset(str(write_jsonl(tmp_path / "d.jsonl", ROWS))), tokenizer=str(tiny_model_dir), batch_size=4)
    data.setup("fit")
    # Past the data checks, as a corrupted cache or a bug upstream would be: the batch itself carries the NaN.
    data.train_examples[poisoned_id].quality = math.nan
    data.setup = lambda stage: None
    return data


def trainer(tmp_path, **kwargs):
    return L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path, **kwargs)


class PoisonAfterFirstEpoch(L.Callback):
    def __init__(self, data):
        self.data = data

    def on_train_epoch_end(self, trainer, module):
        self.data.train_examples[5].quality = math.nan


@pytest.mark.slow
def test_nonfinite_loss_stops_with_step_ids_and_diagnostics_and_keeps_the_last_checkpoint(tiny_model_dir, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    data = poisoned_data(tiny_model_dir, tmp_path)
    data.train_examples[5].quality = 1.0  # clean in the first epoch, so that good checkpoints exist
    module = FineTuningModule(ModelConfig(str(tiny_model_dir)), SFT(use_quality=True), OptimizerConfig(lr=1e-3))
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1)
    run = trainer(tmp_path, max_epochs=3, callbacks=[checkpoints, PoisonAfterFirstEpoch(data)])
    L.seed_everything(0)
    with pytest.raises(NonFiniteError) as info:
        run.fit(module, data)
    message = str(info.value)
    assert "non-finite loss at step" in message and "5" in message.split("example ids")[1].split("]")[0]
    assert "diagnostics {'nll':" in message and "'quality': nan" in message
    step = int(message.split("at step ")[1].split(":")[0])
    saved = sorted(os.listdir(tmp_path / "ckpt"))
    assert saved and all(f"step={step + 1}" not in name for name in saved), "no checkpoint of the bad step"
    last = torch.load(tmp_path / "ckpt" / saved[-1], weights_only=False)
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values()), "the last checkpoint is intact"


@pytest.mark.slow
def test_nonfinite_batches_can_be_skipped_and_are_counted(tiny_model_dir, tmp_path):
    data = poisoned_data(tiny_model_dir, tmp_path)
    module = FineTuningModule(ModelConfig(str(tiny_model_dir)), SFT(use_quality=True), OptimizerConfig(lr=1e-3), on_nonfinite="skip")
    run = trainer(tmp_path, max_epochs=2, enable_checkpointing=False)
    L.seed_everything(0)
    with pytest.warns(UserWarning, match="skipped batch 1"):
        run.fit(module, data)
    assert module.skipped_batches == 2  # the poisoned example is in one batch of each epoch
    assert run.global_step == 2 * 2 - 2, "skipped batches make no optimizer step"
    assert all(torch.isfinite(p).all() for p in module.model.parameters())
    assert run.callback_metrics["train/skipped_batches"] == 2


def test_unwritable_output_fails_before_training(tiny_model_dir, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    data = poisoned_data(tiny_model_dir, tmp_path)
    module = FineTuningModule(ModelConfig(str(tiny_model_dir)), save_dir=str(blocked / "model"))
    with pytest.raises(PreflightError, match="model output folder .* is not writable"):
        trainer(tmp_path, max_steps=1, enable_checkpointing=False).fit(module, data)
    assert module.global_step == 0


def test_full_disk_fails_before_training(tiny_model_dir, tmp_path, monkeypatch):
    import shutil

    from sft_research.train.callbacks import preflight

    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    data = poisoned_data(tiny_model_dir, tmp_path)
    module = FineTuningModule(ModelConfig(str(tiny_model_dir)))
    with pytest.raises(PreflightError, match=r"has 0.00 GiB free, but one checkpoint needs about"):
        trainer(tmp_path, max_steps=1).fit(module, data)


def test_more_devices_than_exist_fail_before_training(tiny_model_dir, tmp_path):
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from sft_research.cli.main import main

    # without a GPU there is no backend at all; with one, two are more than it has
    with pytest.raises(MisconfigurationException, match="No supported gpu backend found|But your machine only has"):
        main(
            [
                "fit",
                f"--model.pretrained.name_or_path={tiny_model_dir}",
                "--data.train=sft_research.data.ReasoningGymTask",
                "--trainer.accelerator=gpu",
                "--trainer.devices=2",
                f"--trainer.default_root_dir={tmp_path}",
            ]
        )


def test_fsdp_without_the_model_as_a_unit_is_refused_before_the_first_step():
    """FSDP itself cannot run here; the check sees the strategy and the unwrapped model, and names the fix."""
    from lightning.pytorch.strategies import FSDPStrategy

    from sft_research.errors import ConfigError
    from sft_research.model.fsdp import check_fsdp_wrapping

    model = torch.nn.Linear(2, 2)
    with pytest.raises(ConfigError, match=r"add torch.nn.modules.linear.Linear to the strategy's auto_wrap_policy"):
        check_fsdp_wrapping(FSDPStrategy(), model)
    with pytest.raises(ConfigError, match=r"model.pretrained.lora is not supported under FSDP .*trainer.strategy: ddp"):
        check_fsdp_wrapping(FSDPStrategy(), model, uses_lora=True)
    check_fsdp_wrapping(object(), model, uses_lora=True)  # any other strategy: nothing to check


def test_the_fsdp_wrap_policy_is_checked_from_the_config_before_any_model_loads():
    """The causal LM class, as the checkpoint's config.json names it, must be in the policy; a policy given as a function
    is checked once the model is wrapped; LoRA is refused."""
    from lightning.pytorch.strategies import FSDPStrategy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaForCausalLM

    from sft_research.errors import ConfigError
    from sft_research.model.fsdp import check_fsdp_policy

    with pytest.raises(ConfigError, match=r"add its class LlamaForCausalLM .* to the strategy's auto_wrap_policy"):
        check_fsdp_policy(FSDPStrategy(auto_wrap_policy={LlamaDecoderLayer}), "LlamaForCausalLM")
    with pytest.raises(ConfigError, match=r"add its class LlamaForCausalLM"):
        check_fsdp_policy(FSDPStrategy(), "LlamaForCausalLM")
    check_fsdp_policy(FSDPStrategy(auto_wrap_policy={LlamaDecoderLayer, LlamaForCausalLM}), "LlamaForCausalLM")
    check_fsdp_policy(FSDPStrategy(auto_wrap_policy=lambda module, recurse, nonwrapped_numel: False), "LlamaForCausalLM")
    with pytest.raises(ConfigError, match="lora is not supported under FSDP"):
        check_fsdp_policy(FSDPStrategy(auto_wrap_policy={LlamaForCausalLM}), "LlamaForCausalLM", uses_lora=True)
    check_fsdp_policy(object(), "LlamaForCausalLM")


def test_a_model_wrapped_by_fsdp_saves_its_gathered_weights(tiny_model_dir, tmp_path, monkeypatch):
    """FSDP flattens the model's parameters into its units (on the H100, transformers' save then found none to read a
    dtype from); the export goes through a plain copy holding the gathered weights, which reloads to the same model.
    One CPU process under gloo, with Lightning's FSDP setting (use_orig_params)."""
    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel, StateDictType
    from transformers import AutoModelForCausalLM

    from sft_research.model.fsdp import savable

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    with socket.socket() as free:  # a port no other test process holds
        free.bind(("127.0.0.1", 0))
        monkeypatch.setenv("MASTER_PORT", str(free.getsockname()[1]))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        wrapped = FullyShardedDataParallel(model, device_id=torch.device("cpu"), use_orig_params=True)
        with FullyShardedDataParallel.state_dict_type(wrapped, StateDictType.FULL_STATE_DICT):
            state = wrapped.state_dict()
        savable(wrapped, state).save_pretrained(tmp_path / "out", state_dict=state)
    finally:
        dist.destroy_process_group()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.tensor([[1, 5, 9, 2, 7]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, original(input_ids=ids).logits)
    with pytest.raises(ValueError, match="saved from its gathered state dict"):
        savable(wrapped, None)
