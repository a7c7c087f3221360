"""Measures the base model's held-out accuracy on candidate reasoning-gym tasks, to choose "held-out skill" probes.

A forgetting probe must be a skill other than the training task (chain_sum: two-term integer addition and
subtraction) that the base model already has, so that fine-tuning can visibly lose it: accuracy well above zero and,
to keep the benchmark cheap, short answers. This script evaluates each candidate exactly as the harness does (chat
prompt, left-padded batched greedy generation, the task's verifier on the first line or its last word, only a full
score counted) and prints a markdown table.

    python benchmarks/select_skill_probes.py --tasks gcd 'lcm={"max_value": 10}' --n 50

A task is given as NAME (options from CANDIDATES, or the task's defaults) or NAME=JSON_OPTIONS.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from sft_research.checkpoints.names import load_tokenizer
from sft_research.data import ReasoningGymTask
from sft_research.data.collate import collate_prompts
from sft_research.data.tokenize import ChatTokenizer
from sft_research.model.generation import GenerationConfig, generate
from sft_research.model.loading import ModelConfig, load_model

# Easy settings of each task's difficulty knobs: few digits, few and short words, small values.
CANDIDATES: dict[str, dict] = {
    "products": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
    "leg_counting": {"min_animals": 1, "max_animals": 1, "min_instances": 1, "max_instances": 3},
    "letter_counting": {"min_words": 3, "max_words": 5},
    "number_sorting": {"min_numbers": 3, "max_numbers": 3, "min_decimals": 0, "max_decimals": 0, "min_value": 0, "max_value": 99},
    "word_sorting": {"min_words": 3, "max_words": 3, "min_word_length": 3, "max_word_length": 6},
    "word_sequence_reversal": {"min_words": 3, "max_words": 3},
    "spell_backward": {"min_word_len": 3, "max_word_len": 4},
    "family_relationships": {"min_family_size": 3, "max_family_size": 4},
    "gcd": {"min_value": 1, "max_value": 20},
    "lcm": {"min_value": 1, "max_value": 10},
    "simple_equations": {"min_terms": 2, "max_terms": 2, "min_value": 1, "max_value": 10, "operators": ["+"], "operators_weights": [1.0]},
    "count_bits": {"min_n": 1, "max_n": 15},
    "caesar_cipher": {"min_words": 1, "max_words": 1, "min_rotation": 1, "max_rotation": 1},
    "fraction_simplification": {"min_value": 1, "max_value": 10, "min_factor": 2, "max_factor": 3, "styles": ["plain"]},
}
BATCH_SIZE = 25


def parse_task(spec: str) -> tuple[str, dict]:
    name, _, options = spec.partition("=")
    return name, json.loads(options) if options else CANDIDATES.get(name, {})


def evaluate(model, tokenizer, chat_tokenizer: ChatTokenizer, task: ReasoningGymTask, max_new_tokens: int) -> tuple[float, float, str]:
    """Accuracy (full verifier score only), mean generated tokens, and the first generation."""
    prompts = [(i, chat_tokenizer.prompt_ids(prompt)) for i, prompt in enumerate(task.eval_prompts())]
    correct, tokens, texts = 0, 0, []
    for start in range(0, len(prompts), BATCH_SIZE):
        batch = collate_prompts(prompts[start : start + BATCH_SIZE], tokenizer.pad_token_id)
        generations = generate(
            model, tokenizer, batch["prompt_ids"], batch["prompt_attention_mask"], GenerationConfig(max_new_tokens=max_new_tokens)
        )
        for index, text in zip(batch["index"].tolist(), generations):
            correct += task.score(index, text) >= 1.0
            tokens += len(tokenizer(text, add_special_tokens=False)["input_ids"])
            texts.append(text)
    return correct / len(prompts), tokens / len(prompts), texts[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(CANDIDATES), help="NAME or NAME=JSON_OPTIONS")
    parser.add_argument("--n", type=int, default=50, help="held-out items per task")
    parser.add_argument("--max_new_tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config = ModelConfig()
    tokenizer = load_tokenizer(config.name_or_path)
    model = load_model(config).eval()
    chat_tokenizer = ChatTokenizer(tokenizer)

    rows = ["| task | options | n | accuracy | mean answer tokens | seconds |", "|---|---|---|---|---|---|"]
    with torch.no_grad():
        for name, options in map(parse_task, args.tasks):
            start = time.perf_counter()
            task = ReasoningGymTask(name, options, train_size=0, eval_size=args.n, seed=args.seed)
            try:
                accuracy, length, example = evaluate(model, tokenizer, chat_tokenizer, task, args.max_new_tokens)
            except Exception as error:  # some verifiers raise on malformed answers; such a task cannot be a probe
                print(f"{name}: the verifier raised {error!r}", flush=True)
                rows.append(f"| {name} | `{json.dumps(options)}` | {args.n} | verifier raised {type(error).__name__} | | |")
                continue
            seconds = time.perf_counter() - start
            print(f"{name}: accuracy {accuracy:.2f}; first item {task.heldout_entries[0]['answer']!r} -> {example!r}", flush=True)
            rows.append(f"| {name} | `{json.dumps(options)}` | {args.n} | {accuracy:.2f} | {length:.1f} | {seconds:.1f} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
