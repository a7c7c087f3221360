"""Trains this project and TRL side by side on the same model, data, batch and optimizer; reports tokens/s, model
FLOP utilisation and peak memory for SFT and DPO, and the ratios to TRL's best setting.

    python benchmarks/perf/compare_trl.py --preset cpu     # a small Qwen2-shaped model, a few minutes on a CPU
    python benchmarks/perf/compare_trl.py --preset gpu     # the Qwen2.5-0.5B shape, on one H100/H200, < 10 minutes

Every (framework, setting) runs in its own process, so that each peak-memory reading is its own; the settings
alternate between the frameworks, `--repeats` times, and the median is reported. TRL runs as its users would
tune it: padded, packed (bfd, padding-free), with Liger kernels where they exist (GPU), gradient checkpointing off;
DPO with and without precomputed reference log-probs. The ratio is to TRL's best setting. The data are passages
of the public-domain novel shipped with reasoning-gym, tokenized by the SmolLM2 tokenizer, in prompt/completion form.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRESETS = {
    "cpu": {
        "model": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
                  "intermediate_size": 768, "vocab_size": 49152},
        "batch": 8, "lengths": [64, 256], "steps": 8, "warmup": 3, "examples": 160, "dtype": "float32",
    },
    "gpu": {
        "model": {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
                  "intermediate_size": 4864, "vocab_size": 151936},
        "batch": 8, "lengths": [256, 1024], "steps": 30, "warmup": 8, "examples": 600, "dtype": "bfloat16",
    },
}
SETTINGS = {
    "sft": [("ours", "packed"), ("ours", "padded"), ("trl", "padded"), ("trl", "packed"), ("trl", "liger")],
    "dpo": [("ours", "cached_reference"), ("trl", "default"), ("trl", "liger"), ("trl", "precomputed_reference")],
}


def build_assets(preset: dict, folder: Path) -> tuple[Path, Path, Path, float]:
    """A random-init Qwen2-shaped checkpoint, SFT and preference data as JSON lines, and the mean example length."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from sft_research.bench.probes import GeneralTextProbe
    from sft_research.model.embedded import resolve_embedded

    tokenizer = AutoTokenizer.from_pretrained(resolve_embedded("embedded:SmolLM2-135M-Instruct"))
    config = Qwen2Config(**preset["model"], tie_word_embeddings=True, max_position_embeddings=4096,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    words = GeneralTextProbe().text().split()
    rng = random.Random(0)
    sft, pairs, lengths = [], [], []
    low, high = preset["lengths"]
    for _ in range(preset["examples"]):
        target = rng.randint(low, high)
        start = rng.randrange(len(words) - 2 * high)
        ids = tokenizer(" ".join(words[start : start + target]), add_special_tokens=False)["input_ids"][: target - 1]
        cut = len(ids) // 4
        prompt, completion = tokenizer.decode(ids[:cut]), tokenizer.decode(ids[cut:])
        other = tokenizer.decode(tokenizer(" ".join(words[start + high : start + high + target]), add_special_tokens=False)["input_ids"][cut : len(ids)])
        sft.append({"prompt": prompt, "completion": completion})
        pairs.append({"prompt": prompt, "chosen": completion, "rejected": other})
        lengths.append(len(ids) + 1)
    for name, rows in (("sft.jsonl", sft), ("pairs.jsonl", pairs)):
        (folder / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder / "model", folder / "sft.jsonl", folder / "pairs.jsonl", statistics.mean(lengths)


def peak_gib() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_ours(job: dict) -> dict:
    import lightning as L
    import torch

    from sft_research.data import FileDataset, SFTDataModule
    from sft_research.model.loading import ModelConfig
    from sft_research.module import FineTuningModule
    from sft_research.objectives import DPO, SFT
    from sft_research.optim import OptimizerConfig

    times, tokens = [], []

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, index):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, index):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.start)
            tokens.append(int(batch["attention_mask"].sum()))

    dpo = job["objective"] == "dpo"
    attention = "flex_attention" if torch.cuda.is_available() and job["setting"] == "packed" else "sdpa"
    module = FineTuningModule(
        ModelConfig(job["model"], dtype=job["dtype"], attn_implementation=attention),
        DPO(beta=0.1) if dpo else SFT(),
        OptimizerConfig(lr=1e-5),
        packing=job["setting"] == "packed",
        logprob_chunk_size=1024,
    )
    data = SFTDataModule(FileDataset(job["pairs" if dpo else "sft"]), tokenizer=job["model"], prompt_format="plain",
                         max_length=job["max_length"], batch_size=job["batch"] // (2 if dpo else 1))
    trainer = L.Trainer(max_steps=job["steps"], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[Timer()], precision="bf16-true" if job["dtype"] == "bfloat16" else "32-true")
    started = time.perf_counter()
    trainer.fit(module, data)  # the reference pass of DPO runs in setup, before the timed steps
    reference_seconds = time.perf_counter() - started - sum(times)
    return {"times": times, "tokens": tokens, "setup_s": reference_seconds}


def run_trl(job: dict) -> dict:
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    times, tokens = [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.start, self.seen = time.perf_counter(), state.num_input_tokens_seen

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.start)
            tokens.append(state.num_input_tokens_seen - self.seen)

    dtype = torch.bfloat16 if job["dtype"] == "bfloat16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(job["model"], dtype=dtype, attn_implementation="sdpa")
    tokenizer = AutoTokenizer.from_pretrained(job["model"])
    common = dict(
        output_dir=tempfile.mkdtemp(), max_steps=job["steps"], learning_rate=1e-5, report_to="none", logging_steps=10**6,
        save_strategy="no", gradient_checkpointing=False, bf16=dtype == torch.bfloat16, use_cpu=not torch.cuda.is_available(),
        use_liger_kernel=job["setting"] == "liger", max_length=job["max_length"], include_num_input_tokens_seen="non_padding",
        dataloader_drop_last=False, seed=0,
    )
    started = time.perf_counter()
    if job["objective"] == "sft":
        packed = job["setting"] == "packed"
        # Packed rows hold max_length tokens each: as many rows as carry the same tokens per step as the padded batch.
        batch = max(1, round(job["batch"] * job["mean_length"] / job["max_length"])) if packed else job["batch"]
        args = SFTConfig(per_device_train_batch_size=batch, packing=packed, completion_only_loss=True, **common)
        trainer = SFTTrainer(model=model, args=args, train_dataset=load_dataset("json", data_files=job["sft"], split="train"), processing_class=tokenizer)
    else:
        args = DPOConfig(per_device_train_batch_size=job["batch"] // 2, beta=0.1,
                         precompute_ref_log_probs=job["setting"] == "precomputed_reference", **common)
        trainer = DPOTrainer(model=model, args=args, train_dataset=load_dataset("json", data_files=job["pairs"], split="train"), processing_class=tokenizer)
    setup = time.perf_counter() - started
    trainer.add_callback(Timer())
    trainer.train()
    return {"times": times, "tokens": tokens, "setup_s": setup}


def worker(job: dict) -> None:
    result = (run_ours if job["framework"] == "ours" else run_trl)(job)
    warm = job["warmup"]
    result.update(tokens_per_s=sum(result["tokens"][warm:]) / sum(result["times"][warm:]), peak_gib=peak_gib())
    print("RESULT " + json.dumps(result))


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
    parser.add_argument("--objectives", nargs="+", default=["sft", "dpo"])
    parser.add_argument("--steps", type=int, help="override the preset's optimizer steps per run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))
    import torch

    preset = dict(PRESETS[args.preset])
    if args.steps:
        preset["steps"] = args.steps
    folder = Path(tempfile.mkdtemp(prefix="compare_trl_"))
    model, sft, pairs, mean_length = build_assets(preset, folder)
    gpu = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if gpu else f"CPU ({os.cpu_count()} cores)"
    peak = matmul_flops_per_s(preset["dtype"])
    flops_per_token = model_flops_per_token(preset["model"], mean_length)
    results: dict[tuple[str, str, str], list[dict]] = {}
    for _ in range(args.repeats):
        for objective in args.objectives:
            for framework, setting in SETTINGS[objective]:
                if setting == "liger" and not gpu:
                    continue  # Liger's kernels are Triton kernels: GPUs only
                job = {"framework": framework, "setting": setting, "objective": objective, "model": str(model), "sft": str(sft),
                       "pairs": str(pairs), "batch": preset["batch"], "max_length": preset["lengths"][1], "steps": preset["steps"],
                       "warmup": preset["warmup"], "dtype": preset["dtype"], "mean_length": mean_length}
                # A fresh cache for every run: each pays its own one-off reference pass.
                env = {**os.environ, "SFT_RESEARCH_CACHE": tempfile.mkdtemp(prefix="cache_", dir=folder)}
                done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True, env=env)
                lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
                if done.returncode or not lines:
                    print(f"{framework} {objective} {setting} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
                    continue
                results.setdefault((objective, framework, setting), []).append(json.loads(lines[-1][7:]))
                print(f"  {objective} {framework} {setting}: {results[(objective, framework, setting)][-1]['tokens_per_s']:.0f} tokens/s", flush=True)
    print(f"\n{device}, {time.strftime('%Y-%m-%d')}, preset {args.preset}, batch {preset['batch']}, lengths {preset['lengths']}, "
          f"{preset['dtype']}; matmul peak {peak / 1e12:.2f} TFLOP/s; {flops_per_token / 1e6:.1f} MFLOP per token\n")
    print("| objective | framework | setting | tokens/s | tokens/s, setup amortised over an epoch | MFU | peak GiB | one-off setup s | vs TRL best (amortised) |")
    print("|---|---|---|---|---|---|---|---|---|")
    epoch_tokens = {"sft": preset["examples"] * mean_length, "dpo": 2 * preset["examples"] * mean_length}
    for objective in args.objectives:
        rows = {k: v for k, v in results.items() if k[0] == objective}
        speed = {k: statistics.median(r["tokens_per_s"] for r in v) for k, v in rows.items()}
        setup = {k: statistics.median(r["setup_s"] for r in v) for k, v in rows.items()}
        # One epoch's tokens over the time to train on them plus the one-off setup (model load, reference pass).
        amortised = {k: epoch_tokens[objective] / (epoch_tokens[objective] / speed[k] + setup[k]) for k in rows}
        trl_best = max((a for k, a in amortised.items() if k[1] == "trl"), default=float("nan"))
        for key, runs in rows.items():
            memory = statistics.median(r["peak_gib"] for r in runs)
            mfu = speed[key] * flops_per_token / peak  # the policy's training FLOPs only (6 per parameter and token)
            print(f"| {objective} | {key[1]} | {key[2]} | {speed[key]:.0f} | {amortised[key]:.0f} | {mfu:.1%} | {memory:.2f} | "
                  f"{setup[key]:.1f} | {amortised[key] / trl_best:.2f}x |")


if __name__ == "__main__":
    main()
