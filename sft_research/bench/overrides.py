"""How an arm changes the suite's fit config: settings laid over it, at any depth."""

from __future__ import annotations

import copy


def deep_merge(base: dict, *overrides: dict) -> dict:
    """``base`` with each of ``overrides`` laid over it in turn: a mapping over a mapping is merged key by key, any
    other value replaces what was there. Neither input is changed, and the result shares no part with them.

    A mapping that names another ``class_path`` than the one it lands on replaces it instead: one class's
    ``init_args`` mean nothing to another (a replay mixture over the task's own data source, say)."""
    merged = copy.deepcopy(base)
    for layer in overrides:
        for key, value in layer.items():
            current = merged.get(key)
            if (
                isinstance(value, dict)
                and isinstance(current, dict)
                and value.get("class_path", current.get("class_path")) == current.get("class_path")
            ):
                merged[key] = deep_merge(current, value)
            else:
                merged[key] = copy.deepcopy(value)
    return merged
