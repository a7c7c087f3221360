"""What a run ran: the commit of the code, the library versions and the identity of the model it started from,
written to every fit's run folder as ``run.json`` (and recorded in every benchmark row).

A model's identity is its name and where it came from, never a hash of its weights (64 GB at every fit would be too
slow): a hub id with the revision (commit) of the snapshot it loads from the local Hugging Face cache, an embedded
model with the package version that ships it, a local folder by its absolute path, an adapter with its base model's.
"""

from __future__ import annotations

import json
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path

import sft_research
from sft_research.checkpoints.embedded import EMBEDDED_PREFIX
from sft_research.checkpoints.names import adapter_base, resolve
from sft_research.runs.atomic_files import atomic_write_text

RUN_RECORD = "run.json"


def versions() -> dict[str, str]:
    import lightning
    import torch
    import transformers

    return {
        "sft_research": sft_research.__version__,
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "transformers": transformers.__version__,
        "peft": version("peft"),
        "reasoning_gym": version("reasoning-gym"),
        "python": platform.python_version(),
    }


def git_commit(package_dir: Path) -> str | None:
    """The commit checked out where the package's code lives; None when that code is not tracked by git (an
    installed copy, even one inside another checkout) or git is missing. Uncommitted changes are not recorded."""
    try:
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", "__init__.py"], cwd=package_dir, capture_output=True, timeout=30)
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=package_dir, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() if tracked.returncode == 0 and head.returncode == 0 else None


def model_identity(name_or_path: str) -> dict:
    """Where the model ``name_or_path`` comes from (see the module's text)."""
    if name_or_path.startswith(EMBEDDED_PREFIX):
        return {"name": name_or_path, "source": "embedded", "sft_research": sft_research.__version__}
    resolved = Path(resolve(name_or_path))
    if resolved.is_dir():
        identity = {"name": str(resolved.resolve()), "source": "local folder"}
        base = adapter_base(name_or_path)
        return identity if base is None else {**identity, "adapter_of": model_identity(base)}
    return {"name": name_or_path, "source": "hub", "revision": hub_revision(name_or_path)}


def hub_revision(repo_id: str) -> str | None:
    """The commit of the cached snapshot a hub model loads from (its folder's name under ``snapshots/``); None when
    it is not in the cache."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json")
    return Path(cached).parent.name if isinstance(cached, str) else None


def run_record(model: str, reference: str | None = None) -> dict:
    """The record of a fit that starts from ``model`` (and scores against ``reference``, where it is another model)."""
    record = {"git_commit": git_commit(Path(sft_research.__file__).parent), "versions": versions(), "model": model_identity(model)}
    if reference is not None and reference != model:
        record["reference"] = model_identity(reference)
    return record


def write_run_record(folder: Path, model: str, reference: str | None = None) -> Path:
    path = folder / RUN_RECORD
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(run_record(model, reference), indent=1) + "\n")
    return path
