"""How many updates bf16 weights keep, with and without float32 master weights.

Weights drawn with std 0.02 (a transformer's initialisation scale), stored in bf16, take 10 AdamW steps on random
gradients at the learning rates the paper configs use; the table gives the share of weights that changed at all.

    python benchmarks/bf16_stale_updates.py
"""

from __future__ import annotations

import torch

from sft_research.train.master_weights import MasterWeights

LEARNING_RATES = (5e-7, 1e-6, 1e-5, 2e-5)


def changed_fraction(lr: float, master_weights: bool, steps: int = 10, size: int = 1_000_000) -> float:
    generator = torch.Generator().manual_seed(0)
    weight = torch.nn.Parameter((torch.randn(size, generator=generator) * 0.02).to(torch.bfloat16))
    start = weight.detach().clone()
    make = lambda tensors: torch.optim.AdamW(tensors, lr=lr, weight_decay=0.0)  # noqa: E731
    optimizer = MasterWeights([weight], make) if master_weights else make([weight])
    for _ in range(steps):
        weight.grad = torch.randn(size, generator=generator).to(torch.bfloat16)
        optimizer.step()
    after = optimizer.masters[0] if master_weights else weight.detach().float()
    return (after != start.float()).float().mean().item()


def main() -> None:
    print("| lr | bf16 weights changed (stepped directly) | float32 masters changed |")
    print("|---|---|---|")
    for lr in LEARNING_RATES:
        print(f"| {lr:g} | {changed_fraction(lr, False):.1%} | {changed_fraction(lr, True):.1%} |")


if __name__ == "__main__":
    main()
