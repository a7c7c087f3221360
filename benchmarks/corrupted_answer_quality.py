"""How the task's verifier scores the corrupted training answers of an experiment (its `quality`).

    python benchmarks/corrupted_answer_quality.py experiments/iw_sft/scaled_down.yaml

A corrupted answer is one that differs from the generator's; reasoning-gym's numeric verifiers give partial credit
to wrong answers that share digits with the right one, so not every corrupted answer has quality 0.
"""

from __future__ import annotations

import sys
from collections import Counter

import yaml

from sft_research.data import ReasoningGymTask


def main(path: str) -> None:
    config = yaml.safe_load(open(path))
    task = ReasoningGymTask(**config["data"]["train"]["init_args"])
    records = task.records()
    corrupted = [r for r, entry in zip(records, task.train_entries) if r.fields["completion"] != entry["answer"]]
    counts = Counter(round(r.fields["quality"], 2) for r in corrupted)
    print(f"{path}: {len(corrupted)} of {len(records)} training answers corrupted; their quality:")
    for quality, count in sorted(counts.items()):
        print(f"  {quality:g}: {count}")


if __name__ == "__main__":
    main(sys.argv[1])
