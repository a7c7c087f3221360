"""Schema fixtures of hub datasets for rehearsals.

Each folder of ``datasets/`` mirrors a hub dataset repository: a README whose header holds the dataset card's
features and splits, and a few synthetic rows per split in exactly those columns and types. A rehearsal reads it
through the same :class:`~sft_research.data.FileDataset` (``datasets.load_dataset`` on the folder, with the card's
features) and the same record-kind detection and column renames as the real run.
"""

from __future__ import annotations

from pathlib import Path

from sft_research.data.sources import could_be_hub_id
from sft_research.errors import ConfigError

DATASETS = Path(__file__).parent / "datasets"


def fixture(path: str) -> Path | None:
    """The fixture folder that stands in for the hub dataset ``path``; None for a local path (read as it is)."""
    if Path(path).expanduser().exists() or not could_be_hub_id(path):
        return None
    folder = DATASETS / path.replace("/", "--")
    if not folder.is_dir():
        raise ConfigError(
            f"rehearse: no schema fixture for the hub dataset {path}: add {folder.relative_to(DATASETS.parents[2])}/ "
            "with its card's features and splits and a few rows (see the folders beside it), or give a local path"
        )
    return folder
