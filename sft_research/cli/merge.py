"""``sft-research merge ADAPTER_DIR OUTPUT_DIR``: folds a LoRA adapter into its base model's weights and writes a full
checkpoint with the adapter's tokenizer, loadable by plain ``transformers`` without peft or this package."""

from __future__ import annotations

import argparse
from pathlib import Path

from sft_research.checkpoints.names import ADAPTER_CONFIG, ModelLoadError, adapter_base, load_tokenizer
from sft_research.errors import ConfigError
from sft_research.model.loading import DTYPES, ModelConfig, load_model
from sft_research.runs.atomic_files import atomic_dir


def merge_adapter(adapter_dir: str, output_dir: str, dtype: str = "float32") -> Path:
    """Writes the base model of ``adapter_dir`` with the adapter merged in, in ``dtype``, to ``output_dir``."""
    if adapter_base(adapter_dir) is None:
        raise ModelLoadError(f"{adapter_dir}: is not a peft adapter folder ({ADAPTER_CONFIG} without a config.json)")
    output = Path(output_dir)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConfigError(f"{output}: already exists and is not an empty folder; choose another output folder")
    model = load_model(ModelConfig(adapter_dir, dtype=dtype))
    tokenizer = load_tokenizer(adapter_dir)
    # Written under a temporary name and renamed, so an interrupted merge never leaves a loadable-looking half.
    with atomic_dir(output) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return output


def merge_main(args: list[str]) -> Path:
    """``sft-research merge ADAPTER_DIR OUTPUT_DIR [--dtype D]``: prints and returns the merged model's folder."""
    parser = argparse.ArgumentParser(prog="sft-research merge", description=__doc__)
    parser.add_argument("adapter_dir", help="a LoRA adapter folder, as a run without lora.merge saves it")
    parser.add_argument("output_dir", help="where the merged full checkpoint goes (must not exist, or be empty)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="the merged weights' dtype")
    parsed = parser.parse_args(args)
    output = merge_adapter(parsed.adapter_dir, parsed.output_dir, parsed.dtype)
    print(f"merged model: {output}")
    return output
