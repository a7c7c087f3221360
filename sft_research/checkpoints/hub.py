"""Whether the Hugging Face hub can be reached, asked once per process in at most a few seconds. Without it, a hub
id that is not in the local cache fails at once, instead of after the hub clients' retries (half a minute to a
minute of "Retrying in 8s"); one that is cached loads from the cache."""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlparse


@functools.cache
def hub_reachable(timeout_s: float = 3.0) -> bool:
    """A TCP connection to the hub's endpoint (``HF_ENDPOINT``) opens within ``timeout_s``; false in offline mode."""
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout_s).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def cache_only_unless_reachable() -> Iterator[bool]:
    """Within: the hub clients (huggingface_hub, datasets) read their local caches only when the hub cannot be
    reached. Yields whether it can."""
    if hub_reachable():
        yield True
        return
    import datasets.config
    import huggingface_hub.constants

    saved = huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    huggingface_hub.constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield False
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


def hub_file(repo_id: str, filename: str) -> str | None:
    """One small file of a hub model (its ``config.json``, say), without its weights: from the local Hugging Face
    cache (``HF_HUB_CACHE``), else downloaded alone when the hub can be reached; None when neither has it."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, filename)
    if isinstance(cached, str):
        return cached
    if not hub_reachable():
        return None
    try:
        return hf_hub_download(repo_id, filename)
    except (OSError, ValueError):  # no such repository or file, a gated one, an invalid id, a failed download
        return None
