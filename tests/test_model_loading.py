import pytest
import torch

from sft_research.checkpoints.names import ModelLoadError, load_tokenizer
from sft_research.model.loading import LoraConfig, ModelConfig, load_model


def test_local_folder_loads_with_dtype(tiny_model_dir):
    model = load_model(ModelConfig(str(tiny_model_dir), dtype="bfloat16"))
    assert next(model.parameters()).dtype == torch.bfloat16


def test_lora_trains_adapters_only(tiny_model_dir):
    model = load_model(ModelConfig(str(tiny_model_dir), lora=LoraConfig(r=4, alpha=8)))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert any("lora_" in name and "q_proj" in name for name in trainable)


def test_gradient_checkpointing_gives_the_same_gradient(tiny_model_dir):
    ids = torch.tensor([[5, 9, 30, 41, 7, 2]])
    grads = []
    for checkpointing in (False, True):
        model = load_model(ModelConfig(str(tiny_model_dir), gradient_checkpointing=checkpointing)).train()
        assert model.is_gradient_checkpointing == checkpointing
        model(input_ids=ids, labels=ids).loss.backward()
        grads.append(model.model.layers[0].mlp.up_proj.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_wrong_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no such model folder"):
        load_model(ModelConfig(str(tmp_path / "nothing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_tokenizer(str(tmp_path / "empty"))


def test_hub_id_without_network_is_a_clear_error(monkeypatch):
    import huggingface_hub

    # Offline mode makes the hub client fail at once rather than retry a network it cannot reach.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="no-such-org/no-such-model: could not be loaded as a local folder or a hub id"):
        load_tokenizer("no-such-org/no-such-model")


def test_a_model_folder_without_tokenizer_files_is_one_line_before_the_model_loads(tiny_model_dir, tmp_path, monkeypatch):
    import shutil

    from sft_research.cli.main import main
    from tests.conftest import SFT_ROWS, file_fit_args, write_jsonl

    folder = tmp_path / "weights_only"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model_dir / name, folder / name)
    with pytest.raises(ModelLoadError, match=rf"^{folder}: no tokenizer files in the model folder \(none of tokenizer.json, ") as caught:
        load_tokenizer(str(folder))
    assert "\n" not in str(caught.value)
    monkeypatch.setattr("sft_research.train.module.load_model", lambda *args, **kwargs: pytest.fail("the model was loaded"))
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    with pytest.raises(ModelLoadError, match="no tokenizer files in the model folder"):
        main(["fit", *file_fit_args(folder, path, tmp_path, 1)])
