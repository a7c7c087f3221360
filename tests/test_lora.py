"""LoRA end to end: a run saves an adapter that loads wherever a model path goes (validate, a reference, a further LoRA
run), ``sft-research merge`` and ``lora.merge`` turn it into full weights for plain transformers, and adapters of
embedded models name their base portably."""

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sft_research.checkpoints.embedded import TINY_MODEL
from sft_research.checkpoints.names import ModelLoadError, load_tokenizer
from sft_research.checkpoints.tiny import build_tiny_checkpoint
from sft_research.cli.main import main
from sft_research.errors import ConfigError
from sft_research.frozen.cache import checkpoint_fingerprint
from sft_research.model.loading import ModelConfig, load_model
from sft_research.model.logprobs import sequence_logprobs
from sft_research.train.export import model_dir
from tests.conftest import PAIR_ROWS, SFT_ROWS, file_fit_args, write_jsonl

LORA = ["--model.pretrained.lora.r=4", "--model.pretrained.lora.alpha=8"]


pytestmark = pytest.mark.usefixtures("private_cache")


def run(command, model, data_path, tmp_path, *extra, steps=3):
    return main([command, *file_fit_args(model, data_path, tmp_path, steps), "--model.optimizer.lr=1e-2", *extra])


def label_logprobs(model, tokenizer, rows=SFT_ROWS):
    texts = [row["prompt"] + " " + row["completion"] for row in rows]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return sequence_logprobs(model.eval(), batch["input_ids"], batch["attention_mask"])


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """One LoRA fit on every linear layer, with the final norm trained in full beside the adapters."""
    tmp_path = tmp_path_factory.mktemp("lora")
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    extra = [*LORA, "--model.pretrained.lora.target_modules=all-linear", "--model.pretrained.lora.modules_to_save=[model.norm]"]
    cli = run("fit", tiny_model_dir, path, tmp_path, *extra)
    return cli, path, tmp_path


def test_a_lora_run_saves_an_adapter_of_every_linear_layer_and_the_saved_module(trained, tiny_model_dir):
    cli, _, _ = trained
    adapter = model_dir(cli.model)
    assert (adapter / "adapter_config.json").is_file() and (adapter / "tokenizer_config.json").is_file()
    assert not (adapter / "config.json").exists()
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir.resolve())
    # peft writes all-linear out as the full names of the layers it matched: every linear layer but the output head.
    kinds = {name.rsplit(".", 1)[-1] for name in config["target_modules"]}
    assert kinds == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    trained_norm = cli.model.model.base_model.model.model.norm.modules_to_save["default"].weight
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not torch.allclose(trained_norm, base.model.norm.weight), "the module to save was trained"
    merged = load_model(ModelConfig(str(adapter)))
    torch.testing.assert_close(merged.model.norm.weight, trained_norm, rtol=0, atol=0)


def test_the_adapter_validates_merges_and_agrees_with_the_trained_model(trained, tmp_path):
    cli, path, _ = trained
    adapter = model_dir(cli.model)
    tokenizer = load_tokenizer(str(adapter))
    expected = label_logprobs(cli.model.model, tokenizer)

    validated = run("validate", adapter, path, tmp_path, "--data.val=sft_research.data.FileDataset", f"--data.val.path={path}")
    assert torch.isfinite(validated.trainer.callback_metrics["val/loss"])
    torch.testing.assert_close(label_logprobs(validated.model.model, tokenizer), expected, rtol=0, atol=1e-5)

    merged = main(["merge", str(adapter), str(tmp_path / "merged")])
    assert (merged / "config.json").is_file() and not (merged / "adapter_config.json").exists()
    plain = AutoModelForCausalLM.from_pretrained(merged)
    plain_tokenizer = AutoTokenizer.from_pretrained(merged)
    assert plain_tokenizer.chat_template == tokenizer.chat_template
    torch.testing.assert_close(label_logprobs(plain, plain_tokenizer), expected, rtol=0, atol=1e-5)

    with pytest.raises(ConfigError, match="already exists"):
        main(["merge", str(adapter), str(merged)])
    with pytest.raises(ModelLoadError, match="is not a peft adapter folder"):
        main(["merge", str(merged), str(tmp_path / "again")])


