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


def test_optimizer_choice():
    import torch

    from sft_research.optim import OptimizerConfig, build_optimizer

    parameters = [torch.nn.Parameter(torch.ones(2))]
    assert isinstance(build_optimizer(parameters, OptimizerConfig(), 10)[0], torch.optim.AdamW)
    rmsprop, scheduler = build_optimizer(parameters, OptimizerConfig(name="rmsprop", lr=0.5, warmup_ratio=0.5), 10)
    assert isinstance(rmsprop, torch.optim.RMSprop) and rmsprop.param_groups[0]["alpha"] == 0.999
    assert scheduler.get_last_lr()[0] == 0.5 * (1 / 5)
