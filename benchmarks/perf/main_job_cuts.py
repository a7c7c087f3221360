"""The two cuts that took the main job under 10 minutes, each measured against the way it ran before, side by side in
one process, on the default suite's model and data (the embedded SmolLM2-135M-Instruct, two-term ``chain_sum``):

* generation from prompts whose shared first tokens (SmolLM2's system turn, the task's instruction) run once
  (:mod:`sft_research.model.shared_prefix`), against every prompt run whole: the task score's 100 held-out prompts
  (8 new tokens) and the skill probe's 40 ``gcd`` prompts (24), greedy, and the KL probe's teacher-forced forward over
  32 prompts and their answers. The generated tokens must be equal;
* the frozen pass that gives iw-SFT (and DPO, IRFT) their reference log-probs, the same way: the suite's 144 training
  examples, 16 a pass (:func:`sft_research.frozen.quantities.frozen_outputs`);
* a training step (forward, backward, AdamW) with the output layer at the completion positions only, against every
  position, and with the tokens the batch's sequences share run once on top (``model.execution.shared_prefix``, as
  the default suite runs): batches of 8 of the suite's training data. The losses must agree.

Each pair alternates, so that neither runs on a warmer machine. About two minutes on the 2-core CPU:

    python benchmarks/perf/main_job_cuts.py [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import time
from unittest import mock

import torch

from sft_research.checkpoints.names import load_tokenizer
from sft_research.data.collate import micro_batches, prompt_batches
from sft_research.data.datamodule import SFTDataModule
from sft_research.data.reasoning_gym_task import ReasoningGymTask
from sft_research.data.tokenize import ChatTokenizer
from sft_research.frozen import quantities
from sft_research.frozen.cache import compute_quantity
from sft_research.model import generation, shared_prefix
from sft_research.model.execution import ExecutionConfig, batch_outputs, trimmed
from sft_research.model.loading import ModelConfig, load_model
from sft_research.model.output_layer import LabelLogprobs

MODEL = "embedded:SmolLM2-135M-Instruct"
CHAIN_SUM = ("chain_sum", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2})


def no_shared_prefix():
    """Every prompt and sequence run whole, as before the shared prefix."""
    return (
        mock.patch.object(generation, "split_shared_prefix", lambda *args: None),
        mock.patch.object(shared_prefix, "split_shared_prefix", lambda *args: None),
        mock.patch.object(quantities, "MIN_SHARED", 10**9),
    )


def timed(function, shared: bool) -> tuple[float, object]:
    patches = () if shared else no_shared_prefix()
    for patch in patches:
        patch.start()
    try:
        start = time.perf_counter()
        result = function()
        return time.perf_counter() - start, result
    finally:
        for patch in patches:
            patch.stop()


def side_by_side(function, repeats: int = 2) -> dict:
    seconds = {"shared prefix": 0.0, "whole prompts": 0.0}
    results = {}
    for _ in range(repeats):
        for name, shared in (("shared prefix", True), ("whole prompts", False)):
            elapsed, results[name] = timed(function, shared)
            seconds[name] += elapsed / repeats
    return {"seconds": seconds, "speedup": seconds["whole prompts"] / seconds["shared prefix"], "results": results}


def suite_data() -> SFTDataModule:
    """The default suite's training data, in batches of 8."""
    task = ReasoningGymTask(*CHAIN_SUM, train_size=144, eval_size=10, seed=0, noise_fraction=0.25)
    data = SFTDataModule(task, tokenizer=MODEL, batch_size=8)
    data.setup("fit")
    return data


