"""What each run of a suite spent on training, so that no arm wins by spending more: as its fits recorded it while
they trained (``compute.json`` in each fit's log folder, :class:`~sft_research.train.callbacks.compute_record.ComputeRecord`),
and the tokens each IRFT round sampled, as the round counted them (``generation.json``)."""

from __future__ import annotations

import json
from pathlib import Path

from sft_research.train.callbacks.compute_record import RECORD, Compute, read_compute


def run_compute(run_dir: Path) -> tuple[Compute, dict[str, str]]:
    """The compute of every fit under ``run_dir`` summed, and per fit (its folder relative to ``run_dir``) the
    fingerprint of its training data as rendered."""
    total, fingerprints = Compute(), {}
    for config_path in sorted(run_dir.rglob("fit.yaml")):
        fit_dir = config_path.parent
        compute, fingerprints[fit_dir.relative_to(run_dir).as_posix()] = fit_compute(fit_dir)
        total.add(compute)
    return total, fingerprints


def fit_compute(fit_dir: Path) -> tuple[Compute, str]:
    """A fit's compute, from the newest attempt that finished (an attempt killed part-way leaves no record), with an
    IRFT round's generated tokens."""
    finished = [path.parent for path in (fit_dir / "logs").glob(f"version_*/{RECORD}")]
    if not finished:
        raise ValueError(f"{fit_dir}: no finished fit recorded what it spent ({RECORD} in logs/version_N)")
    compute, fingerprint = read_compute(max(finished, key=lambda path: int(path.name.removeprefix("version_"))))
    if (fit_dir / "generation.json").is_file():
        compute.generated_tokens = generated_tokens(fit_dir)
    return compute, fingerprint


def generated_tokens(round_dir: Path) -> int:
    """Tokens an IRFT round sampled, as its ``generation.json`` counted them (every generation, end of turn included,
    whether its pair was kept or not)."""
    report = json.loads((round_dir / "generation.json").read_text())
    if "generated_tokens" not in report:
        raise ValueError(f"{round_dir / 'generation.json'}: no generated_tokens (written by an older version): run the round again")
    return report["generated_tokens"]