@pytest.mark.slow
def test_an_adapter_is_a_dpo_reference_and_a_start_for_a_further_lora_run(trained, tmp_path):
    cli, _, _ = trained
    adapter = model_dir(cli.model)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIR_ROWS)
    dpo = run(
        "fit",
        adapter,
        pairs,
        tmp_path,
        *LORA,
        "--model.objective=sft_research.objectives.DPO",
        f"--model.frozen.reference={adapter}",
        steps=2,
    )
    with open(dpo.trainer.logger.log_dir + "/metrics.csv") as file:
        first = next(row for row in csv.DictReader(file) if row.get("train/rewards/margins"))
    # The new adapter starts at zero on the merged first one, so the policy equals the reference at the first step.
    assert float(first["train/rewards/margins"]) == pytest.approx(0.0, abs=1e-5)

    second = model_dir(dpo.model)
    assert json.loads((second / "adapter_config.json").read_text())["base_model_name_or_path"] == str(adapter.resolve())
    tokenizer = load_tokenizer(str(second))
    expected = label_logprobs(dpo.model.model, tokenizer)
    torch.testing.assert_close(label_logprobs(load_model(ModelConfig(str(second))), tokenizer), expected, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_merge_at_the_end_of_fit_saves_full_weights(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    cli = run("fit", tiny_model_dir, path, tmp_path, *LORA, "--model.pretrained.lora.merge=true", steps=2)
    saved = model_dir(cli.model)
    assert (saved / "config.json").is_file() and not (saved / "adapter_config.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(saved)
    expected = label_logprobs(cli.model.model, tokenizer)
    torch.testing.assert_close(label_logprobs(AutoModelForCausalLM.from_pretrained(saved), tokenizer), expected, rtol=0, atol=1e-5)
    base = label_logprobs(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tokenizer)
    assert not torch.allclose(base, expected, atol=1e-3), "the adapters were trained and merged in"


@pytest.mark.slow
def test_an_adapter_of_an_embedded_model_loads_in_peft_alone_and_names_its_base_portably(tmp_path):
    """peft's and transformers' own loaders read adapter_config.json's base (the converted model's folder); this
    framework reads the portable name beside it, which resolves on any machine."""
    from peft import AutoPeftModelForCausalLM

    from sft_research.checkpoints.names import resolve

    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    cli = run("fit", TINY_MODEL, path, tmp_path, *LORA, steps=1)
    adapter = model_dir(cli.model)
    assert json.loads((adapter / "sft_research_base.json").read_text()) == {"base_model": TINY_MODEL}
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == resolve(TINY_MODEL)
    tokenizer = load_tokenizer(str(adapter))
    trained = label_logprobs(cli.model.model, tokenizer)
    torch.testing.assert_close(label_logprobs(load_model(ModelConfig(str(adapter))), tokenizer), trained, rtol=0, atol=1e-5)
    peft_model = AutoPeftModelForCausalLM.from_pretrained(adapter).eval()
    torch.testing.assert_close(label_logprobs(peft_model, tokenizer), trained, rtol=0, atol=1e-5)
    transformers_model = AutoModelForCausalLM.from_pretrained(adapter).eval()
    torch.testing.assert_close(label_logprobs(transformers_model, tokenizer), trained, rtol=0, atol=1e-5)


def test_an_adapters_fingerprint_covers_its_base(trained, tmp_path):
    cli, _, _ = trained
    adapter = model_dir(cli.model)
    moved = shutil.copytree(adapter, tmp_path / "moved")
    assert checkpoint_fingerprint(str(moved)) == checkpoint_fingerprint(str(adapter)), "the same files on the same base"
    other = build_tiny_checkpoint(tmp_path / "other", seed=7)
    rebase(moved, other)
    before = checkpoint_fingerprint(str(moved))
    build_tiny_checkpoint(other, seed=8)  # the base changes under the same name
    assert checkpoint_fingerprint(str(moved)) != before


def test_an_adapter_without_its_tokenizer_uses_the_bases(trained, tmp_path, tiny_model_dir):
    cli, _, _ = trained
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(model_dir(cli.model) / name, bare / name)
    assert load_tokenizer(str(bare)).get_vocab() == load_tokenizer(str(tiny_model_dir)).get_vocab()


def test_an_adapter_whose_base_is_gone_is_a_clear_error(trained, tmp_path):
    cli, _, _ = trained
    moved = shutil.copytree(model_dir(cli.model), tmp_path / "moved")
    rebase(moved, tmp_path / "gone")
    with pytest.raises(ModelLoadError, match=f"{moved}: the adapter's base model {tmp_path / 'gone'} could not be loaded"):
        load_model(ModelConfig(str(moved)))


@pytest.mark.slow
def test_a_bf16_lora_run_exports_its_adapter_in_bf16(trained, tiny_model_dir, tmp_path):
    """After bf16 training the adapter and the module trained beside it are saved in bf16, the same tensors as fp32
    training saves."""
    from safetensors.torch import load_file

    cli, path, _ = trained
    extra = [*LORA, "--model.pretrained.lora.target_modules=all-linear", "--model.pretrained.lora.modules_to_save=[model.norm]"]
    bf16 = run("fit", tiny_model_dir, path, tmp_path, *extra, "--trainer.precision=bf16-mixed")
    saved = load_file(model_dir(bf16.model) / "adapter_model.safetensors")
    reference = load_file(model_dir(cli.model) / "adapter_model.safetensors")
    assert saved.keys() == reference.keys() and any("norm" in key for key in saved)
    assert {t.dtype for t in saved.values()} == {torch.bfloat16} and {t.dtype for t in reference.values()} == {torch.float32}


def rebase(adapter: Path, base: Path) -> None:
    """Points an adapter folder at another base, in both places it is named."""
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": str(base)}))
    (adapter / "sft_research_base.json").write_text(json.dumps({"base_model": str(base)}))


@pytest.mark.slow
def test_a_lora_training_state_holds_the_trained_tensors_and_resumes(tiny_model_dir, tmp_path):
    """The checkpoint leaves the frozen base weights out (the start model has them) and a run resumed from it goes on
    with the same adapters: its first loss is the loss the uninterrupted run logged at that step."""
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    every_step = [
        "--trainer.enable_checkpointing=true",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        f"--trainer.callbacks.dirpath={tmp_path / 'states'}",
        "--trainer.callbacks.every_n_train_steps=1",
        "--trainer.callbacks.save_top_k=-1",
    ]
    full = run("fit", tiny_model_dir, path, tmp_path / "full", *LORA, *every_step, steps=3)
    state = torch.load(tmp_path / "states" / "epoch=0-step=2.ckpt", map_location="cpu", weights_only=False)
    trained = {f"model.{n}" for n, p in full.model.model.named_parameters() if p.requires_grad}
    weights = {k for k in state["state_dict"] if k.startswith("model.") and "rotary_emb" not in k}
    assert weights == trained and all("lora_" in k for k in weights)
    resumed = run(
        "fit", tiny_model_dir, path, tmp_path / "resumed", *LORA, f"--ckpt_path={tmp_path / 'states' / 'epoch=0-step=2.ckpt'}", steps=3
    )
    assert resumed.trainer.global_step == 3
    for name, parameter in full.model.model.named_parameters():
        torch.testing.assert_close(dict(resumed.model.model.named_parameters())[name], parameter, rtol=0, atol=1e-6, msg=name)
