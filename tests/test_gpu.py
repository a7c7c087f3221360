"""What only a GPU can check: FlexAttention packing, chunked log-probs on CUDA, torch.compile, bf16 (the rotary
inv_freq kept float32 at every step, float32 master weights at lr 5e-7), FSDP, and frozen log-probs cached from a GPU.
Every test is marked ``gpu`` and skipped without CUDA (``pytest -m gpu`` runs them); tests/test_gpu_helpers.py runs
their helpers on the CPU."""

import csv
import importlib
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from sft_research.checkpoints.tiny import CORPUS, build_tiny_checkpoint
from sft_research.cli.main import main
from sft_research.data import FileDataset, LengthConfig, SFTDataModule
from sft_research.data.collate import micro_batches
from sft_research.model.execution import ExecutionConfig, batch_outputs, trimmed
from sft_research.model.loading import ModelConfig
from sft_research.model.logprobs import sequence_logprobs
from sft_research.model.output_layer import LabelLogprobs, chunked_label_logprobs
from sft_research.objectives import SFT
from sft_research.runs.csv_logger import RunCSVLogger
from sft_research.train.master_weights import MasterWeights
from sft_research.train.module import FineTuningModule
from sft_research.train.optim import OptimizerConfig
from tests.conftest import PAIR_ROWS, ROWS, SFT_ROWS, module_data, quiet_trainer, write_jsonl
from tests.test_fp32_buffers import POSITIONS, attention_output, build_long_rope_model, copy_in_float32, exact_inv_freq
from tests.test_master_weights import LR, STEPS, Record, check_masters_moved_as_adamw

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.usefixtures("private_cache"),
]
DEVICE, ACCELERATOR = "cuda", "gpu"
DEVICES = {"gpu": "cuda", "cpu": "cpu"}  # the device of each accelerator the helpers below run on
REPO = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """The tiny random Llama with a head dimension of 32: FlexAttention's Triton kernels want at least 16, and the
    repo's default tiny model has 8."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model", hidden_size=128)


@pytest.fixture(scope="module")
def long_rows_path(tmp_path_factory) -> Path:
    """Eight examples of 40 to 150 tokens: packed, about 700 tokens, so the document mask spans several of
    FlexAttention's 128-token blocks and examples straddle block edges."""
    words = " ".join(CORPUS).split()
    rows = [{"prompt": " ".join(words[i : i + 4 + 3 * i]), "completion": " ".join(words[-(6 + 4 * i) :])} for i in range(8)]
    return write_jsonl(tmp_path_factory.mktemp("data") / "long.jsonl", rows)


class Recorder(Callback):
    """Each step's logged loss, and the first step's gradients (float32, on the CPU)."""

    def __init__(self):
        self.losses, self.gradients = [], None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.gradients is None:
            self.gradients = {n: p.grad.detach().float().cpu() for n, p in pl_module.named_parameters() if p.grad is not None}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def gpu_module(model_dir, root, dtype="float32", attention="sdpa", lr=1e-3, **execution) -> FineTuningModule:
    """The module these tests train: SFT, no gradient clipping, ``execution`` as ExecutionConfig's fields."""
    return FineTuningModule(
        ModelConfig(str(model_dir), dtype=dtype, attn_implementation=attention),
        SFT(),
        OptimizerConfig(lr=lr, max_grad_norm=None),
        execution=ExecutionConfig(**execution),
        save_dir=str(Path(root) / "hf_model"),
    )


def fit(model_dir, data_path, root, steps=1, dtype="float32", precision="32-true", attention="sdpa", lr=1e-3, **execution):
    L.seed_everything(0)
    module = gpu_module(model_dir, root, dtype, attention, lr, **execution)
    data = module_data(module, model_dir, data_path, batch_size=8, lengths=LengthConfig(max_length=512))
    recorder = Recorder()
    trainer = quiet_trainer(root, max_steps=steps, accelerator=ACCELERATOR, devices=1, precision=precision, callbacks=[recorder])
    trainer.fit(module, data)
    return recorder, module


