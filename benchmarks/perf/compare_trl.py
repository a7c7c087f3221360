"""Trains this project and TRL side by side on the same model, data, batch and optimizer; reports tokens/s, model
FLOP utilisation and peak memory for SFT and DPO, and the ratios to TRL's best setting.

    python benchmarks/perf/compare_trl.py --preset cpu     # a small Qwen2-shaped model, a few minutes on a CPU
    python benchmarks/perf/compare_trl.py --preset gpu     # the Qwen2.5-0.5B shape, on one H100/H200, < 10 minutes
    python benchmarks/perf/compare_trl.py --preset gpu --objectives --long_context 1024 4096 16384   # batch 1

Every (framework, setting) runs in its own process, so that each peak-memory reading is its own; the settings
alternate between the frameworks, `--repeats` times, and the median is reported. TRL runs as its users would
tune it, with its documented speed options: padded; packed padding-free (bfd) with SDPA and with FlexAttention (the
kernel we use); Liger kernels (GPUs); `torch_compile`; all of these together (packed, FlexAttention, Liger,
compiled: the strongest tuned setting); always the fused AdamW and gradient checkpointing off. DPO runs by default,
with precomputed reference log-probs, Liger and compile, and with all three. We run packed (compiled or not) and
padded. The ratio is to TRL's fastest setting among those run. ``--settings`` picks a subset: a setting's name runs it
in either framework that has it, ``trl:padded`` in one (benchmarks/gpu/check.sh's parts fix theirs in advance).
The exit status is 1 if any run failed (its error is printed; the others are still reported).

Precision (``--precision``): ``masters`` (default) runs both in bf16 over float32 weights, as our configs train (ours:
bf16 weights with float32 master copies stepped by the optimizer; TRL: float32 weights under bf16 autocast), and
``pure_bf16`` runs both on bf16 weights with no float32 copy. The CPU presets run float32. Warm-up steps (where
compilation happens) are left out of tokens/s and counted in the one-off setup time. The data are passages of the
public-domain novel shipped with reasoning-gym, tokenized by the SmolLM2 tokenizer, in prompt/completion form.

``--long_context`` adds SFT at batch 1 on sequences of exactly each given length, ours (packed) against TRL's best
SFT setting, for peak memory against length. A run that runs out of memory is repeated once with gradient
checkpointing on, and its row says so. Everything (model, data, checkpoints, caches) is written under one temporary
folder, removed at the end; ``--json`` writes every figure, ``--profile`` a torch.profiler summary of our SFT step.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRESETS = {
    # For dry runs of the script itself: seconds, figures meaningless.
    "tiny": {
        "model": {
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "intermediate_size": 128,
            "vocab_size": 49152,
        },
        "batch": 4,
        "lengths": [32, 64],
        "steps": 4,
        "warmup": 2,
        "examples": 16,
        "dtype": "float32",
    },
    "cpu": {
        "model": {
            "hidden_size": 256,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "intermediate_size": 768,
            "vocab_size": 49152,
        },
        "batch": 8,
        "lengths": [64, 256],
        "steps": 8,
        "warmup": 3,
        "examples": 160,
        "dtype": "float32",
    },
    "gpu": {
        "model": {
            "hidden_size": 896,
            "num_hidden_layers": 24,
            "num_attention_heads": 14,
            "num_key_value_heads": 2,
            "intermediate_size": 4864,
            "vocab_size": 151936,
        },
        "batch": 8,
        "lengths": [256, 1024],
        "steps": 30,
        "warmup": 8,
        "examples": 600,
        "dtype": "bfloat16",
    },
}
SETTINGS = {
    "sft": [
        ("ours", "packed_compiled"),
        ("ours", "packed"),
        ("ours", "padded"),
        ("trl", "padded"),
        ("trl", "packed_sdpa"),
        ("trl", "packed_flex"),
        ("trl", "packed_flex_liger"),
        ("trl", "packed_flex_compiled"),
        ("trl", "packed_sdpa_compiled"),
        ("trl", "packed_flex_liger_compiled"),
    ],
    "dpo": [
        ("ours", "cached_reference_compiled"),
        ("ours", "cached_reference"),
        ("trl", "default"),
        ("trl", "precomputed_reference"),
        ("trl", "liger"),
        ("trl", "compiled"),
        ("trl", "precomputed_liger_compiled"),
    ],
}
# FlexAttention's backward and Liger's Triton kernels run on GPUs only.
GPU_ONLY = {"packed_flex", "packed_flex_liger", "packed_flex_compiled", "packed_flex_liger_compiled", "liger", "precomputed_liger_compiled"}


def build_assets(preset: dict, folder: Path, tokenizer_path: str | None = None, positions: int = 4096) -> tuple[Path, Path, Path, float]:
    """A random-init Qwen2-shaped checkpoint (for sequences up to ``positions`` tokens), SFT and preference data as JSON
    lines, and the mean example length."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from sft_research.checkpoints.embedded import resolve_embedded

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or resolve_embedded("embedded:SmolLM2-135M-Instruct"))
    config = Qwen2Config(
        **preset["model"],
        tie_word_embeddings=True,
        max_position_embeddings=positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    sft, pairs, mean_length = write_data(tokenizer, preset["lengths"], preset["examples"], folder)
    return folder / "model", sft, pairs, mean_length


def write_data(tokenizer, lengths: list[int], examples: int, folder: Path, tag: str = "") -> tuple[Path, Path, float]:
    """SFT and preference records of ``lengths[0]`` to ``lengths[1]`` tokens, from passages of the novel."""
    from sft_research.bench.probes import GeneralTextProbe

    low, high = lengths
    words = GeneralTextProbe().text().split()
    # The novel has about 8,700 words: long sequences read it round again.
    words = words * math.ceil(4 * high / len(words))
    rng = random.Random(0)
    sft, pairs, sizes = [], [], []
    for _ in range(examples):
        target = rng.randint(low, high)
        start = rng.randrange(len(words) - 2 * high)
        ids = tokenizer(" ".join(words[start : start + target]), add_special_tokens=False)["input_ids"][: target - 1]
        cut = len(ids) // 4
        prompt, completion = tokenizer.decode(ids[:cut]), tokenizer.decode(ids[cut:])
        other = tokenizer.decode(
            tokenizer(" ".join(words[start + high : start + high + target]), add_special_tokens=False)["input_ids"][cut : len(ids)]
        )
        sft.append({"prompt": prompt, "completion": completion})
        pairs.append({"prompt": prompt, "chosen": completion, "rejected": other})
        sizes.append(len(ids) + 1)
    paths = folder / f"sft{tag}.jsonl", folder / f"pairs{tag}.jsonl"
    for path, rows in zip(paths, (sft, pairs)):
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return *paths, statistics.mean(sizes)


def peak_gib() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_ours(job: dict) -> dict:
    import lightning as L
    import torch

    from sft_research.data import FileDataset, LengthConfig, SFTDataModule, TemplateConfig
    from sft_research.model.execution import ExecutionConfig
    from sft_research.model.loading import ModelConfig
    from sft_research.objectives import DPO, SFT
    from sft_research.train.module import FineTuningModule
    from sft_research.train.optim import OptimizerConfig

    times, tokens, compiled = [], [], []
    # Profiled steps run after the timed ones and are left out of them: the profiler slows what it records.
    profiler = StepProfiler(job["profile"], job["steps"]) if job.get("profile") else None

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, index):
            if profiler:
                profiler.step_start(len(times))  # optimizer steps so far: batch indices restart every epoch
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.start, self.graphs = time.perf_counter(), graphs_compiled()

        def on_train_batch_end(self, trainer, module, outputs, batch, index):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.start)
            tokens.append(int(batch["attention_mask"].sum()))
            compiled.append(graphs_compiled() > self.graphs)
            if profiler:
                profiler.step_end(len(times) - 1)

    dpo, packed = job["objective"] == "dpo", job["setting"].startswith("packed")
    attention = "flex_attention" if torch.cuda.is_available() and packed else "sdpa"
    module = FineTuningModule(
        ModelConfig(job["model"], dtype=job["dtype"], attn_implementation=attention, gradient_checkpointing=job["gradient_checkpointing"]),
        DPO(beta=0.1) if dpo else SFT(),
        OptimizerConfig(lr=1e-5, master_weights=job["precision"] == "masters"),
        execution=ExecutionConfig(
            packing=packed, logprob_chunk_size=1024 if torch.cuda.is_available() else 256, compile=job["setting"].endswith("compiled")
        ),
        save_dir=str(Path(job["run_dir"]) / "hf_model"),
    )
    data = SFTDataModule(
        FileDataset(job["pairs" if dpo else "sft"]),
        tokenizer=job["model"],
        batch_size=job["batch"] // (2 if dpo else 1),
        pack=module.execution.packing,
        pad_to_bucket=module.execution.compile,
        template=TemplateConfig(prompt_format="plain"),
        lengths=LengthConfig(max_length=job["max_length"]),
    )
    trainer = L.Trainer(
        max_steps=job["steps"] + (StepProfiler.STEPS if profiler else 0),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Timer()],
        precision="bf16-true" if job["dtype"] == "bfloat16" else "32-true",
        default_root_dir=job["run_dir"],
    )
    started = time.perf_counter()
    trainer.fit(module, data)  # the reference pass of DPO runs in setup, before the timed steps
    reference_seconds = time.perf_counter() - started - sum(times)
    return {
        "times": times[: job["steps"]],
        "tokens": tokens[: job["steps"]],
        "compiled": compiled[: job["steps"]],
        "setup_s": reference_seconds,
    }


