"""What TRL 0.9.6 and the SPIN collator keep of fixed rows, written as tests/fixtures/trl_0_9_6.json, which
tests/test_trainer_truncation.py compares the project's ``truncation: trl_0_9`` / ``spin`` and ``pack_into_blocks`` with.

Run by benchmarks/trl_0_9_fixture.sh in a separate environment holding trl 0.9.6 and transformers 4.45.2; the
tokenizer is the embedded SmolLM2-135M-Instruct's, rendered through the Zephyr template as the alignment-handbook's
recipe renders (experiments/templates/zephyr.jinja). Three parts:

* ``trl_0_9``: TRL 0.9.6's own ``DPOTrainer.tokenize_row`` on each pair, its strings made as the handbook's
  ``apply_chat_template(task="dpo")`` makes them (the prompt's turns with an empty system turn first, then each answer's
  turn alone); the trainer is not constructed, only the attributes that method reads are set.
* ``spin``: the SPIN collator (``DataCollatorWithPadding.tokenize_batch_element`` in
  JasonJiaxiangLi/Reward_learning_SFT ``src/alignment/utils.py`` at 4953e70, with ``apply_chat_template`` of
  ``src/alignment/data.py``) is not on PyPI: its rule is transcribed in :func:`spin_kept` below.
* ``packing``: TRL 0.9.6's ``ConstantLengthDataset`` as ``SFTTrainer(packing=True)`` builds it for the handbook's SFT
  (defaults: 3.6 characters per token, 1024 sequences per buffer, an EOS after each conversation, special tokens
  added), unshuffled, on :func:`conversations`; and accelerate's ``BatchSamplerShard`` (as the handbook's Trainer
  shards it: 8 processes, 16 per device, even batches) for the steps of an epoch and the blocks of each step.

This module's top level uses the standard library only: the test imports the rows from it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
from pathlib import Path

QUESTION = "Describe how a river shapes the valley around it over many thousands of years, step by step. "
ANSWER = "Water carries sand and stones downstream, and they grind the riverbed a little deeper every flood season. "

# (name, the user's question, chosen, rejected): rows that fit, that cut the prompt, the answers, and both.
PAIRS = [
    ("fits", "What is the capital of France?", "Paris.", "Lyon, I think."),
    ("cuts the prompt", QUESTION * 4, "It erodes the rock.", "Rivers do not change valleys."),
    ("cuts the answers", "How do rivers shape valleys?", ANSWER * 4, "Slowly."),
    ("cuts both", QUESTION * 3, ANSWER * 2, ANSWER * 3),
    # Its max_length is its own length without the EOS the trainers append (see exact_length).
    ("exactly max_length", "How do rivers shape valleys?", "By erosion, over thousands of years.", "They do not."),
]
MAX_LENGTH, MAX_PROMPT_LENGTH = 64, 24
EXACT_PROMPT_LENGTH = 16
BLOCK_LENGTH, PER_DEVICE, PROCESSES = 64, 16, 8
WORDS = "the a river valley stone water flows over rock and sand cuts deeper each year slowly carries down to sea".split()


def conversations(count: int = 1000, seed: int = 0) -> list[list[dict[str, str]]]:
    """Synthetic conversations of one to three exchanges, of a few words to a few hundred characters each turn."""
    rng = random.Random(seed)

    def text() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 60))).capitalize() + "."

    return [[{"role": role, "content": text()} for _ in range(rng.randint(1, 3)) for role in ("user", "assistant")] for _ in range(count)]


def pair_messages(question: str) -> list[dict[str, str]]:
    """The prompt's turns as the handbook's ``maybe_insert_system_message`` leaves them (the template knows a system
    role), and as the SPIN data's ``apply_chat_template`` builds them."""
    return [{"role": "system", "content": ""}, {"role": "user", "content": question}]


def handbook_strings(tokenizer, question: str, answer: str) -> tuple[str, str]:
    """The handbook's ``text_prompt`` and ``text_chosen``: the prompt's turns, then the answer's turn alone."""
    prompt = tokenizer.apply_chat_template(pair_messages(question), tokenize=False)
    return prompt, tokenizer.apply_chat_template([{"role": "assistant", "content": answer}], tokenize=False)


def trl_kept(trainer, question: str, chosen: str, rejected: str) -> dict:
    prompt, chosen_text = handbook_strings(trainer.tokenizer, question, chosen)
    _, rejected_text = handbook_strings(trainer.tokenizer, question, rejected)
    row = trainer.tokenize_row({"prompt": prompt, "chosen": chosen_text, "rejected": rejected_text})
    return {
        name: {"input_ids": row[f"{name}_input_ids"], "labeled": [label != -100 for label in row[f"{name}_labels"]]}
        for name in ("chosen", "rejected")
    }


def spin_strings(tokenizer, question: str, answer: str) -> tuple[str, str]:
    """data.py's ``apply_chat_template``: the prompt with the generation prompt, the answer's turn without the
    ``<|assistant|>\\n`` prefix."""
    prompt = tokenizer.apply_chat_template(pair_messages(question), tokenize=False, add_generation_prompt=True)
    answer = tokenizer.apply_chat_template([{"role": "assistant", "content": answer}], tokenize=False)
    prefix = "<|assistant|>\n"
    return prompt, answer[len(prefix) :] if answer.startswith(prefix) else answer


