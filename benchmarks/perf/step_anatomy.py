"""What a training step asks of the host: syncs, graph breaks and recompiles, fp32 matmuls under bf16, operators.

For the packed SFT step and the DPO step on a Qwen2-shaped model (tiny on the CPU, the GPU preset's Qwen2.5-0.5B
shape on a GPU), in bf16 with float32 master weights, over batches of 10 different mixes of lengths:

* host syncs per step, counted with a dispatch mode that sees ``_local_scalar_dense`` (``item``, ``bool``, ``int``),
  ``nonzero``, ``masked_select``, ``unique`` and the other operators whose output shape depends on data. On a CPU it
  cannot see device-to-host copies; on a GPU, ``--sync_debug`` turns ``torch.cuda.set_sync_debug_mode("error")`` on
  for the measured steps, which fails on any sync that is not counted. Steps that log metrics (``log_every_n_steps``)
  are counted apart, as are the first 10 steps (the stale-update measurement reads the device there);
* graph breaks and recompiles with ``--compile`` (dynamo's counters), against the number of batch shapes (buckets)
  the data took. FlexAttention's backward runs only on GPUs, so the CPU proxy compiles the dense document mask;
* the share of matmul FLOPs done in float32 (the rotary embedding's small float32 matmul stays, by design);
* the operators dispatched per step.

    python benchmarks/perf/step_anatomy.py                       # eager, on the CPU (a minute)
    python benchmarks/perf/step_anatomy.py --compile             # compiled (several minutes of compilation)
    python benchmarks/perf/step_anatomy.py --device cuda --compile --sync_debug --preset gpu
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import traceback
from collections import Counter
from pathlib import Path

import lightning as L
import torch
from torch.utils._python_dispatch import TorchDispatchMode

PRESETS = {
    "cpu": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128},
    "gpu": {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "intermediate_size": 4864},
}
# Operators that make the host wait for the device: their result is read on the host, or decides a shape.
SYNCING = {"_local_scalar_dense", "item", "nonzero", "masked_select", "unique_dim", "_unique2", "unique_consecutive", "equal", "is_nonzero"}
MATMULS = {"mm", "addmm", "bmm", "baddbmm"}
WARMUP, MEASURED, LOG_EVERY = 10, 10, 5  # steps 11-20 measured; 15 and 20 log


class Anatomy(TorchDispatchMode):
    """Counts operators, syncs and matmul FLOPs by dtype while it is active."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size, self.fp32_logits = vocab_size, 0
        self.ops, self.syncs, self.flops, self.fp32, self.where = Counter(), Counter(), Counter(), Counter(), Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        self.ops[name] += 1
        syncing = name in SYNCING or (
            name == "repeat_interleave" and kwargs.get("output_size") is None and isinstance(args[0], torch.Tensor)
        )
        if name == "index" and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or [])):
            syncing, name = True, "index with a bool mask"
        if syncing:
            self.syncs[name] += 1
            self.where[caller()] += 1
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.dim() >= 2 and out.shape[-1] == self.vocab_size:
            self.fp32_logits += out.numel()
        if name in MATMULS:
            a, b = args[-2], args[-1]
            flops = 2 * a.numel() * b.shape[-1]
            self.flops[str(a.dtype)] += flops
            if a.dtype == torch.float32:
                self.fp32[f"{tuple(a.shape)} @ {tuple(b.shape)}"] += flops
        return out


def caller() -> str:
    """The innermost frame of this project's code (or, failing that, a library's, torch's own left out)."""
    frames = [f for f in traceback.extract_stack()[:-3] if "/torch/" not in f.filename and "step_anatomy" not in f.filename]
    ours = [f for f in frames if "/sft_research/" in f.filename]
    frame = (ours or frames)[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} {frame.line}"


