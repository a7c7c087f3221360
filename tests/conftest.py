import json
from pathlib import Path

import pytest

from sft_research.model.tiny import build_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama checkpoint with a ChatML tokenizer, saved like any local Hugging Face model."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from sft_research.model.loading import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
