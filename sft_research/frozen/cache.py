"""Log-probs of frozen models (references, baselines), computed once per (model, data) and cached on disk.

A frozen model is loaded only while its log-probs are computed, then freed, so it never sits in training memory.
The cache file is named by a fingerprint of the checkpoint's files, the dtype and the token sequences, so runs and
seeds on the same data reuse it; it is written under a temporary name and renamed, and checked against its
fingerprint before use.
"""

from __future__ import annotations

import gc
import hashlib
import logging
from pathlib import Path

import torch

from sft_research.data.collate import collate_examples
from sft_research.files import atomic_write
from sft_research.data.tokenize import TokenizedExample
from sft_research.checkpoints.embedded import cache_dir
from sft_research.model.loading import ModelConfig, load_model
from sft_research.checkpoints.names import adapter_base, resolve
from sft_research.model.logprobs import sequence_logprobs

log = logging.getLogger(__name__)
CHECKPOINT_FILES = (".json", ".safetensors", ".bin", ".model", ".jinja", ".txt")


def checkpoint_fingerprint(name_or_path: str) -> str:
    """A hash of a local checkpoint's files (weights, config, tokenizer); for a hub id, of its resolved snapshot; for
    an adapter folder, of its files and its base model's fingerprint (the same adapter on another base is another
    model)."""
    from transformers.utils import cached_file

    path = Path(resolve(name_or_path))
    if not path.exists():
        path = Path(cached_file(name_or_path, "config.json")).parent
    digest = hashlib.blake2b(digest_size=16)
    base = adapter_base(str(path))
    if base is not None:
        digest.update(f"base:{checkpoint_fingerprint(base)}".encode())
    for file in sorted(p for p in path.iterdir() if p.suffix in CHECKPOINT_FILES and not p.name.startswith(".")):
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()


def sequences_fingerprint(examples: list[TokenizedExample], training_targets: bool = False) -> str:
    """A hash of examples' token ids (all a frozen model's log-probs depend on); with ``training_targets``, also each
    sequence's completion mask and the example's quality, which a training run depends on as well."""
    digest = hashlib.blake2b(digest_size=16)
    for example in examples:
        for sequence in example.sequences:
            digest.update(torch.tensor(sequence.input_ids, dtype=torch.int64).numpy().tobytes())
            if training_targets:
                digest.update(torch.tensor(sequence.completion_mask, dtype=torch.bool).numpy().tobytes())
            digest.update(b"|")
        digest.update(f"#{example.quality!r}#".encode() if training_targets else b"#")
    return digest.hexdigest()


@torch.no_grad()
def compute_label_logprobs(
    model, examples: list[TokenizedExample], batch_size: int, pad_token_id: int, chunk_size: int | None = 1024
) -> list[torch.Tensor]:
    """Per example, an ``[S, L - 1]`` float32 tensor of label log-probs (L its own length, padding cut off);
    ``chunk_size`` as in :func:`~sft_research.model.logprobs.sequence_logprobs`."""
    device = next(model.parameters()).device
    results = []
    for first in range(0, len(examples), batch_size):
        chunk = examples[first : first + batch_size]
        batch = collate_examples(chunk, pad_token_id)
        b, s, length = batch["input_ids"].shape
        ids, mask = batch["input_ids"].view(b * s, length).to(device), batch["attention_mask"].view(b * s, length).to(device)
        logps = sequence_logprobs(model, ids, mask, chunk_size).view(b, s, length - 1).float().cpu()
        for row, example in enumerate(chunk):
            longest = max(len(sequence.input_ids) for sequence in example.sequences)
            results.append(logps[row, :, : longest - 1].clone())
    return results


def frozen_label_logprobs(
    model: ModelConfig,
    examples: list[TokenizedExample],
    pad_token_id: int,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    use_cache: bool = True,
    chunk_size: int | None = 1024,
) -> list[torch.Tensor]:
    """Label log-probs of ``examples`` under the frozen ``model``, from the on-disk cache when it has them."""
    key = hashlib.blake2b(
        f"{checkpoint_fingerprint(model.name_or_path)}:{model.dtype}:{sequences_fingerprint(examples)}".encode(),
        digest_size=16,
    ).hexdigest()
    path = cache_dir() / "logprobs" / f"{key}.safetensors"
    if use_cache:
        cached = _read(path, key, len(examples))
        if cached is not None:
            log.info("frozen log-probs of %s: read from %s", model.name_or_path, path)
            return cached
    frozen = load_model(ModelConfig(model.name_or_path, dtype=model.dtype, attn_implementation=model.attn_implementation))
    frozen.to(device).eval().requires_grad_(False)
    logps = compute_label_logprobs(frozen, examples, batch_size, pad_token_id, chunk_size)
    del frozen
    gc.collect()
    if use_cache:
        _write(path, key, logps)
        log.info("frozen log-probs of %s: computed and cached in %s", model.name_or_path, path)
    return logps


def _write(path: Path, key: str, logps: list[torch.Tensor]) -> None:
    from safetensors.torch import save_file

    shapes = torch.tensor([list(t.shape) for t in logps], dtype=torch.int64)
    values = torch.cat([t.reshape(-1) for t in logps])
    atomic_write(path, lambda temporary: save_file({"values": values, "shapes": shapes}, str(temporary), metadata={"fingerprint": key}))


def _read(path: Path, key: str, count: int) -> list[torch.Tensor] | None:
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as file:
            if file.metadata().get("fingerprint") != key:
                raise ValueError("fingerprint mismatch")
            values, shapes = file.get_tensor("values"), file.get_tensor("shapes")
        sizes = shapes.prod(-1)
        if len(shapes) != count or int(sizes.sum()) != values.numel():
            raise ValueError("size mismatch")
    except Exception as error:  # a damaged or foreign file is recomputed, never trusted
        log.warning("ignoring the cached log-probs in %s (%s); recomputing", path, error)
        return None
    return [chunk.view(*shape) for chunk, shape in zip(values.split(sizes.tolist()), shapes.tolist())]


def mean_completion_logprob(logps: torch.Tensor, example: TokenizedExample) -> float:
    """The length-normalised log-likelihood of an example's (first) completion: PoFT's r(x, y)."""
    mask = torch.tensor(example.sequences[0].completion_mask[1:])
    return float((logps[0, : mask.numel()] * mask).sum() / mask.sum())
