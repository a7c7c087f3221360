import math

from sft_research.optim import warmup_cosine


def test_warmup_then_cosine_to_floor():
    total = 20
    values = [warmup_cosine(s, total, warmup_ratio=0.1, min_lr_ratio=0.1) for s in range(total)]
    assert values[0] == 0.5 and values[1] == 1.0  # two warmup steps
    assert math.isclose(values[2], 1.0)
    assert all(a >= b for a, b in zip(values[2:], values[3:]))
    assert math.isclose(warmup_cosine(11, total, 0.1, 0.1), 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 9 / 18)))
    assert math.isclose(warmup_cosine(total, total, 0.1, 0.1), 0.1)
