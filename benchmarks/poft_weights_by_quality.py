"""PoFT's per-example weight at the first step, τ₀ = σ(r̄ − r_θ₀), on clean and on corrupted training answers.

    python benchmarks/poft_weights_by_quality.py runs/poft_scaled_down

Reads the PoFT stage of a finished `experiments/poft/scaled_down.yaml` pipeline (its config and its baselines), and
scores every training example with the start model and the baselines exactly as training did (same data, same
cache). A soft data filter gives the corrupted answers (quality < 1) the smaller weights.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch
import yaml

from sft_research.fit.lightning_cli import build_fit
from sft_research.frozen import FrozenContext
from sft_research.frozen.cache import frozen_label_logprobs, mean_completion_logprob


def main(pipeline_dir: str) -> None:
    config = yaml.safe_load((Path(pipeline_dir) / "poft" / "fit.yaml").read_text())
    cli = build_fit(config)
    data, module = cli.datamodule, cli.model
    data.setup("fit")
    examples, pad = data.train_examples, data.tokenizer.pad_token_id

    (baselines,) = module.objective.frozen_inputs
    context = FrozenContext(module.pretrained, module.reference, data.chat_tokenizer)
    r_bar = torch.stack(baselines.compute(examples, context)).double()
    start = frozen_label_logprobs(module.pretrained, examples, pad, batch_size=16)
    r_start = torch.tensor([mean_completion_logprob(lp, ex) for lp, ex in zip(start, examples)], dtype=torch.float64)
    weights = torch.sigmoid(r_bar - r_start)
    clean = [w for w, e in zip(weights.tolist(), examples) if e.quality >= 1]
    noisy = [w for w, e in zip(weights.tolist(), examples) if e.quality < 1]
    print(f"{pipeline_dir}: baselines {baselines.baselines}")
    for name, values in (("clean (quality 1)", clean), ("corrupted (quality < 1)", noisy)):
        print(f"  {name}: {len(values)} examples, mean τ₀ {statistics.mean(values):.3f}, median {statistics.median(values):.3f}")
    below = sum(w < statistics.median(clean) for w in noisy) / len(noisy)
    print(f"  corrupted answers below the clean median τ₀: {below:.1%}")


if __name__ == "__main__":
    main(sys.argv[1])