def spin_kept(tokenizer, question: str, chosen: str, rejected: str, max_length: int, max_prompt_length: int) -> dict:
    """``tokenize_batch_element`` of utils.py, transcribed: each string tokenized on its own without special tokens,
    EOS appended to each answer (the EOS inside the text only masked out of attention, not out of the ids or labels),
    then with the longer answer: the prompt to its last ``max_prompt_length`` tokens (``truncation_mode`` keep_end),
    and if still too long each answer to its first ``max_length - max_prompt_length``."""
    prompt, chosen_text = spin_strings(tokenizer, question, chosen)
    _, rejected_text = spin_strings(tokenizer, question, rejected)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answers = [tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for text in (chosen_text, rejected_text)]
    longer = max(len(answer) for answer in answers)
    if len(prompt_ids) + longer > max_length:
        prompt_ids = prompt_ids[-max_prompt_length:]
    if len(prompt_ids) + longer > max_length:
        answers = [answer[: max_length - max_prompt_length] for answer in answers]
    return {
        name: {"input_ids": prompt_ids + answer, "labeled": [False] * len(prompt_ids) + [True] * len(answer)}
        for name, answer in zip(("chosen", "rejected"), answers)
    }


def exact_length(tokenizer, mode: str, question: str, chosen: str, rejected: str) -> int:
    """The length of the pair's longer sequence without the appended EOS, under ``mode``'s tokenization."""
    if mode == "trl_0_9":
        prompt, _ = handbook_strings(tokenizer, question, chosen)
        bos = [tokenizer.bos_token_id]
        texts = [prompt + handbook_strings(tokenizer, question, answer)[1] for answer in (chosen, rejected)]
    else:
        prompt, _ = spin_strings(tokenizer, question, chosen)
        bos = []
        texts = [prompt + spin_strings(tokenizer, question, answer)[1] for answer in (chosen, rejected)]
    return max(len(bos + tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts)


def pair_rows(tokenizer) -> list[dict]:
    from trl import DPOTrainer

    trainer = DPOTrainer.__new__(DPOTrainer)  # tokenize_row reads these attributes only (for a text decoder)
    trainer.tokenizer, trainer.is_encoder_decoder, trainer.is_vision_model = tokenizer, False, False
    trainer.truncation_mode, trainer.label_pad_token_id = "keep_end", -100
    rows = []
    for name, question, chosen, rejected in PAIRS:
        row = {"name": name, "prompt": question, "chosen": chosen, "rejected": rejected}
        for mode in ("trl_0_9", "spin"):
            exact = name == "exactly max_length"
            max_length = exact_length(tokenizer, mode, question, chosen, rejected) if exact else MAX_LENGTH
            max_prompt_length = EXACT_PROMPT_LENGTH if exact else MAX_PROMPT_LENGTH
            if mode == "trl_0_9":
                trainer.max_length, trainer.max_prompt_length = max_length, max_prompt_length
                kept = trl_kept(trainer, question, chosen, rejected)
            else:
                kept = spin_kept(tokenizer, question, chosen, rejected, max_length, max_prompt_length)
            row[mode] = {"max_length": max_length, "max_prompt_length": max_prompt_length, **kept}
        rows.append(row)
    return rows


def packing(tokenizer) -> dict:
    import torch
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler, SequentialSampler
    from trl.trainer.utils import ConstantLengthDataset

    texts = [{"text": tokenizer.apply_chat_template(pair_messages("")[:1] + messages, tokenize=False)} for messages in conversations()]
    dataset = ConstantLengthDataset(
        tokenizer, texts, dataset_text_field="text", seq_length=BLOCK_LENGTH, eos_token_id=tokenizer.eos_token_id, shuffle=False
    )
    blocks = [block["input_ids"].tolist() for block in dataset]
    base = BatchSampler(SequentialSampler(range(len(blocks))), PER_DEVICE, drop_last=False)
    shards = [list(BatchSamplerShard(base, PROCESSES, index, split_batches=False, even_batches=True)) for index in range(PROCESSES)]
    steps = {len(shard) for shard in shards}
    if len(steps) != 1:
        raise RuntimeError(f"processes take different numbers of batches: {steps}")
    tokens = sorted({sum(len(shard[step]) for shard in shards) * BLOCK_LENGTH for step in range(steps.pop())})
    digest = hashlib.sha256(torch.tensor(blocks, dtype=torch.int64).numpy().tobytes()).hexdigest()
    return {
        "block_length": BLOCK_LENGTH,
        "conversations": len(texts),
        "characters": sum(len(text["text"]) for text in texts),
        "blocks": len(blocks),
        "blocks_sha256": digest,
        "first_blocks": blocks[:2],
        "per_device_batch": PER_DEVICE,
        "processes": PROCESSES,
        "steps_per_epoch": len(shards[0]),
        "tokens_per_step": tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", required=True, help="the embedded SmolLM2-135M-Instruct's folder")
    parser.add_argument("--template", required=True, help="experiments/templates/zephyr.jinja")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    import transformers
    import trl
    from transformers import PreTrainedTokenizerFast

    folder = Path(args.tokenizer)
    # Saved by transformers 5, whose tokenizer class 4.x does not know: the tokenizer file and its special tokens.
    config = json.loads((folder / "tokenizer_config.json").read_text())
    special = {key: config[key] for key in ("bos_token", "eos_token", "pad_token", "unk_token")}
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), **special)
    tokenizer.chat_template = Path(args.template).read_text()
    fixture = {
        "made_by": "bash benchmarks/trl_0_9_fixture.sh",
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__},
        "spin_source": "JasonJiaxiangLi/Reward_learning_SFT@4953e70 src/alignment/utils.py tokenize_batch_element, transcribed",
        "tokenizer": "embedded:SmolLM2-135M-Instruct",
        "chat_template": args.template,
        "pairs": pair_rows(tokenizer),
        "packing": packing(tokenizer),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    # Lists of ids and flags on one line each.
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", json.dumps(fixture, indent=1))
    Path(args.output).write_text(text + "\n")
    print(f"wrote {args.output}: {len(fixture['pairs'])} pairs, {fixture['packing']['blocks']} blocks")


if __name__ == "__main__":
    main()
