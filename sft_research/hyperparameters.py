"""A run's hyperparameters as loggers compare runs by them: its whole resolved config, flattened to dotted keys with
plain values (``model.optimizer.lr: 5.0e-05``), written to ``hparams.yaml`` and to TensorBoard's hparams table."""

from __future__ import annotations

from typing import Any

Scalar = str | int | float | bool | None


def flat_hyperparameters(config: Any, prefix: str = "") -> dict[str, Scalar]:
    """Mappings flattened to dotted keys; lists and other values that loggers cannot hold as a number, as text."""
    if hasattr(config, "as_dict"):  # a jsonargparse Namespace
        config = config.as_dict()
    if isinstance(config, dict):
        flat: dict[str, Scalar] = {}
        for key, value in config.items():
            flat |= flat_hyperparameters(value, f"{prefix}{key}.")
        return flat
    key = prefix.removesuffix(".")
    return {key: config if config is None or isinstance(config, (str, int, float, bool)) else str(config)}
