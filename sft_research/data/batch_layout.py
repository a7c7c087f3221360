"""Batch layouts computed on the host, in the data loader's workers: the padded length rounded up to one of a few
sizes, and for padding-free packing, where every token of a micro-batch goes in one packed row and where each label
position's value comes back from. The training step then runs on tensors of a few static shapes, with no
data-dependent shape and no host sync of its own (a compiled step recompiles once per size, not once per batch).
"""

from __future__ import annotations

import torch


def packed_layout(rows: list[list[int]], length: int, size: int) -> dict[str, torch.Tensor]:
    """The packed layout of a micro-batch's R right-padded rows of ``length`` tokens in one row of ``size`` tokens.
    ``rows[r]`` holds the lengths of row r's documents in order (one for an example; several for a fixed-length block
    of conversations), whose sum is its real tokens, the first of the row.

    Returns:
        gather: ``[size]`` index of each packed token in the flattened ``[R * L]`` rows (any, for the padding);
        positions: ``[size]`` position of each packed token within its document (restarting at 0);
        document: ``[size]`` the document each packed token comes from, numbered across the rows, and one number
            more for the padding after them (a document of its own, so that no real token attends to it);
        unpack: ``[R, L - 1]`` for each label position of the rows, its packed label position, or ``size - 1`` (a slot
            that holds zero) where the row has no label there or its label starts another document;
        pack: ``[size - 1]`` for each packed label position, its label position in the flattened ``[R * (L - 1)]``
            rows, or ``R * (L - 1)`` (a zero slot) across a document boundary and in the padding.
    """
    count = len(rows)
    total = sum(sum(documents) for documents in rows)
    if total > size:
        raise ValueError(f"{total} tokens do not fit a packed row of {size}")
    gather, positions, document, pack = [], [], [], []
    unpack = torch.full((count, length - 1), size - 1, dtype=torch.int64)
    zero, number = count * (length - 1), 0
    for row, documents in enumerate(rows):
        offset = 0  # where the document starts in its row
        for n in documents:
            start = len(gather)
            gather += range(row * length + offset, row * length + offset + n)
            positions += range(n)
            document += [number] * n
            number += 1
            labels = max(0, n - 1)
            unpack[row, offset : offset + labels] = torch.arange(start, start + labels)
            pack += [row * (length - 1) + offset + t for t in range(labels)] + [zero]
            offset += n
    padding = size - total
    gather += [0] * padding  # any token will do: the padding is a document of its own, out of every loss
    positions += list(range(padding))
    document += [number] * padding
    pack = pack[: size - 1]
    pack += [zero] * (size - 1 - len(pack))
    return {
        "gather": torch.tensor(gather, dtype=torch.int64),
        "positions": torch.tensor(positions, dtype=torch.int64),
        "document": torch.tensor(document, dtype=torch.int64),
        "unpack": unpack,
        "pack": torch.tensor(pack, dtype=torch.int64),
    }
