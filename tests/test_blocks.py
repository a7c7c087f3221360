"""``data.lengths.pack_into_blocks``: the alignment-handbook's SFT batch of blocks. The blocks hold exactly the tokens TRL 0.9.6's
``ConstantLengthDataset`` packs, an epoch has the recipe's steps and every step its tokens (the fixture written by the
real TRL and accelerate, ``bash benchmarks/trl_0_9_fixture.sh``), and each conversation in a block sees only itself."""

import hashlib
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM

from sft_research.data import FileDataset, LengthConfig, SFTDataModule, TemplateConfig
from sft_research.data.batch_layout import packed_layout
from sft_research.data.blocks import pack_blocks
from sft_research.data.collate import collate_examples, micro_batches
from sft_research.data.datamodule import check_blocks
from sft_research.data.tokenize import Sequence, TokenizedExample
from sft_research.errors import ConfigError
from sft_research.model.execution import ExecutionConfig, batch_outputs, trimmed
from sft_research.model.output_layer import LabelLogprobs
from sft_research.objectives import SFT, IwSFT

REPO = Path(__file__).parents[1]
FIXTURE = json.loads((REPO / "tests/fixtures/trl_0_9_6.json").read_text())


def fixture_module():
    """benchmarks/trl_0_9_fixture.py, whose top level is the standard library only: the conversations TRL packed."""
    spec = importlib.util.spec_from_file_location("trl_0_9_fixture", REPO / "benchmarks/trl_0_9_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def example(index: int, ids: list[int], mask: list[bool] | None = None) -> TokenizedExample:
    return TokenizedExample(index, [Sequence(ids, mask or [True] * len(ids))], 1.0, None)


def test_the_packed_layout_keeps_each_document_to_itself():
    """One row of two documents (2 and 3 tokens) in a packed row of 8: positions restart, the label position that would
    predict the second document's first token points at the zero slot, and so does the padding."""
    layout = packed_layout([[2, 3]], length=5, size=8)
    assert layout["gather"].tolist() == [0, 1, 2, 3, 4, 0, 0, 0]
    assert layout["positions"].tolist() == [0, 1, 0, 1, 2, 0, 1, 2]
    assert layout["document"].tolist() == [0, 0, 1, 1, 1, 2, 2, 2]
    assert layout["unpack"].tolist() == [[0, 7, 2, 3]]
    assert layout["pack"].tolist() == [0, 4, 2, 3, 4, 4, 4]


def test_blocks_join_conversations_with_an_eos_and_drop_each_buffers_partial_block():
    """Buffers of 10 characters: the first takes conversations 0 and 1 (8 + 6 characters), the second 2 and 3. The
    first buffer's 5 + 1 + 4 + 1 = 11 tokens give two blocks of 4 and drop 3; the second's 2 + 1 + 3 + 1 = 7 give one."""
    conversations = [example(0, [10, 11, 12, 13, 14]), example(1, [20, 21, 22, 23]), example(2, [30, 31]), example(3, [40, 41, 42])]
    blocks = pack_blocks(conversations, [8, 6, 4, 5], block_length=4, eos_token_id=2, buffer=10)
    assert [b.sequences[0].input_ids for b in blocks] == [[10, 11, 12, 13], [14, 2, 20, 21], [30, 31, 2, 40]]
    assert [b.sequences[0].documents for b in blocks] == [[4], [2, 2], [3, 1]]
    # The first token of each later piece is no completion: no conversation is trained to predict the next one.
    assert [b.sequences[0].completion_mask for b in blocks] == [[True] * 4, [True, True, False, True], [True, True, True, False]]
    assert [b.example_id for b in blocks] == [0, 1, 2]


def test_in_a_block_each_conversation_has_the_log_probs_it_has_alone(tiny_model_dir):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    first, second = [5, 9, 14, 3, 22, 7, 31], [8, 17, 4, 26, 11]
    block = example(0, first + second, [True] * 7 + [False] + [True] * 4)
    block.sequences[0].documents = [7, 5]
    execution = ExecutionConfig(packing=True)
    tensors, _ = trimmed(next(micro_batches(collate_examples([block], pad_token_id=0, pack=True), None)), {}, execution)
    packed = batch_outputs(model, tensors, (LabelLogprobs(),), {}, execution)["logps"][0, 0]
    alone = collate_examples([example(0, first), example(1, second)], pad_token_id=0)
    alone_tensors, _ = trimmed(alone, {}, ExecutionConfig())
    separate = batch_outputs(model, alone_tensors, (LabelLogprobs(),), {}, ExecutionConfig())["logps"][:, 0]
    torch.testing.assert_close(packed[:6], separate[0, :6])
    torch.testing.assert_close(packed[7:], separate[1, :4])
    assert packed[6] == 0 and tensors["loss_mask"][0, 0].tolist() == [True] * 6 + [False] + [True] * 4


@pytest.mark.slow
def test_the_batch_counts_blocks_as_the_handbooks_sft_does(tmp_path):
    """1000 conversations rendered with the Zephyr template, blocks of 64 tokens, batch 128 (16 per device on 8 GPUs):
    TRL's blocks token for token, and accelerate's steps per epoch with the same tokens in every step (the epoch's
    last batch filled with blocks from its start)."""
    expected = FIXTURE["packing"]
    path = tmp_path / "conversations.jsonl"
    path.write_text("".join(json.dumps({"messages": messages}) + "\n" for messages in fixture_module().conversations()))
    data = SFTDataModule(
        FileDataset(str(path)),
        tokenizer=FIXTURE["tokenizer"],
        batch_size=expected["per_device_batch"] * expected["processes"],
        micro_batch_size=expected["per_device_batch"],
        template=TemplateConfig(
            chat_template=str(REPO / FIXTURE["chat_template"]),
            completion_only_loss=False,
            add_special_tokens=True,
            auto_insert_empty_system_msg=True,
        ),
        lengths=LengthConfig(max_length=expected["block_length"], pack_into_blocks=True),
    )
    data.setup("fit")
    blocks = [block.sequences[0].input_ids for block in data.train_examples]
    assert len(blocks) == expected["blocks"] and blocks[:2] == expected["first_blocks"]
    assert hashlib.sha256(torch.tensor(blocks, dtype=torch.int64).numpy().tobytes()).hexdigest() == expected["blocks_sha256"]
    assert all(sum(block.sequences[0].documents) == expected["block_length"] for block in data.train_examples)
    data.pack = True
    loader = data.train_dataloader()
    assert len(loader) == expected["steps_per_epoch"]
    assert sorted({batch["input_ids"].numel() for batch in loader}) == expected["tokens_per_step"]


def test_blocks_need_the_packed_forward_and_an_objective_reading_no_frozen_model_or_quality():
    def module(packing, objective):
        return SimpleNamespace(execution=ExecutionConfig(packing=packing), objective=objective)

    check_blocks(module(True, SFT()))
    with pytest.raises(ConfigError, match="^data.lengths.pack_into_blocks needs model.execution.packing: true"):
        check_blocks(module(False, SFT()))
    for objective in (SFT(use_quality=True), IwSFT()):
        with pytest.raises(ConfigError, match=f"{type(objective).__name__} reads a frozen model or quality scores"):
            check_blocks(module(True, objective))
    with pytest.raises(ConfigError, match="joins SFT records into blocks: the objective trains on preference pairs"):
        SFTDataModule(FileDataset("pairs.jsonl"), record_kind="preference", lengths=LengthConfig(pack_into_blocks=True))