class Steps(L.Callback):
    """Measures each step from its batch's start to the next batch's start, callbacks and logging included.

    Eager, a dispatch mode sees every operator (and where each sync comes from). A dispatch mode makes dynamo run
    compiled functions eagerly, so compiled steps are read by the profiler instead: the operators it records (a
    compiled graph's fused kernels are not operators) and the syncing ones among them called from Python."""

    def __init__(self, sync_debug: bool, vocab_size: int, compiled: bool):
        self.sync_debug, self.vocab_size, self.compiled = sync_debug, vocab_size, compiled
        self.mode = self.profile = None
        self.records, self.shapes = [], set()

    def on_train_batch_start(self, trainer, module, batch, index):
        self.stop(trainer)
        self.shapes.add(
            tuple(layout["document"].shape[0] for layout in batch["layouts"]) if "layouts" in batch else batch["input_ids"].shape[-1]
        )
        step = trainer.global_step + 1
        if WARMUP < step <= WARMUP + MEASURED:
            self.step = step
            self.profile = torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU],
            )
            self.profile.__enter__()
            if not self.compiled:
                self.mode = Anatomy(self.vocab_size)
                self.mode.__enter__()
            if self.sync_debug:
                torch.cuda.set_sync_debug_mode("error")

    def on_train_end(self, trainer, module):
        self.stop(trainer)

    def stop(self, trainer):
        if self.profile is None:
            return
        if self.sync_debug:
            torch.cuda.set_sync_debug_mode("default")
        if self.mode is not None:
            self.mode.__exit__(None, None, None)
        self.profile.__exit__(None, None, None)
        operators = [event for event in self.profile.events() if event.name.startswith("aten::")]
        record = {"step": self.step, "logging": self.step % LOG_EVERY == 0 or self.step == trainer.max_steps, "ops": len(operators)}
        if self.mode is not None:
            record |= {
                "syncs": dict(self.mode.syncs),
                "where": dict(self.mode.where),
                "flops": dict(self.mode.flops),
                "fp32": dict(self.mode.fp32),
                "fp32_logits": self.mode.fp32_logits,
            }
        else:
            # Operators called from Python, as the dispatch mode sees them: one called inside another operator's
            # kernel (the CPU's fused AdamW reads each step count) is the kernel's own affair.
            syncing = [event for event in operators if event.name.removeprefix("aten::") in SYNCING and not within_operator(event)]
            record |= {"syncs": dict(Counter(event.name.removeprefix("aten::") for event in syncing)), "where": {}}
        self.records.append(record)
        self.mode = self.profile = None


