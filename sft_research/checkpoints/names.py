"""Where a checkpoint named by hub id, local folder or embedded name lives, and loading from it."""

from __future__ import annotations

from pathlib import Path

from sft_research.checkpoints.embedded import DEFAULT_MODEL, EMBEDDED_PREFIX, resolve_embedded


class ModelLoadError(OSError):
    """A model or tokenizer could not be found or loaded."""


def resolve(name_or_path: str) -> str:
    """A local folder for embedded and local models; hub ids are returned as they are."""
    if name_or_path.startswith(EMBEDDED_PREFIX):
        return str(resolve_embedded(name_or_path))
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{name_or_path}: is not a Hugging Face checkpoint folder (no config.json)")
        return str(path)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelLoadError(f"{name_or_path}: no such model folder")
    return name_or_path


def from_pretrained(loader, name_or_path: str, **kwargs):
    resolved = resolve(name_or_path)
    try:
        return loader.from_pretrained(resolved, **kwargs)
    except OSError as error:
        raise ModelLoadError(
            f"{name_or_path}: could not be loaded as a local folder or a hub id ({error}). Without network access "
            f"to the hub, download it elsewhere and pass its local folder, or use {DEFAULT_MODEL}."
        ) from error


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    tokenizer = from_pretrained(AutoTokenizer, name_or_path)
    if tokenizer.pad_token_id is None:
        # Padding positions are masked out of attention and loss, so any existing token serves.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