def relative_error(got: dict, want: dict) -> float:
    """‖got − want‖ / ‖want‖ over all gradient tensors together."""
    difference = sum(float((got[n] - want[n]).pow(2).sum()) for n in want)
    return (difference / sum(float(want[n].pow(2).sum()) for n in want)) ** 0.5


def test_packed_flex_attention_gives_the_unpacked_loss_and_gradients_in_fp32(model_dir, long_rows_path, tmp_path):
    unpacked, _ = fit(model_dir, long_rows_path, tmp_path / "unpacked", packing=False)
    packed, module = fit(model_dir, long_rows_path, tmp_path / "packed", attention="flex_attention", packing=True)
    assert module.model.config._attn_implementation == "flex_attention"
    assert unpacked.gradients.keys() == packed.gradients.keys() and len(packed.gradients) > 0
    assert packed.losses[0] == pytest.approx(unpacked.losses[0], abs=1e-5)
    for name, gradient in unpacked.gradients.items():
        torch.testing.assert_close(packed.gradients[name], gradient, rtol=0, atol=1e-5, msg=name)
    assert max(float(g.abs().max()) for g in unpacked.gradients.values()) > 1e-3  # real gradients, not zeros


def test_packed_flex_attention_gives_the_unpacked_loss_and_gradients_in_bf16(model_dir, long_rows_path, tmp_path):
    reference, _ = fit(model_dir, long_rows_path, tmp_path / "fp32", packing=False)
    bf16 = {"dtype": "bfloat16", "precision": "bf16-true"}
    unpacked, _ = fit(model_dir, long_rows_path, tmp_path / "unpacked", packing=False, **bf16)
    packed, module = fit(model_dir, long_rows_path, tmp_path / "packed", attention="flex_attention", packing=True, **bf16)
    assert next(module.model.parameters()).dtype == torch.bfloat16
    # bf16 keeps 8 significant bits (relative rounding 2^-9), so no fixed 1e-5 holds: packing may differ from the
    # unpacked bf16 run by no more than bf16 rounding itself moves the unpacked run from float32. Two bf16 runs each
    # that far from float32 are at most twice that apart; 3x leaves room for the kernels' different summation
    # orders, and the floors (1e-3 of a loss near ln(vocab) = 5.8, 1% of the gradient) for runs that happen to land
    # very close to float32. The logged loss itself is summed in bf16 under bf16-true (the default dtype there), so
    # two equal losses may also land one bf16 step apart: eps x loss.
    loss_noise = abs(unpacked.losses[0] - reference.losses[0])
    logged_step = torch.finfo(torch.bfloat16).eps * abs(unpacked.losses[0])
    assert abs(packed.losses[0] - unpacked.losses[0]) <= 3 * loss_noise + 1e-3 + logged_step
    gradient_noise = relative_error(unpacked.gradients, reference.gradients)
    assert relative_error(packed.gradients, unpacked.gradients) <= 3 * gradient_noise + 1e-2
    assert gradient_noise < 0.1, "bf16 stays near float32: the comparison above means something"


