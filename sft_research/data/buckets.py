"""The few lengths a batch's sequences are padded to, so that shapes repeat: a compiled training step recompiles once
per length, not once per batch. Shared by the data loader (which pads and packs) and the model (which cuts)."""

from __future__ import annotations

import math

GRANULARITY = 64


def bucket(length: int) -> int:
    """The size a length is padded to: multiples of 64 up to 256, then about two sizes per doubling (64, 128, 192,
    256, 384, 512, 768, 1024, 1536, ...), so that padding never adds half again."""
    if length <= 4 * GRANULARITY:
        return max(GRANULARITY, math.ceil(length / GRANULARITY) * GRANULARITY)
    power = 2 ** math.floor(math.log2(length))
    for size in (power, power * 3 // 2, power * 2):
        if size >= length:
            return size
    raise AssertionError("unreachable")