def run_trl(job: dict) -> dict:
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    times, tokens, compiled = [], [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.start, self.seen, self.graphs = time.perf_counter(), state.num_input_tokens_seen, graphs_compiled()

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.start)
            tokens.append(state.num_input_tokens_seen - self.seen)
            compiled.append(graphs_compiled() > self.graphs)

    setting = job["setting"]
    bf16 = job["dtype"] == "bfloat16"
    # Float32 weights under bf16 autocast keep float32 masters, as ours do; pure bf16 loads the weights in bf16.
    dtype = torch.bfloat16 if bf16 and job["precision"] == "pure_bf16" else torch.float32
    attention = "flex_attention" if "flex" in setting else "sdpa"
    model = AutoModelForCausalLM.from_pretrained(job["model"], dtype=dtype, attn_implementation=attention)
    tokenizer = AutoTokenizer.from_pretrained(job["model"])
    common = dict(
        output_dir=job["run_dir"],
        max_steps=job["steps"],
        learning_rate=1e-5,
        report_to="none",
        logging_steps=10**6,
        save_strategy="no",
        gradient_checkpointing=job["gradient_checkpointing"],
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        use_liger_kernel="liger" in setting,
        torch_compile="compiled" in setting,
        optim="adamw_torch_fused",
        max_length=job["max_length"],
        include_num_input_tokens_seen="non_padding",
        dataloader_drop_last=False,
        seed=0,
    )
    started = time.perf_counter()
    if job["objective"] == "sft":
        packed = setting.startswith("packed")
        # Packed rows hold max_length tokens each: as many rows as carry the same tokens per step as the padded batch.
        batch = max(1, round(job["batch"] * job["mean_length"] / job["max_length"])) if packed else job["batch"]
        args = SFTConfig(per_device_train_batch_size=batch, packing=packed, completion_only_loss=True, **common)
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=load_dataset("json", data_files=job["sft"], split="train"), processing_class=tokenizer
        )
    else:
        args = DPOConfig(
            per_device_train_batch_size=job["batch"] // 2, beta=0.1, precompute_ref_log_probs=setting.startswith("precomputed"), **common
        )
        trainer = DPOTrainer(
            model=model, args=args, train_dataset=load_dataset("json", data_files=job["pairs"], split="train"), processing_class=tokenizer
        )
    setup = time.perf_counter() - started
    trainer.add_callback(Timer())
    trainer.train()
    return {"times": times, "tokens": tokens, "compiled": compiled, "setup_s": setup}


