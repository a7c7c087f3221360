import copy
import math

import torch

from sft_research.train.optim import lr_multiplier


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
    from sft_research.train.optim import OptimizerConfig, build_optimizer

    model = torch.nn.Linear(2, 1)
    assert isinstance(build_optimizer(model, OptimizerConfig(), 10)[0], torch.optim.AdamW)
    rmsprop, scheduler = build_optimizer(model, OptimizerConfig(name="rmsprop", lr=0.5, warmup_ratio=0.5), 10)
    assert isinstance(rmsprop, torch.optim.RMSprop) and rmsprop.param_groups[0]["alpha"] == 0.99  # HF and torch default, the IRFT run's
    assert scheduler.get_last_lr()[0] == 0.5 * (1 / 5)


class Block(torch.nn.Module):
    """A linear layer with a bias, a LayerNorm, an RMSNorm and an embedding: what transformers' Trainer tells apart."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(5, 4)
        self.proj = torch.nn.Linear(4, 4)
        self.layer_norm = torch.nn.LayerNorm(4)
        self.rms_norm = torch.nn.RMSNorm(4)
        self.scale = torch.nn.Parameter(torch.ones(4))


def test_biases_and_layernorm_weights_are_exempt_from_decay_as_in_transformers_4_trainer():
    """transformers 4.46.1's get_decay_parameter_names (the official iw-SFT run's): every name holding "bias" and the
    parameters of nn.LayerNorm modules; RMSNorm weights, and parameters of the model itself, are decayed."""
    from sft_research.train.optim import OptimizerConfig, build_optimizer, decay_exempt_names

    model = Block()
    assert decay_exempt_names(model) == {"proj.bias", "layer_norm.weight", "layer_norm.bias"}
    config = OptimizerConfig(lr=0.1, weight_decay=0.5, decay_exempt="biases_and_layernorm")
    optimizer, _ = build_optimizer(model, config, 10)
    names = {id(p): name for name, p in model.named_parameters()}
    groups = [({names[id(p)] for p in group["params"]}, group["weight_decay"]) for group in optimizer.param_groups]
    assert groups == [
        ({"embed.weight", "proj.weight", "rms_norm.weight", "scale"}, 0.5),
        ({"proj.bias", "layer_norm.weight", "layer_norm.bias"}, 0.0),
    ]
    assert len(build_optimizer(model, OptimizerConfig(weight_decay=0.5), 10)[0].param_groups) == 1, "none: every parameter decays"


def test_on_qwen2_only_the_attention_biases_are_exempt():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from sft_research.train.optim import decay_exempt_names

    config = Qwen2Config(
        vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1
    )
    exempt = decay_exempt_names(Qwen2ForCausalLM(config))
    assert exempt == {f"model.layers.0.self_attn.{name}_proj.bias" for name in "qkv"}


def test_master_weights_decay_each_group_by_its_own_rate():
    """bf16 weights through float32 masters: a zero gradient leaves AdamW's decoupled decay alone, w(1 - lr * wd)
    for the decayed group and no change for the exempt one; the state dict keeps both groups."""
    from sft_research.train.master_weights import MasterWeights
    from sft_research.train.optim import OptimizerConfig, build_optimizer

    model = Block().to(torch.bfloat16)
    optimizer, _ = build_optimizer(model, OptimizerConfig(lr=0.1, weight_decay=0.5, decay_exempt="biases_and_layernorm"), 10)
    assert isinstance(optimizer, MasterWeights) and [g["weight_decay"] for g in optimizer.inner.param_groups] == [0.5, 0.0]
    before = [master.clone() for master in optimizer.masters]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # at lr 0.1 (no warmup)
    exempt = {id(p) for p in optimizer.param_groups[1]["params"]}
    for (param, master), start in zip(optimizer.updated_tensors(), before):
        torch.testing.assert_close(master, start if id(param) in exempt else start * (1 - 0.1 * 0.5), rtol=1e-6, atol=0)
    state = copy.deepcopy(optimizer.state_dict())
    assert [g["weight_decay"] for g in state["param_groups"]] == [0.5, 0.0]
    assert sorted(i for g in state["param_groups"] for i in g["params"]) == list(range(len(optimizer.masters)))
    fresh, _ = build_optimizer(copy.deepcopy(model), OptimizerConfig(lr=0.1, decay_exempt="biases_and_layernorm"), 10)
    fresh.load_state_dict(state)
    assert [g["weight_decay"] for g in fresh.inner.param_groups] == [0.5, 0.0], "each group's rate comes back"
    for restored, master in zip(fresh.masters, optimizer.masters):
        torch.testing.assert_close(restored, master, rtol=0, atol=0)
