"""Fixed-length blocks of conversations, as TRL 0.9.6's ``ConstantLengthDataset`` makes them for
``SFTTrainer(packing=True)`` (the alignment-handbook's SFT), so that a batch counts blocks of the same number of tokens.

TRL reads the rendered conversations in order into buffers, each closed once its texts reach ``seq_length *
chars_per_token * num_of_sequences`` characters (2048 x 3.6 x 1024 at the handbook's length, TRL's defaults), tokenizes
a buffer's conversations, appends an EOS to each, joins them and cuts the stream into blocks of ``seq_length`` tokens,
dropping each buffer's last, partial block. :func:`pack_blocks` makes the same blocks of the same tokens. A
conversation may run across a block boundary, its pieces in two blocks, as there. Unlike TRL's blocks, where every
token attends to the block's earlier conversations and positions run across the whole block, attention stays inside
each piece here: each is a document of its own (positions from 0, see :func:`~sft_research.data.batch_layout.packed_layout`),
and the first token of a piece is no label of the token before it, which ends another conversation.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from sft_research.data.tokenize import Sequence, TokenizedExample

# TRL's SFTConfig defaults, which the handbook leaves: the estimate of characters per token, and the blocks a buffer
# is sized to hold.
CHARS_PER_TOKEN = 3.6
NUM_OF_SEQUENCES = 1024


def buffer_characters(block_length: int) -> float:
    """The characters of rendered text after which TRL closes a buffer."""
    return block_length * CHARS_PER_TOKEN * NUM_OF_SEQUENCES


def pack_blocks(
    examples: list[TokenizedExample], characters: list[int], block_length: int, eos_token_id: int, buffer: float
) -> list[TokenizedExample]:
    """The blocks of ``block_length`` tokens that TRL's ``ConstantLengthDataset`` makes of ``examples`` (one sequence
    each, in order; ``characters``: the length of each one's rendered text) with buffers of ``buffer`` characters.

    Each block is an example of one sequence whose ``documents`` are the lengths of its pieces; its completion mask
    is the pieces' own (the EOS after each conversation a completion token, as TRL trains every token) but false on
    the first token of every piece after the first. A block's ``raw`` is that of the conversation it starts in."""
    blocks: list[TokenizedExample] = []
    first = 0
    while first < len(examples):
        # As TRL: a buffer takes conversations while it holds fewer characters than its size.
        last, size = first, 0
        while last < len(examples) and size < buffer:
            size, last = size + characters[last], last + 1
        blocks += buffer_blocks(examples[first:last], block_length, eos_token_id, len(blocks))
        first = last
    return blocks


def buffer_blocks(examples: list[TokenizedExample], block_length: int, eos_token_id: int, first_id: int) -> list[TokenizedExample]:
    """One buffer's full blocks, numbered from ``first_id``."""
    ids: list[int] = []
    mask: list[bool] = []
    starts: list[int] = []  # where each conversation starts in the joined stream
    for example in examples:
        (sequence,) = example.sequences
        starts.append(len(ids))
        ids += [*sequence.input_ids, eos_token_id]
        mask += [*sequence.completion_mask, True]
    blocks = []
    for begin in range(0, len(ids) - block_length + 1, block_length):
        end = begin + block_length
        owner = bisect_right(starts, begin) - 1  # the conversation the block starts in
        cuts = [begin, *starts[owner + 1 : bisect_left(starts, end)]]
        block_mask = mask[begin:end]
        for cut in cuts[1:]:
            block_mask[cut - begin] = False
        documents = [b - a for a, b in zip(cuts, [*cuts[1:], end])]
        sequence = Sequence(ids[begin:end], block_mask, documents=documents)
        blocks.append(TokenizedExample(first_id + len(blocks), [sequence], 1.0, examples[owner].raw))
    return blocks