def generation_cases(model, tokenizer) -> dict:
    chat_tokenizer = ChatTokenizer(tokenizer)
    task = ReasoningGymTask(*CHAIN_SUM, train_size=144, eval_size=100, seed=0, noise_fraction=0.25)
    gcd = ReasoningGymTask("gcd", {"min_value": 1, "max_value": 10}, train_size=0, eval_size=40, seed=1234)

    def generate(prompts, max_new_tokens):
        def run():
            batches = prompt_batches(chat_tokenizer, prompts, tokenizer.pad_token_id, 50)
            config = generation.GenerationConfig(max_new_tokens)
            return [generation.generate_tokens(model, tokenizer, b["prompt_ids"], b["prompt_attention_mask"], config) for b in batches]

        return run

    def teacher_forced():
        batch = next(prompt_batches(chat_tokenizer, task.eval_prompts()[:32], tokenizer.pad_token_id, 50))
        answers = torch.tensor([tokenizer.encode("42<|im_end|>", add_special_tokens=False)] * 32)
        with torch.no_grad():
            return shared_prefix.continuation_logits(
                model, batch["prompt_ids"], batch["prompt_attention_mask"], answers, torch.ones_like(answers), tokenizer.pad_token_id
            )

    data = suite_data()

    def reference_logprobs():
        with torch.no_grad():
            values = compute_quantity(model, data.train_examples, quantities.LabelLogprobsQuantity(), 16, tokenizer.pad_token_id)
        return torch.cat([value["logps"].reshape(-1) for value in values])

    cases = {
        "task score: 100 prompts, 8 new tokens": side_by_side(generate(task.eval_prompts(), 8)),
        "skill probe (gcd): 40 prompts, 24 new tokens": side_by_side(generate(gcd.eval_prompts(), 24)),
        "KL probe's forward: 32 prompts and answers": side_by_side(teacher_forced),
        "frozen reference log-probs: 144 training examples": side_by_side(reference_logprobs),
    }
    for name, case in cases.items():
        shared, whole = case.pop("results").values()
        if name.startswith(("KL", "frozen")):
            case["max_abs_logit_difference"] = float((shared - whole).abs().max())  # logits, or log-probs
        else:
            case["equal_tokens"] = all(torch.equal(a, b) for a, b in zip(shared, whole))
    return cases


# How a training step ran before (every position), and each cut on top of the last.
STEP_SETTINGS = {
    "every position": (False, ExecutionConfig()),
    "completion positions": (True, ExecutionConfig()),
    "completion positions, shared prefix": (True, ExecutionConfig(shared_prefix=True)),
}


def training_case(repeats: int = 6) -> dict:
    from sft_research.train.module import FineTuningModule

    data = suite_data()
    batches = [batch for _, batch in zip(range(repeats + 1), data.train_dataloader())]
    module = FineTuningModule(ModelConfig(MODEL))
    module.configure_model()
    model = module.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

    def step(batch, completion_only: bool, execution: ExecutionConfig) -> tuple[float, float]:
        (micro,) = micro_batches(batch, None)
        start = time.perf_counter()
        tensors, _ = trimmed(micro, {}, execution, completion_only=completion_only)
        mask = tensors["loss_mask"]
        loss = -(batch_outputs(model, tensors, (LabelLogprobs(),), {}, execution)["logps"] * mask).sum() / mask.sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - start, float(loss.detach())

    step(batches[0], True, ExecutionConfig())  # AdamW's state is made on its first step
    seconds = dict.fromkeys(STEP_SETTINGS, 0.0)
    losses = {name: [] for name in STEP_SETTINGS}
    for batch in batches[1:]:
        state = {name: value.clone() for name, value in model.state_dict().items()}
        for name, (completion_only, execution) in STEP_SETTINGS.items():
            model.load_state_dict(state)  # the same weights for every setting: the losses compare
            elapsed, loss = step(batch, completion_only, execution)
            seconds[name] += elapsed / repeats
            losses[name].append(loss)
    before = seconds["every position"]
    return {
        "seconds_per_step": seconds,
        "speedup_over_every_position": {name: before / value for name, value in seconds.items()},
        "max_loss_difference": max(abs(a - b) for values in zip(*losses.values()) for a in values for b in values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the measurements here too")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tokenizer = load_model(ModelConfig(MODEL)).eval(), load_tokenizer(MODEL)
    results = {"generation": generation_cases(model, tokenizer), "training step (batch 8)": training_case()}
    for name, case in results["generation"].items():
        s = case["seconds"]
        print(f"{name}: {s['shared prefix']:.2f} s shared prefix, {s['whole prompts']:.2f} s whole prompts, {case['speedup']:.2f}x", end="")
        if "equal_tokens" in case:
            print(f"; {'tokens equal' if case['equal_tokens'] else 'TOKENS DIFFER'}")
        else:
            print(f"; largest difference {case['max_abs_logit_difference']:.1e}")
    step = results["training step (batch 8)"]
    for name, seconds in step["seconds_per_step"].items():
        print(f"training step, batch 8, output layer at {name}: {seconds:.2f} s, {step['speedup_over_every_position'][name]:.2f}x")
    print(f"largest loss difference between the settings: {step['max_loss_difference']:.1e}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=1)


if __name__ == "__main__":
    main()
