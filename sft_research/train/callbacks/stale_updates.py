"""Are the optimizer's updates reaching the weights? Low-precision weights without float32 masters drop updates below
half a unit in their last place: in bf16 at lr 5e-7, about 99% of them."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from sft_research.train.master_weights import updated_tensors


class StaleUpdates(L.Callback):
    """Over the first ``steps`` optimizer steps, logs ``train/stale_update_fraction``: of the trained weights whose
    gradient was non-zero, the fraction that the step left unchanged. It looks at the tensors the optimizer updates
    (the float32 masters where there are some), at up to ``samples`` evenly spaced elements of each. Above one half it
    warns, once, naming the precision and the learning rate.
    """

    def __init__(self, steps: int = 10, samples: int = 4096, threshold: float = 0.5):
        self.steps, self.samples, self.threshold = steps, samples, threshold
        # Each measured step's (updated tensor, sampled indices, values before the step, gradient non-zero there);
        # None between measured steps. A process whose shards are all empty measures nothing but logs too (a collective).
        self.watched: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
        self.warned = False

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        if trainer.global_step >= self.steps:
            return
        self.watched, self.step, self.lr = [], trainer.global_step, optimizer.param_groups[0]["lr"]
        for param, target in updated_tensors(getattr(optimizer, "optimizer", optimizer)):
            if param.grad is None or target.numel() == 0:
                continue
            index = torch.arange(0, target.numel(), max(1, target.numel() // self.samples), device=target.device)
            before = target.detach().reshape(-1)[index].clone()
            self.watched.append((target, index, before, param.grad.reshape(-1)[index] != 0))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.watched is None:
            return
        zero = torch.zeros((), device=module.device)
        stale = sum(
            (((target.detach().reshape(-1)[index] == before) & moving).sum() for target, index, before, moving in self.watched), zero
        )
        candidates = sum((moving.sum() for *_, moving in self.watched), zero)
        self.watched = None
        fraction = (stale / candidates.clamp(min=1)).float()
        module.log("train/stale_update_fraction", fraction, sync_dist=True)
        if not self.warned and fraction.item() > self.threshold:
            self.warned = True
            rank_zero_warn(
                f"{fraction.item():.0%} of the trained weights with a non-zero gradient did not change at step "
                f"{self.step} (precision {trainer.precision}, lr {self.lr:.3g}): the updates round away in the "
                "weights' dtype. Keep float32 master weights (model.optimizer.master_weights: true), or train in "
                "bf16-mixed, whose weights are float32 (model.pretrained.dtype follows trainer.precision)"
            )
