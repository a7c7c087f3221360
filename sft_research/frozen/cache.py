"""Per-position quantities of frozen models (log-probs, top-k distributions, ...), computed once per
(model, data, quantity) and cached on disk.

A frozen model is loaded only while a quantity is computed, then freed, so it never sits in training memory. The cache
file is named by a fingerprint of the checkpoint's files, the dtype, the token sequences and the quantity, so runs and
seeds on the same data reuse it; it is written under a temporary name and renamed, and checked against its
fingerprint before use. A value may hold several tensors, each keeping its dtype (token ids stay integers).
"""

from __future__ import annotations

import gc
import hashlib
import logging
from pathlib import Path

import torch

from sft_research.checkpoints.embedded import cache_dir
from sft_research.checkpoints.names import adapter_base, resolve
from sft_research.data.collate import collate_examples
from sft_research.data.tokenize import TokenizedExample
from sft_research.frozen.quantities import FrozenQuantity, LabelLogprobsQuantity
from sft_research.frozen.shares import ALONE, Shares
from sft_research.model.loading import ModelConfig, load_model
from sft_research.runs.atomic_files import atomic_write

log = logging.getLogger(__name__)
CHECKPOINT_FILES = (".json", ".safetensors", ".bin", ".model", ".jinja", ".txt")
# Per example: named tensors whose dim 1 runs over label positions ([S, L - 1, ...]).
Value = dict[str, torch.Tensor]


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
    """A hash of examples' token ids (all a frozen model's quantities depend on); with ``training_targets``, also each
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
def compute_quantity(
    model, examples: list[TokenizedExample], quantity: FrozenQuantity, batch_size: int, pad_token_id: int, chunk_size: int | None = 1024
) -> list[Value]:
    """Per example, the quantity's tensors, ``[S, L - 1, ...]`` with L its own length (padding cut off)."""
    device = next(model.parameters()).device
    results = []
    for first in range(0, len(examples), batch_size):
        chunk = examples[first : first + batch_size]
        batch = collate_examples(chunk, pad_token_id)
        b, s, length = batch["input_ids"].shape
        ids, mask = batch["input_ids"].view(b * s, length).to(device), batch["attention_mask"].view(b * s, length).to(device)
        values = {
            name: value.view(b, s, length - 1, *value.shape[2:]).cpu() for name, value in quantity(model, ids, mask, chunk_size).items()
        }
        for row, example in enumerate(chunk):
            longest = max(len(sequence.input_ids) for sequence in example.sequences)
            results.append({name: value[row, :, : longest - 1].clone() for name, value in values.items()})
    return results


def frozen_quantity(
    model: ModelConfig,
    examples: list[TokenizedExample],
    quantity: FrozenQuantity,
    pad_token_id: int,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    use_cache: bool = True,
    chunk_size: int | None = 1024,
    shares: Shares = ALONE,
) -> tuple[list[Value], int]:
    """A quantity of ``examples`` under the frozen ``model``, and the sequences this process ran through it.

    It comes from the on-disk cache when every process finds it there. Otherwise each process of ``shares`` loads the
    model and computes its share of the batches (:mod:`~sft_research.frozen.shares`), every process gathers the
    others', and the first writes the cache: the same file, in the same order, as one process would write."""
    key = hashlib.blake2b(
        f"{checkpoint_fingerprint(model.name_or_path)}:{model.dtype}:{sequences_fingerprint(examples)}:{quantity.key}".encode(),
        digest_size=16,
    ).hexdigest()
    path = cache_dir() / "frozen" / f"{key}.safetensors"
    if use_cache:
        cached = _read(path, key, len(examples))
        if all(shares.gather(cached is not None)):  # a process that misses it computes its share with the others
            log.info("%s of %s: read from %s", quantity.key, model.name_or_path, path)
            return cached, 0
    mine = [examples[i] for i in shares.part(len(examples), batch_size)]
    values = []
    if mine:
        frozen = load_model(ModelConfig(model.name_or_path, dtype=model.dtype, attn_implementation=model.attn_implementation))
        frozen.to(device).eval().requires_grad_(False)
        values = compute_quantity(frozen, mine, quantity, batch_size, pad_token_id, chunk_size)
        del frozen
        gc.collect()
    parts = [part for part in shares.gather(packed(values)) if part]
    merged = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
    if use_cache and shares.rank == 0:
        _write(path, key, merged)
        log.info("%s of %s: computed and cached in %s", quantity.key, model.name_or_path, path)
    return unpacked(merged, len(examples)), sum(len(example.sequences) for example in mine)


def frozen_label_logprobs(
    model: ModelConfig,
    examples: list[TokenizedExample],
    pad_token_id: int,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    use_cache: bool = True,
    chunk_size: int | None = 1024,
) -> list[torch.Tensor]:
    """Label log-probs of ``examples`` under the frozen ``model`` (``[S, L - 1]`` per example), cached."""
    values, _ = frozen_quantity(model, examples, LabelLogprobsQuantity(), pad_token_id, batch_size, device, use_cache, chunk_size)
    return [value["logps"] for value in values]


def packed(values: list[Value]) -> dict[str, torch.Tensor]:
    """Examples' values as the cache file holds them: per tensor name, every example's shape (``<name>/shapes``) and
    their elements one after another (``<name>/values``); examples' values packed in turn concatenate name by name."""
    tensors = {}
    for name in values[0] if values else ():
        tensors[f"{name}/shapes"] = torch.tensor([list(value[name].shape) for value in values], dtype=torch.int64)
        tensors[f"{name}/values"] = torch.cat([value[name].reshape(-1) for value in values])
    return tensors


def unpacked(tensors: dict[str, torch.Tensor], count: int) -> list[Value]:
    """The ``count`` examples' values of :func:`packed` tensors; a ValueError if they do not hold ``count``."""
    names = sorted({key.rsplit("/", 1)[0] for key in tensors})
    split = {}
    for name in names:
        values, shapes = tensors[f"{name}/values"], tensors[f"{name}/shapes"]
        sizes = shapes.prod(-1)
        if len(shapes) != count or int(sizes.sum()) != values.numel():
            raise ValueError(f"size mismatch in {name}")
        split[name] = [chunk.view(*shape) for chunk, shape in zip(values.split(sizes.tolist()), shapes.tolist())]
    return [{name: split[name][i] for name in names} for i in range(count)]


def _write(path: Path, key: str, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    atomic_write(path, lambda temporary: save_file(tensors, str(temporary), metadata={"fingerprint": key}))


def _read(path: Path, key: str, count: int) -> list[Value] | None:
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as file:
            if file.metadata().get("fingerprint") != key:
                raise ValueError("fingerprint mismatch")
            return unpacked({name: file.get_tensor(name) for name in file.keys()}, count)
    except Exception as error:  # a damaged or foreign file is recomputed, never trusted
        log.warning("ignoring the cached values in %s (%s); recomputing", path, error)
        return None


def mean_completion_logprob(logps: torch.Tensor, example: TokenizedExample) -> float:
    """The length-normalised log-likelihood of an example's (first) completion: PoFT's r(x, y)."""
    mask = torch.tensor(example.sequences[0].completion_mask[1:])
    return float((logps[0, : mask.numel()] * mask).sum() / mask.sum())
