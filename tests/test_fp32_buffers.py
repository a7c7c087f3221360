"""The rotary embedding's inv_freq stays exactly float32 under every bf16 mode, at a realistic shape (head dim 128,
theta 1e6) and positions past 1,000, where a bf16-rounded inv_freq turns the angles by up to about a radian."""

import shutil

import lightning as L
import pytest
import torch
import torch.distributed as dist

from sft_research.data import FileDataset, SFTDataModule
from sft_research.model.loading import ModelConfig
from sft_research.objectives import SFT
from sft_research.rehearsal.strategy import CPUFSDPStrategy
from sft_research.train.module import FineTuningModule
from sft_research.train.optim import OptimizerConfig
from tests.conftest import ROWS, quiet_trainer, write_jsonl

HEAD_DIM, THETA, POSITIONS = 128, 1e6, 1100


@pytest.fixture(scope="module")
def long_rope_model(tiny_model_dir, tmp_path_factory):
    return build_long_rope_model(tmp_path_factory.mktemp("rope") / "model", tiny_model_dir)


def build_long_rope_model(path, tokenizer_dir):
    """A Qwen2-architecture model with Qwen2.5's RoPE (head dim 128, theta 1e6), one layer with sharp attention, and
    the tiny test tokenizer (also the GPU tests' model)."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=2 * HEAD_DIM,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        rope_theta=THETA,
        max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():  # sharp attention, as in a trained model, so that the rotation angles matter
        for projection in (model.model.layers[0].self_attn.q_proj, model.model.layers[0].self_attn.k_proj):
            projection.weight.normal_(0, 0.2)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def exact_inv_freq() -> torch.Tensor:
    return 1.0 / (THETA ** (torch.arange(0, HEAD_DIM, 2, dtype=torch.int64).float() / HEAD_DIM))


class WithUnprotectedBuffer(FineTuningModule):
    """Adds a float32 buffer after loading, which nothing protects: a witness that the precision mode casts buffers."""

    def configure_model(self) -> None:
        super().configure_model()
        self.model.model.register_buffer("witness", torch.ones(2), persistent=False)


def fit_one_step(model_dir, tmp_path, precision, dtype, strategy="auto"):
    L.seed_everything(0)
    module = WithUnprotectedBuffer(ModelConfig(str(model_dir), dtype=dtype), SFT(), OptimizerConfig(lr=1e-5))
    data = SFTDataModule(FileDataset(str(write_jsonl(tmp_path / "d.jsonl", ROWS))), tokenizer=str(model_dir), batch_size=4)
    trainer = quiet_trainer(tmp_path, devices=1, strategy=strategy, precision=precision, max_steps=1)
    trainer.fit(module, data)
    return module


def attention_output(model, ids: torch.Tensor) -> torch.Tensor:
    """The first layer's attention output, in float32."""
    captured = []
    layer = model.model.layers[0].self_attn
    handle = layer.register_forward_hook(lambda module, args, output: captured.append(output[0].float()))
    with torch.no_grad():
        model(input_ids=ids)
    handle.remove()
    return captured[0]


def check_rope(causal_lm) -> None:
    rotary = causal_lm.model.rotary_emb
    assert rotary.inv_freq.dtype == torch.float32
    assert torch.equal(rotary.inv_freq, exact_inv_freq()), "inv_freq holds the float32 values, not a rounded copy"
    ids = torch.randint(0, causal_lm.config.vocab_size, (1, POSITIONS), generator=torch.Generator().manual_seed(0))
    reference = copy_in_float32(causal_lm)
    wanted = attention_output(reference, ids)[:, 1000:]
    got = attention_output(causal_lm, ids)[:, 1000:]
    error = (got - wanted).abs().max() / wanted.abs().max()
    assert error < 0.05, f"attention past position 1,000 within bf16 tolerance of the float32 model ({error:.3f})"
    # The defect, for contrast: the same model with inv_freq rounded to bf16 and cast back up (a float32 buffer with
    # the wrong values) is far off at these positions.
    rotary = causal_lm.model.rotary_emb
    exact = rotary.inv_freq
    rotary.inv_freq = exact.to(torch.bfloat16).float()
    try:
        rounded = (attention_output(causal_lm, ids)[:, 1000:] - wanted).abs().max() / wanted.abs().max()
    finally:
        rotary.inv_freq = exact
    assert rounded > 4 * error and rounded > 0.1, f"a rounded inv_freq is visible here ({rounded:.3f} vs {error:.3f})"


def copy_in_float32(causal_lm):
    from transformers import AutoModelForCausalLM

    copy = AutoModelForCausalLM.from_config(causal_lm.config, dtype=torch.float32)
    copy.load_state_dict({k: v.float() for k, v in causal_lm.state_dict().items()})
    copy.model.rotary_emb.inv_freq = exact_inv_freq()
    return copy.eval()


@pytest.mark.slow
def test_bf16_true_keeps_inv_freq_float32(long_rope_model, tmp_path):
    module = fit_one_step(long_rope_model, tmp_path, "bf16-true", "bfloat16")
    assert next(module.model.parameters()).dtype == torch.bfloat16, "Lightning cast the module to bf16"
    assert module.model.model.witness.dtype == torch.bfloat16, "and its buffers"
    check_rope(module.model.eval())


@pytest.mark.slow
def test_fsdp_bf16_mixed_keeps_inv_freq_float32(long_rope_model, tmp_path):
    """FSDP's mixed precision casts buffers to its buffer_dtype (bf16 under Lightning's bf16-mixed); one CPU process
    under gloo, with the rehearsals' CPU FSDP strategy."""
    from torch.distributed.fsdp import FullyShardedDataParallel
    from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer, Qwen2ForCausalLM

    strategy = CPUFSDPStrategy(auto_wrap_policy={Qwen2DecoderLayer, Qwen2ForCausalLM}, state_dict_type="full")
    try:
        module = fit_one_step(long_rope_model, tmp_path, "bf16-mixed", "float32", strategy)
        wrapped = module.model
        assert isinstance(wrapped, FullyShardedDataParallel)
        rotary = wrapped.module.model.rotary_emb
        assert rotary.inv_freq.dtype == torch.float32 and torch.equal(rotary.inv_freq, exact_inv_freq())
        assert wrapped.module.model.witness.dtype == torch.bfloat16, "FSDP cast the buffers to bf16"
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    shutil.rmtree(tmp_path, ignore_errors=True)
