"""Stand-in models for rehearsals: tiny random models of the same architecture class as the models a config names.

A hub model (none can be downloaded here) stands in through a file of ``models/``: its architecture class and the
config keys that decide the code path (RoPE settings, sliding window, tied embeddings, bias), and its tokenizer's
special tokens, BOS/EOS behaviour and chat template, copied from the real files. The stand-in tokenizer is a small BPE
with those special tokens: same rendering, another vocabulary. A model on this disk (the embedded SmolLM2, a local
folder, an adapter's base) stands in through its own config.json, shrunk, and its own tokenizer.

Stand-ins are built once and kept under ``cache_dir()/rehearsal``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from sft_research.checkpoints.embedded import cache_dir
from sft_research.checkpoints.names import adapter_base, load_tokenizer, resolve
from sft_research.errors import ConfigError
from sft_research.files import atomic_dir
from sft_research.rehearsal.fixtures import DATASETS

MODELS = Path(__file__).parent / "models"
# Sizes of every stand-in: a few thousand parameters per layer, two layers, grouped-query attention where the real
# model has it.
SIZES = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "head_dim": 16}
VOCABULARY = 2048  # about 4 characters a token on the fixtures' English, as the real tokenizers
VERSION = "2"  # bump when the way stand-ins are built changes, so that cached ones are rebuilt


@dataclass
class StandIn:
    path: str  # the stand-in checkpoint folder
    description: str  # what stands in, for the rehearsal's report


def stand_in(name_or_path: str) -> StandIn:
    """The stand-in checkpoint for a model named as a config names it (hub id, local folder, adapter folder or
    ``embedded:`` name)."""
    base = adapter_base(name_or_path) if _is_local(name_or_path) else None
    if base is not None:
        return stand_in(base)
    if _is_local(name_or_path):
        folder = Path(resolve(name_or_path))
        config = json.loads((folder / "config.json").read_text())
        key = _key(json.dumps(config, sort_keys=True), *(p.read_bytes().hex() for p in sorted(folder.glob("tokenizer*.json"))))
        path = _build(name_or_path, key, config, lambda: load_tokenizer(name_or_path))
        return StandIn(str(path), f"tiny random {config['architectures'][0]}, the model's own tokenizer")
    spec_file = MODELS / f"{name_or_path.replace('/', '--')}.yaml"
    if not spec_file.is_file():
        raise ConfigError(
            f"rehearse: no stand-in for the hub model {name_or_path}: add {spec_file.relative_to(MODELS.parents[2])} "
            "with its architecture and tokenizer (see the files beside it), or give a local folder"
        )
    spec = yaml.safe_load(spec_file.read_text())
    architecture = {k: v for k, v in spec["architecture"].items() if k != "real_sizes"}
    path = _build(name_or_path, _key(spec_file.read_text()), architecture, lambda: stand_in_tokenizer(spec["tokenizer"]))
    return StandIn(
        str(path), f"tiny random {architecture['architectures'][0]}, stand-in tokenizer (real special tokens, BOS/EOS, chat template)"
    )


def _is_local(name: str) -> bool:
    return name.startswith("embedded:") or Path(name).expanduser().exists()


def _key(*parts: str) -> str:
    return hashlib.blake2b("\n".join((VERSION, *parts)).encode(), digest_size=8).hexdigest()


def _build(name: str, key: str, config: dict, make_tokenizer) -> Path:
    target = cache_dir() / "rehearsal" / f"{name.replace('/', '--').replace(':', '-')}-{key}"
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = make_tokenizer()
    config = dict(config)
    heads = config.get("num_attention_heads")
    grouped = config.get("num_key_value_heads") not in (None, heads)
    config.update(SIZES, num_key_value_heads=2 if grouped else SIZES["num_attention_heads"], vocab_size=len(tokenizer))
    for token in ("bos", "eos", "pad"):
        config[f"{token}_token_id"] = getattr(tokenizer, f"{token}_token_id")
    model_config = AutoConfig.for_model(**config)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(model_config)
    with atomic_dir(target) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return target


def corpus() -> list[str]:
    """The text the stand-in tokenizers learn their merges from: the schema fixtures' rows, so that a fixture's row
    is about as many tokens long as under the real tokenizers."""
    return sorted(p.read_text() for p in DATASETS.glob("*/data/*.jsonl"))


def stand_in_tokenizer(spec: dict):
    """A small BPE tokenizer with ``spec``'s special tokens, BOS/EOS behaviour, chat template and pre-tokenization
    style (``sentencepiece``: ▁ for spaces, as Llama 2, Mistral and Yi; ``byte_level``: as GPT-2, Qwen and Llama 3)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    named = {name: spec.get(f"{name}_token") for name in ("bos", "eos", "unk", "pad")}
    special = list(dict.fromkeys([t for t in named.values() if t] + list(spec.get("additional_special_tokens") or [])))
    if spec["style"] == "byte_level":
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        bpe = Tokenizer(models.BPE(unk_token=named["unk"]))
        bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        bpe.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        alphabet = sorted({chr(c) for c in range(32, 127)} | {"▁", "\n", "\t"})
    bpe.train_from_iterator(corpus(), trainers.BpeTrainer(vocab_size=VOCABULARY, special_tokens=special, initial_alphabet=alphabet))
    added = [(token, bpe.token_to_id(token)) for token in (named["bos"] if spec.get("add_bos_token") else None,) if token]
    ended = [(token, bpe.token_to_id(token)) for token in (named["eos"] if spec.get("add_eos_token") else None,) if token]
    single = " ".join([f"{t}:0" for t, _ in added] + ["$A:0"] + [f"{t}:0" for t, _ in ended])
    bpe.post_processor = processors.TemplateProcessing(single=single, pair=f"{single} $B:1", special_tokens=added + ended)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        **{f"{name}_token": token for name, token in named.items() if token},
        additional_special_tokens=list(spec.get("additional_special_tokens") or []),
        chat_template=spec.get("chat_template"),
    )
