"""Two CPU processes train as one: under FSDP and DDP, in every bf16 mode, the rotary ``inv_freq`` is exactly its
float32 value at every forward on every process, and the gradient norm is the whole model's, so that one process,
DDP and FSDP log the same norm, clip by it, and make the same update. Each fit runs ``tests/two_process_fit.py`` as
its own script, as a launcher would (Lightning starts the second process by running it again)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROWS, write_jsonl

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("two_process_fit.py")
HEAD_DIM = 128
# Llama-3.1's rotary (rope_type llama3, theta 5e5) and Qwen2.5's (default rotary, theta 1e6), at head dim 128.
ROTARIES = {
    "llama3": dict(
        architecture="llama",
        rope_theta=5e5,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    ),
    "qwen2": dict(architecture="qwen2", rope_theta=1e6),
}
WRAP = {
    "llama": ["transformers.models.llama.modeling_llama.LlamaDecoderLayer", "transformers.models.llama.modeling_llama.LlamaForCausalLM"],
    "qwen2": ["transformers.models.qwen2.modeling_qwen2.Qwen2DecoderLayer", "transformers.models.qwen2.modeling_qwen2.Qwen2ForCausalLM"],
}


def build_rotary_model(path: Path, tokenizer_dir: Path, architecture: str, **rope) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config_class, model_class = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[architecture]
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=2 * HEAD_DIM,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=131072,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **rope,
    )
    torch.manual_seed(0)
    model_class(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def float32_inv_freq(model_dir: Path) -> torch.Tensor:
    """``inv_freq`` as transformers computes it in float32 from the model's config."""
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = AutoConfig.from_pretrained(model_dir)
    rope_type = config.rope_parameters.get("rope_type", "default")
    if rope_type == "default":
        theta = config.rope_parameters["rope_theta"]
        return 1.0 / (theta ** (torch.arange(0, HEAD_DIM, 2, dtype=torch.int64).float() / HEAD_DIM))
    inv_freq, _ = ROPE_INIT_FUNCTIONS[rope_type](config, "cpu")
    return inv_freq.float()


def fit(model_dir: Path, data: Path, out: Path, strategy: str, devices: int, *options: str) -> list[dict]:
    """Runs the script; each process's record."""
    architecture = "qwen2" if "qwen2" in model_dir.name else "llama"
    command = [sys.executable, str(SCRIPT), str(model_dir), str(data), str(out), "--strategy", strategy, "--devices", str(devices)]
    command += [*options, "--wrap", *WRAP[architecture]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(devices)]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "rows.jsonl", ROWS)


@pytest.fixture(scope="module", params=sorted(ROTARIES))
def rotary_model(request, tiny_model_dir, tmp_path_factory) -> Path:
    return build_rotary_model(tmp_path_factory.mktemp("rotary") / request.param, tiny_model_dir, **ROTARIES[request.param])


@pytest.mark.parametrize(
    "strategy, precision, compiled",
    [("fsdp", "bf16-true", False), ("fsdp", "bf16-true", True), ("fsdp", "bf16-mixed", False), ("ddp", "bf16-true", False)],
)
def test_inv_freq_is_float32_exact_at_every_forward_on_every_process(rotary_model, data, tmp_path, strategy, precision, compiled):
    """FSDP casts every buffer to bf16 at its first forward by rebinding the buffer's data in place; the tensor the
    restore hook puts back must not be the one it keeps."""
    options = ["--precision", precision, "--steps", "3"] + (["--compile"] if compiled else [])
    exact = float32_inv_freq(rotary_model)
    for rank, record in enumerate(fit(rotary_model, data, tmp_path, strategy, 2, *options)):
        assert len(record["inv_freq"]) == 3, f"rank {rank}: one forward per step"
        assert set(record["inv_freq_dtypes"]) == {"torch.float32"}, f"rank {rank}: {record['inv_freq_dtypes']}"
        for step, inv_freq in enumerate(record["inv_freq"]):
            assert torch.equal(torch.tensor(inv_freq, dtype=torch.float32), exact), f"rank {rank}, forward {step}"


def test_one_process_ddp_and_fsdp_clip_by_the_same_global_norm_and_update_alike(tiny_model_dir, data, tmp_path):
    """The same global batch, gradients clipped (norm about 3.5, limit 0.5) at each of 2 steps, float32: the logged
    norm and the weights after the steps agree. Per-shard clipping under FSDP logged and clipped by rank 0's shard."""
    options = ("--steps", "2", "--lr", "1e-4", "--max_grad_norm", "0.5")
    runs = {}
    for strategy, devices in (("auto", 1), ("ddp", 2), ("fsdp", 2)):
        out = tmp_path / strategy
        records = fit(tiny_model_dir, data, out, strategy, devices, *options)
        runs[strategy] = (records, torch.load(out / "weights.pt"))
    (one, one_weights) = runs["auto"]
    norms = [step["grad_norm"] for step in one[0]["steps"]]
    assert all(norm > 2 for norm in norms), f"clipping is active at every step: {norms}"
    for strategy in ("ddp", "fsdp"):
        records, weights = runs[strategy]
        for rank, record in enumerate(records):
            got = [step["grad_norm"] for step in record["steps"]]
            assert got == pytest.approx(norms, rel=1e-5), f"{strategy} rank {rank} logs the whole model's norm"
        assert weights.keys() == one_weights.keys()
        for name, value in one_weights.items():
            torch.testing.assert_close(weights[name], value, rtol=1e-5, atol=1e-5 * value.abs().max().item(), msg=f"{strategy}: {name}")


@pytest.mark.parametrize("state_dict_type", ["full", "sharded"])
def test_fsdp_resumes_bitwise_from_a_state_saved_after_the_first_step(tiny_model_dir, data, tmp_path, state_dict_type):
    """bf16-true with float32 master weights under FSDP on 2 processes: a run resumed from the state saved after
    step 1 makes step 2 exactly as an unbroken run does. A full state once held Adam's moments and the masters as
    one reused buffer on CPU processes, and the resumed run's weights went NaN."""
    options = ("--precision", "bf16-true", "--steps", "2", "--lr", "1e-3", "--state_dict_type", state_dict_type)
    unbroken = fit(tiny_model_dir, data, tmp_path / "unbroken", "fsdp", 2, *options, "--save_states", str(tmp_path / "states"))
    resumed = fit(tiny_model_dir, data, tmp_path / "resumed", "fsdp", 2, *options, "--ckpt_path", str(tmp_path / "states" / "step=1.ckpt"))
    assert [step["loss"] for step in resumed[0]["steps"]] == [unbroken[0]["steps"][1]["loss"]]
    weights, wanted = (torch.load(tmp_path / run / "weights.pt") for run in ("resumed", "unbroken"))
    for name, value in wanted.items():
        assert torch.equal(weights[name], value), name
