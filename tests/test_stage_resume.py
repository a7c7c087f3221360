"""A pipeline stage (or IRFT round) run again after it was cut short continues from its last training state, and ends
where an unbroken run ends; training states are saved in each fit's own folder."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

from sft_research.checkpoints.training_state import saved_step
from sft_research.fit.run import in_run_dir, run_fit
from tests.conftest import SFT_ROWS, write_jsonl

pytestmark = pytest.mark.slow


def fit_config(model, data, steps: int) -> dict:
    checkpoint = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"every_n_train_steps": 1, "save_last": True, "save_top_k": -1, "filename": "{step}"},
    }
    return {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "max_steps": steps,
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "callbacks": [checkpoint],
        },
        "model": {"pretrained": {"name_or_path": str(model)}, "optimizer": {"lr": 1e-3}},
        "data": {"train": {"class_path": "sft_research.data.FileDataset", "init_args": {"path": str(data)}}, "batch_size": 4},
    }


def test_each_fit_keeps_its_states_in_its_own_folder(tmp_path):
    config = in_run_dir(fit_config("m", "d.jsonl", 1), tmp_path / "stage")
    assert config["trainer"]["callbacks"][0]["init_args"]["dirpath"] == str(tmp_path / "stage" / "checkpoints")


def test_a_stage_cut_short_continues_from_its_last_state(tiny_model_dir, tmp_path, capsys, private_cache):
    data = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    run_fit(fit_config(tiny_model_dir, data, 3), tmp_path / "unbroken")
    # The same stage cut short after step 2: its last state is the one saved then, and it has no final model.
    (tmp_path / "cut" / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "unbroken" / "checkpoints" / "step=2.ckpt", tmp_path / "cut" / "checkpoints" / "last.ckpt")
    assert saved_step(tmp_path / "cut" / "checkpoints" / "last.ckpt") == 2
    capsys.readouterr()
    run_fit(fit_config(tiny_model_dir, data, 3), tmp_path / "cut")
    assert f"{tmp_path / 'cut'}: continuing from its training state at step 2" in capsys.readouterr().out
    unbroken, resumed = (load_file(tmp_path / run / "hf_model" / "model.safetensors") for run in ("unbroken", "cut"))
    assert unbroken.keys() == resumed.keys()
    assert all(torch.equal(unbroken[name], resumed[name]) for name in unbroken)
