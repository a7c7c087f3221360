"""Checks that fail a run before training starts instead of hours into it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path


class PreflightError(RuntimeError):
    """The run cannot succeed as configured; the message says why."""


def check_output_dir(path: Path, needed_bytes: int, what: str) -> None:
    """``path`` must be a writable folder (created if missing) on a disk with room for ``needed_bytes``."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as error:
        raise PreflightError(f"the {what} folder {path} is not writable: {error}") from error
    free = shutil.disk_usage(path).free
    if free < needed_bytes:
        raise PreflightError(
            f"the {what} folder {path} has {free / 2**30:.2f} GiB free, but one checkpoint needs about {needed_bytes / 2**30:.2f} GiB"
        )


def parameter_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())