def full_logprobs(hidden, weight, labels):
    return torch.log_softmax((hidden @ weight.T).float(), -1).gather(-1, labels[:, None]).squeeze(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_chunked_logprobs_match_full_logits_on_cuda(dtype):
    g = torch.Generator(device=DEVICE).manual_seed(0)
    # Hidden states scaled so that logits are of order 1, as in a trained model's output layer.
    hidden = (0.1 * torch.randn(300, 64, generator=g, device=DEVICE)).to(dtype).requires_grad_()
    weight = torch.randn(1000, 64, generator=g, device=DEVICE).to(dtype).requires_grad_()
    labels = torch.randint(0, 1000, (300,), generator=g, device=DEVICE)
    upstream = torch.randn(300, generator=g, device=DEVICE)
    # The reference: float32 math on exactly the same (bf16-representable) values.
    hidden32, weight32 = hidden.detach().float().requires_grad_(), weight.detach().float().requires_grad_()
    expected = full_logprobs(hidden32, weight32, labels)
    (expected * upstream).sum().backward()
    if dtype == torch.float32:
        value_tolerance, gradient_rtol = 1e-5, 1e-5
    else:
        # Each bf16 logit is rounded once (relative error at most 2^-9) before the float32 log-softmax, which moves
        # the label's term and the log-sum-exp by at most max|logit| 2^-9 each; 2x on top. Gradients pass through
        # two bf16 roundings (the logits' gradient, the product's output): 2^-8 relative, 4x on top.
        value_tolerance, gradient_rtol = 2 * 2 * 2**-9 * float((hidden32 @ weight32.T).abs().max()), 2**-6
    for chunk in (1, 7, 128, 300, 1024):
        got = chunked_label_logprobs(hidden, weight, labels, chunk)
        assert got.dtype == torch.float32 and got.device.type == DEVICE
        torch.testing.assert_close(got, expected.detach(), rtol=0, atol=value_tolerance, msg=f"chunk {chunk}")
        (got * upstream).sum().backward()
        for mine, theirs in ((hidden, hidden32), (weight, weight32)):
            assert mine.grad.dtype == dtype
            scale = float(theirs.grad.abs().max())
            torch.testing.assert_close(mine.grad.float(), theirs.grad, rtol=gradient_rtol, atol=gradient_rtol * scale, msg=f"chunk {chunk}")
        hidden.grad, weight.grad = None, None
    assert float(expected.detach().std()) > 0.1  # the values vary: a real comparison


@pytest.mark.parametrize("chunk_size", [None, 1024], ids=["full-logits", "chunked-logprobs"])
def test_compile_gives_the_eager_loss_curve(model_dir, tmp_path, chunk_size):
    from torch._dynamo.utils import counters

    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    eager, _ = fit(model_dir, path, tmp_path / "eager", steps=5, logprob_chunk_size=chunk_size)
    torch._dynamo.reset()
    counters.clear()
    compiled, _ = fit(model_dir, path, tmp_path / "compiled", steps=5, logprob_chunk_size=chunk_size, compile=True)
    # `compile: true` must compile what training runs, not only a forward that the log-prob path never calls.
    assert counters["stats"]["unique_graphs"] > 0, "no graph was compiled: the training forward ran eagerly"
    assert len(eager.losses) == len(compiled.losses) == 5
    # float32 throughout; fused kernels change summation order (relative 1e-7 an operation) and Adam turns small
    # gradient differences into update differences of up to lr = 1e-3 over the 5 steps: 1e-3 on a loss near 5.8.
    torch.testing.assert_close(compiled.losses, eager.losses, rtol=0, atol=1e-3)
    assert eager.losses[-1] < eager.losses[0]


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_bf16_fits_are_finite_and_learn(model_dir, tmp_path, precision):
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    recorder, module = fit(model_dir, path, tmp_path, steps=12, precision=precision, lr=3e-3)
    # bf16-mixed keeps float32 weights and computes in bf16; bf16-true holds the weights in bf16 too.
    assert next(module.model.parameters()).dtype == (torch.bfloat16 if precision == "bf16-true" else torch.float32)
    assert len(recorder.losses) == 12 and all(torch.isfinite(torch.tensor(recorder.losses)))
    first, last = sum(recorder.losses[:3]) / 3, sum(recorder.losses[-3:]) / 3
    assert last < first - 0.1, recorder.losses
    assert all(torch.isfinite(g).all() for g in recorder.gradients.values())


@pytest.fixture(scope="module")
def rope_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return build_long_rope_model(tmp_path_factory.mktemp("rope") / "model", tiny_model_dir)


class RotaryWatch(Callback):
    """The rotary inv_freq as the next forward will see it (the restore hook leaves a float32 buffer alone), before
    and after every training step, copied to the CPU; and the shapes of the batches trained on."""

    def __init__(self):
        self.seen, self.shapes = [], set()

    def record(self, module, when: str) -> None:
        inv_freq = module.model.model.rotary_emb.inv_freq
        self.seen.append(
            (
                f"{when} step {module.global_step + (when == 'before')}",
                inv_freq.dtype,
                inv_freq.device.type,
                inv_freq.detach().cpu().clone(),
            )
        )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.shapes.add(tuple(batch["input_ids"].shape))
        self.record(pl_module, "before")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.record(pl_module, "after")


def check_inv_freq_every_step(model_dir: Path, root: Path, accelerator: str, compile_step: bool, steps: int = 4, callbacks=()) -> None:
    """A bf16-true fit of the RoPE model on ``accelerator``: its inv_freq float32, with the exact float32 values, on the
    device, before and after every step; compiled, one graph per batch shape at most (none compiled again for a
    buffer's dtype); after training, attention past position 1,000 within bf16 tolerance of the float32 model, while a
    bf16-rounded inv_freq is visibly off. ``callbacks`` join the fit (the CPU check of this check adds a defect)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    L.seed_everything(0)
    module = FineTuningModule(
        ModelConfig(str(model_dir), dtype="bfloat16"), SFT(), OptimizerConfig(lr=1e-5), execution=ExecutionConfig(compile=compile_step)
    )
    data = SFTDataModule(
        FileDataset(str(write_jsonl(root / "d.jsonl", ROWS))),
        tokenizer=str(model_dir),
        batch_size=4,
        pack=module.execution.packing,
        pad_to_bucket=module.execution.compile,
    )
    watch = RotaryWatch()
    trainer = quiet_trainer(root, accelerator=accelerator, devices=1, precision="bf16-true", max_steps=steps, callbacks=[watch, *callbacks])
    trainer.fit(module, data)
    device = DEVICES[accelerator]
    assert all(p.dtype == torch.bfloat16 and p.device.type == device for p in module.model.parameters()), "bf16 weights on the device"
    assert len(watch.seen) == 2 * steps
    for when, dtype, where, values in watch.seen:
        assert dtype == torch.float32 and where == device, f"inv_freq {when}: {dtype} on {where}"
        assert torch.equal(values, exact_inv_freq()), f"inv_freq {when} does not hold its float32 values"
    if compile_step:
        graphs = counters["stats"]["unique_graphs"]
        assert 0 < graphs <= len(watch.shapes), f"{graphs} graphs compiled for {len(watch.shapes)} batch shapes"
    causal_lm = module.model.eval()
    ids = torch.randint(0, causal_lm.config.vocab_size, (1, POSITIONS), generator=torch.Generator().manual_seed(0))
    wanted = attention_output(copy_in_float32(causal_lm), ids)[:, 1000:]
    got = attention_output(causal_lm, ids.to(device))[:, 1000:].cpu()
    error = float((got - wanted).abs().max() / wanted.abs().max())
    assert error < 0.05, f"attention past position 1,000 within bf16 tolerance of the float32 model ({error:.3f})"
    rotary = causal_lm.model.rotary_emb
    exact = rotary.inv_freq
    rotary.inv_freq = exact.to(torch.bfloat16).float()  # the defect, for contrast: float32 with bf16-rounded values
    try:
        rounded = float((attention_output(causal_lm, ids.to(device))[:, 1000:].cpu() - wanted).abs().max() / wanted.abs().max())
    finally:
        rotary.inv_freq = exact
    assert rounded > 4 * error and rounded > 0.1, f"a rounded inv_freq is visible here ({rounded:.3f} vs {error:.3f})"


@pytest.mark.parametrize("compile_step", [False, True], ids=["eager", "compiled"])
def test_bf16_true_keeps_the_rotary_inv_freq_float32_at_every_step(rope_model_dir, tmp_path, compile_step):
    check_inv_freq_every_step(rope_model_dir, tmp_path, ACCELERATOR, compile_step)


def check_masters_move(model_dir: Path, root: Path, accelerator: str) -> None:
    """tests/test_master_weights.py's bf16-true run at lr 5e-7 on ``accelerator``: bf16 weights on the device, float32
    masters stepped by the optimizer; at least 99% of the masters with a gradient move, their change is float32
    AdamW's on the same gradients within 1%, and the logged stale-update fraction stays under 5%."""
    L.seed_everything(0)
    module = FineTuningModule(ModelConfig(str(model_dir), dtype="bfloat16"), SFT(), OptimizerConfig(lr=LR, master_weights=True))
    data = SFTDataModule(FileDataset(str(write_jsonl(root / "d.jsonl", ROWS))), tokenizer=str(model_dir), batch_size=4)
    record, logger = Record(), RunCSVLogger(save_dir=str(root), name="masters")
    trainer = quiet_trainer(
        root,
        accelerator=accelerator,
        devices=1,
        precision="bf16-true",
        max_steps=STEPS,
        logger=logger,
        log_every_n_steps=1,
        callbacks=[record],
    )
    trainer.fit(module, data)
    with open(Path(logger.log_dir) / "metrics.csv", newline="") as file:
        stale = [float(row["train/stale_update_fraction"]) for row in csv.DictReader(file) if row.get("train/stale_update_fraction")]
    assert isinstance(module.trainer.optimizers[0], MasterWeights)
    device = DEVICES[accelerator]
    assert all(p.dtype == torch.bfloat16 and p.device.type == device for p in module.model.parameters()), "bf16 weights on the device"
    assert all(start.device.type == device for start in record.start) and len(record.gradients) == STEPS
    check_masters_moved_as_adamw(record)
    assert len(stale) == STEPS and max(stale) < 0.05, f"logged stale-update fractions {stale}"


def test_float32_masters_move_bf16_weights_at_lr_5e_7(tiny_model_dir, tmp_path):
    check_masters_move(tiny_model_dir, tmp_path, ACCELERATOR)


def test_frozen_logprobs_cached_on_gpu_equal_the_on_the_fly_ones(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", PAIR_ROWS)
    reference = build_tiny_checkpoint(tmp_path / "reference", seed=7)  # a reference that differs from the start model
    runs = {}
    for mode in ("cached", "on_the_fly"):
        cli = main(
            [
                "fit",
                f"--model.pretrained.name_or_path={tiny_model_dir}",
                "--model.objective=sft_research.objectives.DPO",
                f"--model.frozen.reference={reference}",
                f"--model.frozen.mode={mode}",
                "--model.optimizer.lr=1e-3",
                "--data.micro_batch_size=2",
                "--data.train=sft_research.data.FileDataset",
                f"--data.train.path={path}",
                "--data.batch_size=4",
                "--trainer.max_steps=3",
                f"--trainer.accelerator={ACCELERATOR}",
                "--trainer.devices=1",
                "--trainer.log_every_n_steps=1",
                "--trainer.enable_progress_bar=false",
                "--trainer.enable_checkpointing=false",
                f"--trainer.logger.init_args.save_dir={tmp_path / mode}",
                f"--trainer.default_root_dir={tmp_path / mode}",
            ]
        )
        assert cli.trainer.strategy.root_device.type == DEVICE
        with open(Path(cli.trainer.logger.log_dir) / "metrics.csv") as file:
            logged = [row for row in csv.DictReader(file) if row.get("train/loss")]
        runs[mode] = [[float(row[key]) for key in ("train/loss", "train/rewards/chosen", "train/rewards/rejected")] for row in logged]
    assert len(runs["cached"]) == 3
    assert list((tmp_path / "cache" / "logprobs").glob("*.safetensors")), "the cached run wrote its log-probs to disk"
    torch.testing.assert_close(runs["cached"], runs["on_the_fly"], rtol=0, atol=1e-5)
    assert abs(runs["cached"][0][1]) > 1e-3, "the reference differs from the start model: the rewards are not trivially 0"


class ValidationLogprobs(FineTuningModule):
    """Keeps the log-probs its validation computed: under FSDP they come from the sharded model being trained."""

    def validation_step(self, batch, batch_idx):
        (micro,) = micro_batches(batch, None)
        tensors, _ = trimmed(micro, {}, self.execution)
        logps = batch_outputs(self.model, tensors, (LabelLogprobs(),), {}, self.execution)["logps"]
        self.captured.append((batch, logps.float().cpu()))
        super().validation_step(batch, batch_idx)


def test_fsdp_on_one_gpu_trains_and_exports_a_checkpoint_with_the_modules_logprobs(tiny_model_dir, tmp_path):
    """experiments/scale/fsdp_gpus.yaml's strategy, precision and log-prob settings, on one GPU and the tiny model; the
    validation after the last step runs the trained, sharded module, and the exported checkpoint must agree with it."""
    from lightning.pytorch.strategies import FSDPStrategy
    from transformers import AutoModelForCausalLM

    config = yaml.safe_load((REPO / "experiments/scale/fsdp_gpus.yaml").read_text())
    strategy = config["trainer"]["strategy"]
    assert strategy["class_path"] == "lightning.pytorch.strategies.FSDPStrategy"
    settings = dict(strategy["init_args"])
    layers = set()
    for name in settings.pop("auto_wrap_policy"):
        module_name, _, class_name = name.rpartition(".")
        layers.add(getattr(importlib.import_module(module_name), class_name))
    path = write_jsonl(tmp_path / "d.jsonl", SFT_ROWS)
    L.seed_everything(0)
    module = ValidationLogprobs(
        ModelConfig(str(tiny_model_dir)),
        SFT(),
        OptimizerConfig(lr=1e-2),
        save_dir=str(tmp_path / "hf_model"),
        execution=ExecutionConfig(**config["model"].get("execution", {})),
    )
    module.captured = []
    data = SFTDataModule(
        FileDataset(str(path)),
        val=FileDataset(str(path)),
        tokenizer=str(tiny_model_dir),
        batch_size=4,
        eval_batch_size=4,
        pack=module.execution.packing,
        pad_to_bucket=module.execution.compile,
    )
    steps = 3
    trainer = quiet_trainer(
        tmp_path,
        accelerator=ACCELERATOR,
        devices=1,
        strategy=FSDPStrategy(auto_wrap_policy=layers, **settings),
        precision=config["trainer"]["precision"],
        max_steps=steps,
        val_check_interval=steps,
        limit_val_batches=1,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, data)
    assert trainer.global_step == steps and len(module.captured) == 1, "one validation, after the last step"
    batch, trained = module.captured[0]

    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "hf_model").to(DEVICE).eval()
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=exported.dtype).to(DEVICE).eval()
    ids, attention = batch["input_ids"][:, 0].to(DEVICE), batch["attention_mask"][:, 0].to(DEVICE)
    mask = (attention[:, 1:] * attention[:, :-1]).bool().cpu()
    with torch.no_grad(), torch.autocast(DEVICE, dtype=torch.bfloat16, enabled="bf16" in config["trainer"]["precision"]):
        reloaded = sequence_logprobs(exported, ids, attention).float().cpu()
        before = sequence_logprobs(start, ids, attention).float().cpu()
    trained = trained[:, 0, : reloaded.shape[1]]
    # Under bf16-mixed FSDP computes with bf16 copies of the float32 weights, and the export holds the same bf16
    # values; only kernel choice and summation order differ (bf16 rounding, 2^-9 relative, of log-probs near -5.8).
    difference = (reloaded - trained)[mask].abs()
    assert float(difference.max()) < 0.05 and float(difference.mean()) < 0.01, float(difference.max())
    moved = (before - trained)[mask].abs().mean()
    assert float(moved) > 10 * float(difference.mean()) + 1e-3, "training moved the model well beyond the export's error"
