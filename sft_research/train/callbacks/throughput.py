"""Tokens per second and peak memory, logged every step as tensors (no host sync of their own)."""

from __future__ import annotations

import resource
import time

import lightning as L
import torch

from sft_research.runs import timings


class Throughput(L.Callback):
    """``train/tokens_per_s``: the real tokens of a step's batch (this process's share) over the step's wall time;
    ``train/peak_memory_gib``: peak accelerator memory, or the process's peak resident memory on CPU."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.start, self.timed = time.perf_counter(), sum(timings.SECONDS.values())

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        seconds = time.perf_counter() - self.start
        # Phases timed inside the step (an export of a curve point, on-the-fly frozen passes) count as themselves.
        timings.add("training steps", seconds - (sum(timings.SECONDS.values()) - self.timed))
        if logged_step(trainer, trainer.global_step):  # the step's optimizer step has happened: global_step counts it
            tokens = batch["attention_mask"].sum()
            module.log_dict({"train/tokens_per_s": tokens / seconds, "train/peak_memory_gib": peak_memory_gib(module.device)})


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def logged_step(trainer, step: int) -> bool:
    """Whether the metrics of optimizer step ``step`` (counted from 1) are logged, as the trainer's
    ``log_every_n_steps`` and ``max_steps`` say: values are read from the device on those steps only."""
    return step % trainer.log_every_n_steps == 0 or step >= trainer.max_steps > 0
