"""Where a checkpoint named by hub id, local folder or embedded name lives, and loading from it.

A local folder is either a full checkpoint (``config.json`` and weights) or a peft adapter (``adapter_config.json``
and adapter weights, no ``config.json``): an adapter names its base model in ``base_model_name_or_path`` and loads as
that base with the adapter merged in.
"""

from __future__ import annotations

import json
from pathlib import Path

from sft_research.checkpoints.embedded import DEFAULT_MODEL, EMBEDDED_PREFIX, resolve_embedded
from sft_research.checkpoints.hub import hub_file, hub_reachable

ADAPTER_CONFIG = "adapter_config.json"
# Beside an adapter: its base model's portable name (an embedded name, a hub id, an absolute folder), which this
# framework reads first; adapter_config.json names a folder peft and transformers can load on the machine that trained.
PORTABLE_BASE = "sft_research_base.json"


class ModelLoadError(OSError):
    """A model or tokenizer could not be found or loaded."""


def resolve(name_or_path: str) -> str:
    """A local folder for embedded and local models (full checkpoints or adapters); hub ids are returned as they are."""
    if name_or_path.startswith(EMBEDDED_PREFIX):
        return str(resolve_embedded(name_or_path))
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file() and not (path / ADAPTER_CONFIG).is_file():
            raise ModelLoadError(
                f"{name_or_path}: is neither a Hugging Face checkpoint folder (no config.json) nor a peft adapter "
                f"folder (no {ADAPTER_CONFIG})"
            )
        return str(path)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelLoadError(f"{name_or_path}: no such model folder")
    return name_or_path


def adapter_base(name_or_path: str) -> str | None:
    """The base model that the adapter folder ``name_or_path`` was trained on; None for anything but an adapter."""
    path = Path(resolve(name_or_path))
    if not (path / ADAPTER_CONFIG).is_file() or (path / "config.json").is_file():
        return None
    try:
        if (path / PORTABLE_BASE).is_file():
            return json.loads((path / PORTABLE_BASE).read_text())["base_model"]
        base = json.loads((path / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(f"{name_or_path}: unreadable {ADAPTER_CONFIG} or {PORTABLE_BASE} ({error})") from error
    if not base:
        raise ModelLoadError(f"{name_or_path}: {ADAPTER_CONFIG} names no base model (base_model_name_or_path)")
    return base


def model_config(name_or_path: str) -> dict:
    """The model's ``config.json`` (an adapter's: its base model's), read before any weights load: from its folder,
    or for a hub id from the local Hugging Face cache, else downloaded alone (one small file). A hub id that neither
    has stops at once, as its load would (:mod:`~sft_research.checkpoints.hub`)."""
    base = adapter_base(name_or_path)
    if base is not None:
        return model_config(base)
    resolved = resolve(name_or_path)
    path = str(Path(resolved) / "config.json") if Path(resolved).is_dir() else hub_file(resolved, "config.json")
    if path is None:
        hub = "has no such file" if hub_reachable() else "cannot be reached from here"
        where = f"not in the local Hugging Face cache, and the hub {hub}"
        raise ModelLoadError(
            f"{name_or_path}: its config.json could not be read ({where}). Without network access to the hub, download the "
            f"model elsewhere and pass its local folder, or use {DEFAULT_MODEL}."
        )
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{name_or_path}: unreadable config.json ({error})") from error


def portable_name(name_or_path: str) -> str:
    """How an adapter records its base model: embedded names and hub ids as they are (not the cache folder they
    resolve to, which belongs to one user), local folders as absolute paths (independent of the working folder)."""
    path = Path(name_or_path).expanduser()
    if name_or_path.startswith(EMBEDDED_PREFIX) or not path.exists():
        return name_or_path
    return str(path.resolve())


def loadable_name(name_or_path: str) -> str:
    """The base model as peft and transformers load it: an embedded model's converted folder, else the portable name."""
    return str(resolve(name_or_path)) if name_or_path.startswith(EMBEDDED_PREFIX) else portable_name(name_or_path)


def from_pretrained(loader, name_or_path: str, **kwargs):
    """``loader.from_pretrained`` (a transformers model class) on the resolved checkpoint. An adapter folder loads its
    base model with ``kwargs``, applies the adapter with peft and merges it, so that the result is a plain model."""
    base = adapter_base(name_or_path)
    if base is None:
        return _load(loader, name_or_path, **kwargs)
    from peft import PeftModel

    try:
        base_model = from_pretrained(loader, base, **kwargs)
    except ModelLoadError as error:
        raise ModelLoadError(f"{name_or_path}: the adapter's base model {base} could not be loaded: {error}") from error
    return PeftModel.from_pretrained(base_model, resolve(name_or_path)).merge_and_unload()


def _load(loader, name_or_path: str, **kwargs):
    resolved = resolve(name_or_path)
    local = Path(resolved).is_dir()
    reachable = local or hub_reachable()
    try:
        # A hub id with the hub out of reach: the local cache only, which fails at once if it lacks the model.
        return loader.from_pretrained(resolved, **kwargs, **({} if reachable else {"local_files_only": True}))
    except OSError as error:
        where = "" if reachable else "the hub cannot be reached from here and it is not in the local Hugging Face cache; "
        raise ModelLoadError(
            f"{name_or_path}: could not be loaded as a local folder or a hub id ({where}{str(error).splitlines()[0]}). Without "
            f"network access to the hub, download it elsewhere and pass its local folder, or use {DEFAULT_MODEL}."
        ) from error


# A folder holds its tokenizer in one of these (fast, SentencePiece, byte-level BPE, WordPiece).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt")


def load_tokenizer(name_or_path: str):
    """The checkpoint's tokenizer; an adapter folder's is the one saved beside it, else its base model's. A folder
    without tokenizer files, or one transformers cannot build, is one line (not transformers' hint about
    SentencePiece)."""
    from transformers import AutoTokenizer

    base = adapter_base(name_or_path)
    if base is not None and not (Path(resolve(name_or_path)) / "tokenizer_config.json").is_file():
        return load_tokenizer(base)
    folder = Path(resolve(name_or_path))
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(
            f"{name_or_path}: no tokenizer files in the model folder (none of {', '.join(TOKENIZER_FILES)}); save the tokenizer "
            "beside the weights (tokenizer.save_pretrained(folder)) or copy its files from the model it was trained from"
        )
    try:
        tokenizer = _load(AutoTokenizer, name_or_path)
    except ValueError as error:  # transformers' own: a tokenizer it cannot build from the files there
        raise ModelLoadError(f"{name_or_path}: its tokenizer could not be built ({str(error).strip().splitlines()[0]})") from error
    if tokenizer.pad_token_id is None:
        # Padding positions are masked out of attention and loss, so any existing token serves.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