def within_operator(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return True
        parent = parent.cpu_parent
    return False


def build_model(folder: Path, preset: dict) -> Path:
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from sft_research.checkpoints.tiny import build_tiny_checkpoint

    tokenizer_dir = build_tiny_checkpoint(folder / "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        max_position_embeddings=8192,
        **preset,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    return folder / "model"


def write_data(folder: Path, pairs: bool, batch: int, scale: int) -> Path:
    """10 mixes of lengths, one a batch: the packed and padded lengths change from step to step. The warm-up steps
    see each batch once and the measured steps see them again, so that a measured step compiles nothing."""
    mixes, rng = [], random.Random(0)
    words = "the quick brown fox jumps over the lazy dog and counts one two three four five six".split()
    for mix in range(10):
        for _ in range(batch):
            prompt = " ".join(rng.choices(words, k=scale * (1 + mix)))
            answer = " ".join(rng.choices(words, k=scale * (1 + rng.randrange(1 + mix))))
            mixes.append(
                {"prompt": prompt, "chosen": answer, "rejected": answer[::-1]} if pairs else {"prompt": prompt, "completion": answer}
            )
    rows = mixes * ((WARMUP + MEASURED) // 10)
    path = folder / ("pairs.jsonl" if pairs else "sft.jsonl")
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run(objective: str, args, folder: Path, model_dir: Path) -> dict:
    from sft_research.data import FileDataset, LengthConfig, SFTDataModule, TemplateConfig
    from sft_research.data.sampler import ResumableShuffleSampler
    from sft_research.model.execution import ExecutionConfig
    from sft_research.model.loading import ModelConfig
    from sft_research.objectives import DPO, SFT
    from sft_research.train.callbacks.progress_bar import StepProgressBar
    from sft_research.train.module import FineTuningModule
    from sft_research.train.optim import OptimizerConfig

    dpo = objective == "dpo"
    batch = 8
    data_path = write_data(folder, dpo, batch // (2 if dpo else 1), 2 if args.device == "cpu" else 16)
    ResumableShuffleSampler.__iter__ = lambda self: iter(range(self.size))  # the mixes in order, one a step
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    module = FineTuningModule(
        ModelConfig(str(model_dir), dtype="bfloat16"),
        DPO() if dpo else SFT(),
        OptimizerConfig(lr=1e-5),
        execution=ExecutionConfig(packing=not dpo, compile=args.compile),
        save_dir=str(folder / objective / "hf_model"),
    )
    data = SFTDataModule(
        FileDataset(str(data_path)),
        tokenizer=str(model_dir),
        batch_size=batch // (2 if dpo else 1),
        pack=not dpo,
        pad_to_bucket=args.compile,
        template=TemplateConfig(prompt_format="plain"),
        lengths=LengthConfig(max_length=4096),
    )
    steps = Steps(args.sync_debug, json.loads((model_dir / "config.json").read_text())["vocab_size"], args.compile)
    trainer = L.Trainer(
        accelerator=args.device,
        devices=1,
        precision="bf16-true",
        max_steps=WARMUP + MEASURED,
        log_every_n_steps=LOG_EVERY,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=True,
        enable_model_summary=False,
        callbacks=[steps, StepProgressBar()],
        default_root_dir=str(folder / objective),
    )
    trainer.fit(module, data)
    counters = torch._dynamo.utils.counters
    plain = [r for r in steps.records if not r["logging"]]
    logging = [r for r in steps.records if r["logging"]]
    flops = Counter()
    fp32 = Counter()
    for record in steps.records:
        flops.update(record.get("flops", {}))
        fp32.update(record.get("fp32", {}))
    result = {
        "objective": f"{objective} ({'packed' if not dpo else 'padded'})",
        "compiled": args.compile,
        "syncs per step (not logging)": [sum(r["syncs"].values()) for r in plain],
        "syncs per logging step": [sum(r["syncs"].values()) for r in logging],
        "which syncs": dict(sum((Counter(r["syncs"]) for r in steps.records), Counter())),
        "where (not logging)": dict(sum((Counter(r["where"]) for r in plain), Counter())),
        "where (logging)": dict(sum((Counter(r["where"]) for r in logging), Counter())),
        "operators per step (profiler)": [r["ops"] for r in steps.records],
    }
    if not args.compile:  # the dispatch mode's figures
        result |= {
            "matmul MFLOP per step by dtype": {dtype: round(value / len(steps.records) / 1e6, 3) for dtype, value in flops.items()},
            "fp32 share of matmul FLOPs": fp32_share(flops),
            "fp32 matmuls": dict(fp32),
            "float32 values of vocabulary-wide tensors per step (eager; compiled, the casts fuse into the reductions)": [
                r["fp32_logits"] for r in steps.records
            ],
        }
    return result | {
        "batch shapes": len(steps.shapes),
        "graph breaks": sum(counters["graph_break"].values()),
        "graph break reasons": dict(counters["graph_break"]),
        "graphs compiled": counters["stats"]["unique_graphs"],
    }


def fp32_share(flops: Counter) -> float:
    total = sum(flops.values())
    return flops.get("torch.float32", 0) / total if total else 0.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--preset", default=None, choices=list(PRESETS), help="model size (default: cpu on a CPU, gpu on a GPU)")
    parser.add_argument("--compile", action="store_true", help="compile the micro-batch forward and loss")
    parser.add_argument("--sync_debug", action="store_true", help="on a GPU: fail on any host sync in the measured steps")
    parser.add_argument("--objectives", nargs="+", default=["sft", "dpo"])
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset or ("gpu" if args.device == "cuda" else "cpu")]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model_dir = build_model(folder, preset)
        for objective in args.objectives:
            results.append(run(objective, args, folder, model_dir))
    for result in results:
        print(json.dumps(result, indent=1), file=sys.stdout)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