def graphs_compiled() -> int:
    import torch._dynamo.utils

    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def worker(job: dict) -> None:
    result = (run_ours if job["framework"] == "ours" else run_trl)(job)
    # The warm-up steps (allocator growth, first compilation) and any later step that compiled a graph (a new batch
    # shape) count as setup, in both frameworks; tokens/s is over the other steps.
    timed = [i for i in range(len(result["times"])) if i >= job["warmup"] and not result["compiled"][i]]
    if not timed:
        raise RuntimeError("every step after the warm-up compiled a graph: run more steps")
    result.update(
        tokens_per_s=sum(result["tokens"][i] for i in timed) / sum(result["times"][i] for i in timed),
        peak_gib=peak_gib(),
        setup_s=result["setup_s"] + sum(t for i, t in enumerate(result["times"]) if i not in timed),
        timed_steps=len(timed),
        compiling_steps=sum(result["compiled"]),
    )
    print("RESULT " + json.dumps(result))


class StepProfiler:
    """torch.profiler over three training steps from step ``first`` on, summarised to a text file: the top kernels by
    device time, and the device's idle time between consecutive kernels (launch and host overhead)."""

    STEPS = 3

    def __init__(self, path: str, warmup: int):
        self.path, self.first, self.profile = Path(path), warmup, None

    def step_start(self, step: int) -> None:
        import torch

        if step == self.first:
            activities = [torch.profiler.ProfilerActivity.CPU] + (
                [torch.profiler.ProfilerActivity.CUDA] if torch.cuda.is_available() else []
            )
            self.profile = torch.profiler.profile(activities=activities)
            self.profile.__enter__()

    def step_end(self, step: int) -> None:
        if self.profile is None or step != self.first + self.STEPS - 1:
            return
        self.profile.__exit__(None, None, None)
        trace = self.path.with_suffix(".trace.json")
        self.profile.export_chrome_trace(str(trace))
        kernels = sorted(
            (e for e in json.loads(trace.read_text())["traceEvents"] if e.get("ph") == "X" and e.get("cat") == "kernel"),
            key=lambda e: e["ts"],
        )
        trace.unlink()
        device = bool(kernels)
        sort = "self_device_time_total" if device else "self_cpu_time_total"
        lines = [f"torch.profiler over {self.STEPS} training steps after {self.first} others; top operators by {sort}:", ""]
        lines.append(self.profile.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=60))
        if device:
            busy = sum(e["dur"] for e in kernels)
            span = kernels[-1]["ts"] + kernels[-1]["dur"] - kernels[0]["ts"]
            gaps = sorted(max(0.0, b["ts"] - (a["ts"] + a["dur"])) for a, b in zip(kernels, kernels[1:]))
            by_name: dict[str, list[float]] = {}
            for e in kernels:
                by_name.setdefault(e["name"], []).append(e["dur"])
            top = sorted(by_name.items(), key=lambda item: -sum(item[1]))[:20]
            lines += [
                "",
                f"device kernels: {len(kernels)} in {span / 1e3:.1f} ms from the first kernel's start to the last one's end; "
                f"busy {busy / 1e3:.1f} ms ({busy / span:.1%}), idle between kernels {(span - busy) / 1e3:.1f} ms",
                f"gaps between consecutive kernels (us): median {gaps[len(gaps) // 2]:.1f}, p90 {gaps[int(len(gaps) * 0.9)]:.1f}, "
                f"max {gaps[-1]:.1f}; {sum(g > 10 for g in gaps)} gaps over 10 us hold {sum(g for g in gaps if g > 10) / 1e3:.1f} ms",
                "",
                "top kernels by total device time:",
                *(f"  {sum(d) / 1e3:9.2f} ms {len(d):6d} calls  {name[:110]}" for name, d in top),
            ]
        else:
            lines += ["", "no device kernels were recorded (no GPU): the table above is host time"]
        self.path.write_text("\n".join(lines) + "\n")


