import math

from sft_research.optim import lr_multiplier


def test_warmup_then_cosine_to_floor():
    total = 20
    values = [lr_multiplier(s, total, warmup_ratio=0.1, min_lr_ratio=0.1) for s in range(total)]
    assert values[0] == 0.5 and values[1] == 1.0  # two warmup steps
    assert math.isclose(values[2], 1.0)
    assert all(a >= b for a, b in zip(values[2:], values[3:]))
    assert math.isclose(lr_multiplier(11, total, 0.1, 0.1), 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 9 / 18)))
    assert math.isclose(lr_multiplier(total, total, 0.1, 0.1), 0.1)


def test_warmup_then_linear_decay_to_zero():
    total = 20
    values = [lr_multiplier(s, total, 0.1, 0.0, "linear") for s in range(total + 1)]
    assert values[:2] == [0.5, 1.0]
    assert math.isclose(values[11], 1 - 9 / 18) and math.isclose(values[20], 0.0)
    assert all(math.isclose(a - b, 1 / 18) for a, b in zip(values[2:20], values[3:21]))


def test_optimizer_choice():
    import torch

    from sft_research.optim import OptimizerConfig, build_optimizer

    parameters = [torch.nn.Parameter(torch.ones(2))]
    assert isinstance(build_optimizer(parameters, OptimizerConfig(), 10)[0], torch.optim.AdamW)
    rmsprop, scheduler = build_optimizer(parameters, OptimizerConfig(name="rmsprop", lr=0.5, warmup_ratio=0.5), 10)
    assert isinstance(rmsprop, torch.optim.RMSprop) and rmsprop.param_groups[0]["alpha"] == 0.99  # HF and torch default, the IRFT run's
    assert scheduler.get_last_lr()[0] == 0.5 * (1 / 5)
