"""Stand-in models for rehearsals: tiny random models of the same architecture class as the models a config names.

Each stands in from the real model's config.json, shrunk (the class and the keys that decide the code path, RoPE
settings, sliding window, tied embeddings, bias, kept), found in this order:

* a config.json the user gives (``sft-research rehearse --model_config NAME=FILE``), with the tokenizer folder they
  give (``--tokenizer NAME=FOLDER``) or a stand-in tokenizer;
* a model on this disk (the embedded SmolLM2, a local folder, an adapter's base): its own config.json and tokenizer;
* a file of ``models/`` shipped for the configs under ``experiments/``: the architecture and the tokenizer's special
  tokens, BOS/EOS behaviour and chat template, copied from the real files, whose stand-in tokenizer is a small BPE
  with those special tokens (same rendering, another vocabulary);
* a hub model's config.json in the local Hugging Face cache (or downloaded alone, where the hub can be reached),
  with its tokenizer from the same place where it is there.

Every stand-in carries the real config.json it stands for (:attr:`StandIn.architecture`): the checks before training
and the memory plan read that, not the stand-in's. Stand-ins are built once and kept under ``cache_dir()/rehearsal``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sft_research.checkpoints.embedded import cache_dir
from sft_research.checkpoints.names import ModelLoadError, adapter_base, load_tokenizer, model_config, resolve
from sft_research.errors import ConfigError
from sft_research.rehearsal.fixtures import DATASETS
from sft_research.runs.atomic_files import atomic_dir

MODELS = Path(__file__).parent / "models"
# Sizes of every stand-in: a few thousand parameters per layer, two layers, grouped-query attention where the real
# model has it.
SIZES = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "head_dim": 16}
VOCABULARY = 2048  # about 4 characters a token on the fixtures' English, as the real tokenizers
VERSION = "2"  # bump when the way stand-ins are built changes, so that cached ones are rebuilt
# The stand-in tokenizer of a model whose tokenizer is not at hand: ChatML turns, as many chat models have.
GENERIC_TOKENIZER = {
    "style": "byte_level",
    "eos_token": "<|im_end|>",
    "pad_token": "<|endoftext|>",
    "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
    "chat_template": (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
}
REAL_TOKENIZER = "the model's own tokenizer"


@dataclass
class StandIn:
    """A stand-in checkpoint: its folder, what stands in (for the rehearsal's report), and the config.json of the
    model it stands for, at its real sizes."""

    path: str
    description: str
    architecture: dict
    own_tokenizer: bool


@dataclass
class GivenFiles:
    """Files a user gives for models the rehearsal cannot find: a config.json by model name, and a tokenizer folder."""

    configs: dict[str, str] = field(default_factory=dict)
    tokenizers: dict[str, str] = field(default_factory=dict)


def stand_in(name_or_path: str, given: GivenFiles | None = None) -> StandIn:
    """The stand-in checkpoint for a model named as a config names it (hub id, local folder, adapter folder or
    ``embedded:`` name), from the first source that has its config.json (see the module's doc)."""
    given = given or GivenFiles()
    if name_or_path in given.configs:
        return given_stand_in(name_or_path, given)
    base = adapter_base(name_or_path) if _is_local(name_or_path) else None
    if base is not None:
        return stand_in(base, given)
    if _is_local(name_or_path):
        folder = Path(resolve(name_or_path))
        config = json.loads((folder / "config.json").read_text())
        return _from_config(name_or_path, config, folder, "its config.json")
    spec_file = MODELS / f"{name_or_path.replace('/', '--')}.yaml"
    if spec_file.is_file():
        spec = yaml.safe_load(spec_file.read_text())
        architecture = {k: v for k, v in spec["architecture"].items() if k != "real_sizes"}
        path = _build(name_or_path, _key(spec_file.read_text()), architecture, lambda: stand_in_tokenizer(spec["tokenizer"]))
        tokenizer = "stand-in tokenizer (real special tokens, BOS/EOS, chat template)"
        real = {**architecture, **spec["architecture"].get("real_sizes", {})}
        return StandIn(str(path), f"tiny random {architecture['architectures'][0]}, {tokenizer}", real, False)
    try:
        config = model_config(name_or_path)
    except ModelLoadError as error:
        raise ConfigError(
            f"rehearse: no stand-in for the hub model {name_or_path} ({error}): give its config.json with --model_config "
            f"{name_or_path}=FILE (and its tokenizer with --tokenizer {name_or_path}=FOLDER), or a local folder"
        ) from None
    return _from_config(name_or_path, config, None, "its config.json from the Hugging Face cache")


def given_stand_in(name: str, given: GivenFiles) -> StandIn:
    try:
        config = json.loads(Path(given.configs[name]).expanduser().read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"rehearse: --model_config {name}={given.configs[name]}: not a readable config.json ({error})") from None
    folder = given.tokenizers.get(name)
    return _from_config(name, config, Path(folder).expanduser() if folder else None, "the config.json given")


def _from_config(name: str, config: dict, tokenizer_folder: Path | None, source: str) -> StandIn:
    """A stand-in shrunk from a model's real ``config``, with the tokenizer of ``tokenizer_folder`` (a hub model's from
    the Hugging Face cache where it is not given, else a stand-in tokenizer)."""
    tokenizer_name = str(tokenizer_folder) if tokenizer_folder is not None else name
    try:
        tokenizer = load_tokenizer(tokenizer_name)
    except (ModelLoadError, ValueError):  # no tokenizer files there (transformers says so with a ValueError)
        path = _build(name, _key(json.dumps(config, sort_keys=True), "generic"), config, lambda: stand_in_tokenizer(GENERIC_TOKENIZER))
        stand_in = f"a stand-in tokenizer, not the model's (its special tokens and chat template: --tokenizer {name}=FOLDER)"
        return StandIn(str(path), f"tiny random {config['architectures'][0]} from {source}, {stand_in}", config, False)
    files = sorted(tokenizer_folder.glob("tokenizer*.json")) if tokenizer_folder is not None else []
    key = _key(json.dumps(config, sort_keys=True), tokenizer_name, *(p.read_bytes().hex() for p in files))
    path = _build(name, key, config, lambda: tokenizer)
    return StandIn(str(path), f"tiny random {config['architectures'][0]} from {source}, {REAL_TOKENIZER}", config, True)


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
    config = {k: v for k, v in config.items() if k not in ("quantization_config", "auto_map")}
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