def run_job(job: dict, folder: Path) -> dict | None:
    """Runs one (framework, setting) in its own process, in its own folder under ``folder`` (removed after); an
    out-of-memory failure is repeated once with gradient checkpointing on."""
    for checkpointing in (False, True):
        run_dir = Path(tempfile.mkdtemp(prefix=f"{job['framework']}_{job['objective']}_{job['setting']}_", dir=folder))
        job = {**job, "gradient_checkpointing": checkpointing, "run_dir": str(run_dir)}
        # A fresh cache for every run: each pays its own one-off reference pass; datasets' cache stays in the folder.
        env = {**os.environ, "SFT_RESEARCH_CACHE": str(run_dir / "cache"), "HF_DATASETS_CACHE": str(run_dir / "datasets")}
        done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True, env=env, cwd=run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if not done.returncode and lines:
            return {**json.loads(lines[-1][7:]), "gradient_checkpointing": checkpointing}
        out_of_memory = "out of memory" in done.stderr.lower()
        name = f"{job['framework']} {job['objective']} {job['setting']}" + (f" at {job['max_length']} tokens" if job.get("long") else "")
        print(f"{name} failed{' (out of memory)' if out_of_memory else ''}:\n{done.stderr[-3000:]}", file=sys.stderr)
        if not out_of_memory or checkpointing:
            return None
    return None


