"""``sft-research COMMAND --help`` at once. A command's parser is built from the signatures of the trainer, the module
and the data (importing torch and Lightning: about 6 s here), and its help text stays the same until this package's
files or a library's version change; so the text is kept, keyed by both, and printed from the cache after the
first time."""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from sft_research.checkpoints.embedded import cache_dir
from sft_research.runs.atomic_files import atomic_write_text

LIBRARIES = ("torch", "lightning", "jsonargparse", "transformers", "peft", "docstring-parser")


def cached_help(command: str, produce: Callable[[], object]) -> str:
    """The help text of ``command``: from the cache, or from ``produce()`` (which prints it and exits, as argparse
    does), then kept."""
    path = cache_dir() / "help" / f"{command}-{fingerprint()}.txt"
    if path.is_file():
        return path.read_text()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        try:
            produce()
        except SystemExit as done:
            if done.code not in (0, None):
                raise
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, printed.getvalue())
    return printed.getvalue()


def fingerprint() -> str:
    """This package's files (names, sizes, modification times) and the versions of the libraries the parsers read."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent.parent
    for file in sorted(package.rglob("*")):
        if file.suffix in (".py", ".yaml") and "__pycache__" not in file.parts:
            stat = file.stat()
            digest.update(f"{file.relative_to(package)} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    for library in LIBRARIES:
        with contextlib.suppress(PackageNotFoundError):
            digest.update(f"{library} {version(library)}\n".encode())
    return digest.hexdigest()[:16]
