"""Random-number generators saved with every training state and restored with it, so that a resumed fit draws what
the uninterrupted one would have (dropout, sampling)."""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch


class RNGState(L.Callback):
    def on_save_checkpoint(self, trainer, module, checkpoint: dict) -> None:
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, trainer, module, checkpoint: dict) -> None:
        if "rng_states" in checkpoint:
            set_rng_states(checkpoint["rng_states"])


def rng_states() -> dict:
    # Plain types and tensors only, so that checkpoints load with torch.load(weights_only=True).
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    numpy_state = [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss]
    states = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy_state}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