def matmul_flops_per_s(dtype: str) -> float:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    size = 8192 if device == "cuda" else 1024
    a = torch.randn(size, size, device=device, dtype=getattr(torch, dtype))
    for _ in range(3):
        a @ a
    if device == "cuda":
        torch.cuda.synchronize()
    start, count = time.perf_counter(), 20
    for _ in range(count):
        a @ a
    if device == "cuda":
        torch.cuda.synchronize()
    return count * 2 * size**3 / (time.perf_counter() - start)


def model_flops_per_token(model: dict, mean_length: float) -> float:
    """6 x parameters (projections, MLP, output layer) plus causal attention's 6 x layers x hidden x length."""
    h, layers, kv = model["hidden_size"], model["num_hidden_layers"], model["num_key_value_heads"]
    head_dim = h // model["num_attention_heads"]
    per_layer = h * h * 2 + 2 * h * kv * head_dim + 3 * h * model["intermediate_size"]
    params = layers * per_layer + h * model["vocab_size"]
    return 6 * params + 6 * layers * h * mean_length


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="cpu")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--objectives", nargs="*", default=["sft", "dpo"])
    parser.add_argument("--steps", type=int, help="override the preset's optimizer steps per run")
    parser.add_argument("--tokenizer", help="a tokenizer folder (default: the embedded SmolLM2 model's)")
    parser.add_argument(
        "--long_context",
        type=int,
        nargs="*",
        default=[],
        metavar="TOKENS",
        help="also SFT at batch 1 on sequences of these lengths: ours packed against TRL's best SFT setting",
    )
    parser.add_argument("--long_steps", type=int, default=5, help="optimizer steps per --long_context run (the first is warm-up)")
    parser.add_argument(
        "--settings",
        nargs="*",
        help="run only these settings (e.g. packed_compiled trl:padded: a name alone in either framework); default: all",
    )
    parser.add_argument(
        "--precision",
        choices=["masters", "pure_bf16"],
        default="masters",
        help="bf16 presets: float32 master weights in both frameworks, or pure bf16 in both",
    )
    parser.add_argument(
        "--trl_long_setting",
        choices=[s for _, s in SETTINGS["sft"]],
        help="TRL's setting at long context (default: its fastest SFT setting here, else packed_flex_liger on GPUs, packed_sdpa elsewhere)",
    )
    parser.add_argument("--json", help="write every figure to this JSON file")
    parser.add_argument("--profile", help="write a torch.profiler summary of our packed SFT step to this text file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))
    known = {name for runs in SETTINGS.values() for pair in runs for name in (pair[1], ":".join(pair))}
    unknown = sorted(set(args.settings or []) - known)
    if unknown:
        parser.error(f"unknown settings {unknown}; known: {sorted(known)}")
    preset = dict(PRESETS[args.preset])
    if args.steps:
        preset["steps"] = args.steps
    preset["steps"] = max(preset["steps"], preset["warmup"] + 2)
    folder = Path(tempfile.mkdtemp(prefix="compare_trl_"))
    try:
        failed = compare(args, preset, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if failed:
        sys.exit(f"compare_trl.py: {len(failed)} run(s) failed: {', '.join(failed)}")


def compare(args, preset: dict, folder: Path) -> list[str]:
    """Runs every chosen setting and writes the report; returns the runs that failed."""
    import torch

    positions = max(4096, 2 * max(args.long_context, default=0))
    model, sft, pairs, mean_length = build_assets(preset, folder, args.tokenizer, positions)
    gpu = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if gpu else f"CPU ({os.cpu_count()} cores)"
    peak = matmul_flops_per_s(preset["dtype"])
    flops_per_token = model_flops_per_token(preset["model"], mean_length)
    base_job = {
        "model": str(model),
        "sft": str(sft),
        "pairs": str(pairs),
        "batch": preset["batch"],
        "max_length": preset["lengths"][1],
        "steps": preset["steps"],
        "warmup": preset["warmup"],
        "dtype": preset["dtype"],
        "mean_length": mean_length,
        "precision": args.precision,
    }
    report = {
        "device": device,
        "date": time.strftime("%Y-%m-%d"),
        "preset": args.preset,
        "batch": preset["batch"],
        "lengths": preset["lengths"],
        "steps": preset["steps"],
        "warmup": preset["warmup"],
        "dtype": preset["dtype"],
        "precision": args.precision,
        "model": preset["model"],
        "matmul_peak_flops_per_s": peak,
        "flops_per_token": flops_per_token,
        "mean_length": mean_length,
        "jobs": [],
        "rows": [],
        "long_context": [],
        "failed": [],
    }

    def save() -> None:
        """Rewrites the JSON after every result, so that a run stopped at a time limit keeps what it measured."""
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1) + "\n")

    results: dict[tuple[str, str, str], list[dict]] = {}
    epoch_tokens = {"sft": preset["examples"] * mean_length, "dpo": 2 * preset["examples"] * mean_length}
    for _ in range(args.repeats):
        for objective in args.objectives:
            for framework, setting in SETTINGS[objective]:
                chosen = not args.settings or setting in args.settings or f"{framework}:{setting}" in args.settings
                if (setting in GPU_ONLY and not gpu) or not chosen:
                    continue
                job = {**base_job, "framework": framework, "setting": setting, "objective": objective}
                if (
                    args.profile
                    and (objective, framework) == ("sft", "ours")
                    and setting.startswith("packed")
                    and not job_profiled(results)
                ):
                    job["profile"] = str(Path(args.profile).resolve())
                result = run_job(job, folder)
                if result is None:
                    report["failed"].append(f"{objective} {framework} {setting}")
                    save()
                    continue
                results.setdefault((objective, framework, setting), []).append(result)
                report["jobs"].append({"objective": objective, "framework": framework, "setting": setting, **result})
                # The rows (ratios, MFU) after every run, so that a run stopped at a time limit keeps them too.
                report["rows"] = summary_rows(results, epoch_tokens, flops_per_token, peak)
                save()
                print(f"  {objective} {framework} {setting}: {result['tokens_per_s']:.0f} tokens/s", flush=True)
    print(
        f"\n{device}, {time.strftime('%Y-%m-%d')}, preset {args.preset}, batch {preset['batch']}, lengths {preset['lengths']}, "
        f"{preset['dtype']} ({args.precision}); matmul peak {peak / 1e12:.2f} TFLOP/s; {flops_per_token / 1e6:.1f} MFLOP per token\n"
    )
    if report["rows"]:
        print(
            "| objective | framework | setting | tokens/s | vs TRL's fastest | tokens/s, setup amortised over an epoch | "
            "vs TRL's best amortised | MFU | peak GiB | one-off setup s (compiling steps) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
    for row in report["rows"]:
        checkpointing = " (gradient checkpointing)" if row["gradient_checkpointing"] else ""
        print(
            f"| {row['objective']} | {row['framework']} | {row['setting']}{checkpointing} | {row['tokens_per_s']:.0f} | "
            f"{row['vs_trl_fastest']:.2f}x | {row['tokens_per_s_amortised']:.0f} | {row['vs_trl_best_amortised']:.2f}x | "
            f"{row['mfu']:.1%} | {row['peak_gib']:.2f} | {row['setup_s']:.1f} ({row['compiling_steps']:g}) |"
        )
    save()
    if args.long_context:
        long_context(
            args,
            folder,
            base_job,
            results,
            gpu,
            report["long_context"],
            save,
            lambda tokens: model_flops_per_token(preset["model"], tokens) / peak,
        )
    long_failed = [f"sft {row['framework']} {row['setting']} at {row['tokens']} tokens" for row in report["long_context"] if row["failed"]]
    return report["failed"] + long_failed


def summary_rows(results: dict, epoch_tokens: dict[str, float], flops_per_token: float, peak: float) -> list[dict]:
    """One row per (objective, framework, setting) run so far: medians over its repeats, and the ratios to TRL's
    fastest setting and to its best with the one-off setup amortised over an epoch of the benchmark's data."""
    rows = []
    for objective in dict.fromkeys(key[0] for key in results):
        runs_of = {k: v for k, v in results.items() if k[0] == objective}
        speed = {k: statistics.median(r["tokens_per_s"] for r in v) for k, v in runs_of.items()}
        setup = {k: statistics.median(r["setup_s"] for r in v) for k, v in runs_of.items()}
        # One epoch's tokens over the time to train on them plus the one-off setup (model load, reference pass).
        amortised = {k: epoch_tokens[objective] / (epoch_tokens[objective] / speed[k] + setup[k]) for k in runs_of}
        trl_best = max((a for k, a in amortised.items() if k[1] == "trl"), default=float("nan"))
        trl_fastest = max((v for k, v in speed.items() if k[1] == "trl"), default=float("nan"))
        for key, runs in runs_of.items():
            rows.append(
                {
                    "objective": objective,
                    "framework": key[1],
                    "setting": key[2],
                    "tokens_per_s": speed[key],
                    "tokens_per_s_amortised": amortised[key],
                    "mfu": speed[key] * flops_per_token / peak,  # the policy's training FLOPs only (6 per parameter and token)
                    "peak_gib": statistics.median(r["peak_gib"] for r in runs),
                    "setup_s": setup[key],
                    "compiling_steps": statistics.median(r["compiling_steps"] for r in runs),
                    "vs_trl_fastest": speed[key] / trl_fastest,
                    "vs_trl_best_amortised": amortised[key] / trl_best,
                    "gradient_checkpointing": any(r["gradient_checkpointing"] for r in runs),
                    "runs": [{k: r[k] for k in ("tokens_per_s", "peak_gib", "setup_s", "timed_steps", "compiling_steps")} for r in runs],
                }
            )
    return rows


def job_profiled(results: dict) -> bool:
    return any(key[:2] == ("sft", "ours") and key[2].startswith("packed") for key in results)


def long_context(args, folder: Path, base_job: dict, results: dict, gpu: bool, rows: list[dict], save, utilisation) -> None:
    """SFT at batch 1 on sequences of exactly each length: tokens/s, MFU (``utilisation(length)`` per token/s) and
    peak memory, ours packed and TRL's best."""
    from transformers import AutoTokenizer

    trl_sft = {k[2]: statistics.median(r["tokens_per_s"] for r in v) for k, v in results.items() if k[:2] == ("sft", "trl")}
    trl_setting = args.trl_long_setting or (max(trl_sft, key=trl_sft.get) if trl_sft else "packed_flex_liger" if gpu else "packed_sdpa")
    ours = "packed_compiled" if gpu else "packed"
    tokenizer = AutoTokenizer.from_pretrained(base_job["model"])
    steps = max(args.long_steps, 2)
    print(f"\nbatch 1, SFT, {steps} steps (1 warm-up); TRL {trl_setting}\n")
    print("| tokens | framework | setting | tokens/s | MFU | peak GiB | gradient checkpointing |")
    print("|---|---|---|---|---|---|---|")
    for length in args.long_context:
        sft, _, mean_length = write_data(tokenizer, [length, length], steps + 2, folder, f"_{length}")
        for framework, setting in (("ours", ours), ("trl", trl_setting)):
            # A token or two of slack: a passage cut at `length` tokens may re-tokenize a token longer.
            job = {
                **base_job,
                "framework": framework,
                "setting": setting,
                "objective": "sft",
                "sft": str(sft),
                "batch": 1,
                "max_length": length + 16,
                "steps": steps,
                "warmup": 1,
                "mean_length": mean_length,
                "long": True,
            }
            result = run_job(job, folder)
            row = {
                "tokens": length,
                "framework": framework,
                "setting": setting,
                "mean_tokens": mean_length,
                "tokens_per_s": result and result["tokens_per_s"],
                "peak_gib": result and result["peak_gib"],
                "mfu": result and result["tokens_per_s"] * utilisation(mean_length),
                "gradient_checkpointing": result and result["gradient_checkpointing"],
                "failed": result is None,
            }
            rows.append(row)
            save()
            if result is None:
                print(f"| {length} | {framework} | {setting} | failed | | | |")
            else:
                print(
                    f"| {length} | {framework} | {setting} | {result['tokens_per_s']:.0f} | {row['mfu']:.1%} | {result['peak_gib']:.2f} | "
                    f"{'on' if result['gradient_checkpointing'] else 'off'} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
