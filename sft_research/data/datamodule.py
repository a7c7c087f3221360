"""The LightningDataModule: reads a source, checks and tokenizes every record, and serves batches."""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader

from sft_research.checkpoints.embedded import DEFAULT_MODEL
from sft_research.data.collate import collate_examples, collate_prompts
from sft_research.data.options import LengthConfig, TemplateConfig
from sft_research.data.records import Preference, RecordKind, Text, parse_record, record_kind
from sft_research.data.sampler import ResumableShuffleSampler
from sft_research.data.sources import DataSource
from sft_research.data.task import VerifiableTask
from sft_research.data.tokenize import RETIRED, ChatTokenizer, TokenizedExample, TruncationReport
from sft_research.data.untrained import report_untrained
from sft_research.errors import ConfigError, DataError


class SFTDataModule(L.LightningDataModule):
    """Training data for any objective, and held-out evaluation.

    Args:
        train: where the training records come from (a file, a hub id, or a task such as reasoning-gym); needed to
            fit, not to validate or test a model on `val`.
        val: held-out data. A task is evaluated by generation and its verifier; other sources by their loss.
            Defaults to the training task's held-out split when ``train`` is a task.
        tokenizer: the tokenizer's hub id or folder; the CLI links it to the model's.
        template: how records are rendered into tokens and which the loss covers (``data.template.prompt_format``,
            ``chat_template``, ``add_special_tokens``, ``auto_insert_empty_system_msg``, ``completion_only_loss``).
        lengths: how long sequences may be (``data.lengths.max_length``, ``truncation``, ``max_prompt_length``,
            ``pack_into_blocks``).
        decontaminate_humaneval: leave out the records whose rendered text contains a HumanEval docstring or
            solution (the alignment-handbook's filter of this name), counted and reported; of a preference pair, the
            chosen answer's text, as the handbook's DPO filters it.
        val_fraction: hold out this fraction of the training records (at least one), drawn with ``split_seed``, as
            the validation data (scored with the objective's own loss); only without ``val`` and for file data.
        split_seed: the seed of that draw.
        batch_size: examples per optimizer step, across all processes (each takes its share): the global batch.
        micro_batch_size: examples per forward and backward pass within each process's share, whose gradients are
            accumulated (None: the whole share at once); the CLI hands it to the module, which splits the batch.
        pack: make the packed layouts of the module's packed forward pass on the host (``model.execution.packing``,
            which the CLI links here, as it links the two below).
        pad_to_bucket: pad lengths to a few sizes, each a compiled graph of its own (``model.execution.compile``).
        eval_batch_size: prompts per generation batch.
        max_eval_prompts: evaluate only the first n held-out prompts.
        num_workers: data-loader worker processes.
        record_kind: how to read rows that hold both an SFT record and a preference pair (UltraFeedback binarized:
            ``messages`` beside ``prompt``/``chosen``/``rejected``): as ``sft`` records or ``preference`` pairs. The
            command line sets it from the objective (pairs for DPO and IRFT, SFT records for the others); None makes
            such rows an error.
    """

    def __init__(
        self,
        train: DataSource | None = None,
        val: DataSource | None = None,
        tokenizer: str = DEFAULT_MODEL,
        template: TemplateConfig = TemplateConfig(),
        lengths: LengthConfig = LengthConfig(),
        decontaminate_humaneval: bool = False,
        val_fraction: float = 0.0,
        split_seed: int = 0,
        batch_size: int = 8,
        micro_batch_size: int | None = None,
        pack: bool = False,
        pad_to_bucket: bool = False,
        eval_batch_size: int = 32,
        max_eval_prompts: int | None = None,
        num_workers: int = 0,
        record_kind: RecordKind | None = None,
    ):
        super().__init__()
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size), ("lengths.max_length", lengths.max_length)):
            if value < 1:
                raise ConfigError(f"data.{name} must be at least 1, got {value}")
        if lengths.truncation in RETIRED:
            raise ConfigError(f"data.lengths.{RETIRED[lengths.truncation]}")
        if lengths.pack_into_blocks and record_kind == "preference":
            raise ConfigError("data.lengths.pack_into_blocks joins SFT records into blocks: the objective trains on preference pairs")
        if record_kind == "preference" and not template.completion_only_loss:
            raise ConfigError(
                "data.template.completion_only_loss=false is for SFT records: the objective trains on preference pairs, "
                "whose loss reads the answers"
            )
        self.train_source = train
        self.val_source = val if val is not None else (train if isinstance(train, VerifiableTask) else None)
        self.tokenizer_name = tokenizer
        self.template, self.lengths = template, lengths
        self.decontaminate_humaneval = decontaminate_humaneval
        if not 0 <= val_fraction < 1:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        if val_fraction and (val is not None or isinstance(train, VerifiableTask)):
            raise ConfigError("data.val_fraction holds out training records of a file source: not beside data.val, nor for a task")
        self.val_fraction, self.split_seed = val_fraction, split_seed
        self.batch_size, self.micro_batch_size = batch_size, micro_batch_size
        self.eval_batch_size = eval_batch_size
        self.max_eval_prompts = max_eval_prompts
        self.num_workers = num_workers
        self.record_kind = record_kind
        self.pack, self.pad_to_bucket = pack, pad_to_bucket
        self.tokenizer = None
        self.train_examples: list[TokenizedExample] | None = None
        self.resume_batches = 0  # batches of the epoch already consumed, set when resuming from a checkpoint
        self.val_examples: list | None = None
        self.kinds: dict[str, str] = {}  # the kind of records each source holds, by source name
        self.reports: dict[str, TruncationReport] = {}  # what truncation did to each source, by source name

    @property
    def eval_task(self) -> VerifiableTask | None:
        return self.val_source if isinstance(self.val_source, VerifiableTask) else None

    def setup(self, stage: str) -> None:
        from sft_research.checkpoints.names import load_tokenizer

        if self.trainer is not None:
            check_batch_layout(self, self.trainer.lightning_module)
        if self.lengths.pack_into_blocks and self.trainer is not None:
            check_blocks(self.trainer.lightning_module)
        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(self.tokenizer_name)
            template, lengths = self.template, self.lengths
            if template.chat_template is not None:
                self.tokenizer.chat_template = read_chat_template(template.chat_template)
            self.chat_tokenizer = ChatTokenizer(
                self.tokenizer,
                template.prompt_format,
                # Blocks take conversations of any length, as TRL's: one longer than a block runs on into the next.
                2**31 - 1 if lengths.pack_into_blocks else lengths.max_length,
                lengths.truncation,
                lengths.max_prompt_length,
                template.completion_only_loss,
                template.add_special_tokens,
                template.auto_insert_empty_system_msg,
            )
        if self.val_fraction and self.train_examples is None:
            train, held_out = self.held_out_split(self.train_source.records())
            self.train_examples = self.tokenize_records(self.train_source.name, train)
            self.val_examples = self.tokenize_records(f"{self.train_source.name} (held out)", held_out)
        if stage == "fit" and self.train_examples is None:
            self.train_examples = self.tokenize(self.train_source)
        if stage == "fit" and self.batch_size > len(self.train_examples):
            rank_zero_warn(
                f"data.batch_size {self.batch_size} is larger than the {len(self.train_examples)} training examples: every step "
                "trains on all of them, a whole epoch (a rehearsal may mean it; a run with a step budget usually does not)"
            )
        if self.val_source is not None and self.val_examples is None:
            if self.eval_task is not None:
                prompts = self.eval_task.eval_prompts()[: self.max_eval_prompts]
                self.val_examples = [(i, self.chat_tokenizer.prompt_ids(prompt)) for i, prompt in enumerate(prompts)]
            else:
                self.val_examples = self.tokenize(self.val_source)

    def held_out_split(self, records: list) -> tuple[list, list]:
        """The records kept for training and the ``val_fraction`` held out (at least one), drawn with ``split_seed``."""
        count = max(1, round(len(records) * self.val_fraction))
        held = set(random.Random(self.split_seed).sample(range(len(records)), count))
        return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]

    def tokenize(self, source: DataSource) -> list[TokenizedExample]:
        """Checks and tokenizes every record of ``source``; raises :class:`DataError` on the first bad one."""
        return self.tokenize_records(source.name, source.records())

    def tokenize_records(self, name: str, records: list) -> list[TokenizedExample]:
        if not records:
            raise DataError(name, "has no records")
        report = self.chat_tokenizer.report = self.reports[name] = TruncationReport()  # this source's own
        parsed = [parse_record(record, self.record_kind) for record in records]
        kinds = [record_kind(record) for record in parsed]
        # SFT and plain-text records train the same way (one sequence each) and may be mixed (replay of general text);
        # preference pairs may not be mixed with either.
        pairs = [isinstance(record, Preference) for record in parsed]
        for raw, kind, pair in zip(records, kinds, pairs):
            if pair != pairs[0]:
                raise DataError(
                    name, f"mixes record kinds: the first row holds {kinds[0]}, this one {kind}; use one kind per dataset", raw.row
                )
        self.kinds[name] = " and ".join(sorted(set(kinds)))
        report_untrained(name, records, parsed)
        if self.decontaminate_humaneval:
            records, parsed = self.decontaminated(name, records, parsed)
        examples = [self.chat_tokenizer(raw, record) for raw, record in zip(records, parsed)]
        kept = [example for example in examples if example is not None]
        truncated, dropped = len(report.truncated), len(report.dropped)
        rank_zero_info(f"{name}: {len(kept)} of {len(records)} examples kept; {report.summary()}")
        if truncated or dropped:
            rank_zero_warn(f"{name}: {truncated} examples truncated and {dropped} dropped (truncation={self.lengths.truncation!r})")
        if not kept:
            raise DataError(name, f"every example was dropped as longer than max_length={self.lengths.max_length}")
        return self.blocks(name, kept) if self.lengths.pack_into_blocks else kept

    def blocks(self, name: str, examples: list[TokenizedExample]) -> list[TokenizedExample]:
        """``examples`` joined and cut into blocks of ``max_length`` tokens (:func:`~sft_research.data.blocks.pack_blocks`)."""
        from sft_research.data.blocks import buffer_characters, pack_blocks

        if len(examples[0].sequences) != 1:
            raise DataError(name, "data.lengths.pack_into_blocks joins SFT or text records; this source holds preference pairs")
        # TRL sizes its buffers by the characters of the rendered texts.
        texts = [e.record.text if isinstance(e.record, Text) else self.chat_tokenizer.rendered_text(e.record.messages)[0] for e in examples]
        characters = [len(text) for text in texts]
        length = self.lengths.max_length
        blocks = pack_blocks(examples, characters, length, self.tokenizer.eos_token_id, buffer_characters(length))
        if not blocks:
            tokens = sum(len(example.sequences[0].input_ids) + 1 for example in examples)
            raise DataError(name, f"its {tokens} tokens fill no block of max_length={length} (data.lengths.pack_into_blocks)")
        rank_zero_info(f"{name}: {len(examples)} examples packed into {len(blocks)} blocks of {length} tokens")
        return blocks

    def decontaminated(self, name: str, records: list, parsed: list) -> tuple[list, list]:
        """The records whose rendered text holds no HumanEval docstring or solution; the others are reported."""
        from sft_research.data.decontaminate import humaneval_contaminated

        clean = [not humaneval_contaminated(self.chat_tokenizer.humaneval_text(record)) for record in parsed]
        left_out = [f"row {raw.row}" for raw, ok in zip(records, clean) if not ok]
        if left_out:
            shown = ", ".join(left_out[:5]) + (f" and {len(left_out) - 5} more" if len(left_out) > 5 else "")
            rank_zero_info(f"{name}: {len(left_out)} of {len(records)} records left out as HumanEval-contaminated ({shown})")
        if not any(clean):
            raise DataError(name, "every record was left out as HumanEval-contaminated")
        return [r for r, ok in zip(records, clean) if ok], [p for p, ok in zip(parsed, clean) if ok]

    def train_dataloader(self) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        skip, self.resume_batches = self.resume_batches, 0
        # Seeded by seed_everything's seed and the epoch alone, so a resumed run sees the same order.
        examples = self.train_examples
        if self.lengths.pack_into_blocks:
            # accelerate (even_batches, the handbook's Trainer) fills the epoch's last batch with its first blocks:
            # every step trains on a full batch of blocks.
            examples = examples + [examples[i % len(examples)] for i in range(-len(examples) % self.batch_size)]
        sampler = ResumableShuffleSampler(len(examples), self.batch_size, torch.initial_seed(), rank, world, skip)
        return DataLoader(
            examples,
            batch_size=self.batch_size // world,
            sampler=sampler,
            collate_fn=self.collate(self.micro_batch_size),
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
        )

    def collate(self, micro_batch_size: int | None):
        """The collate function of training-kind batches: padded, with host-made packed layouts when the model packs
        (``pack``) and lengths rounded to a few sizes when it is compiled (``pad_to_bucket``)."""
        return partial(
            collate_examples,
            pad_token_id=self.tokenizer.pad_token_id,
            micro_batch_size=micro_batch_size,
            pack=self.pack,
            pad_to_bucket=self.pad_to_bucket,
        )

    def state_dict(self) -> dict[str, int]:
        """How many batches of the current epoch training has consumed (Lightning restores the epoch itself)."""
        if self.trainer is None:
            return {}
        batches = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"batches": batches if batches < self.trainer.num_training_batches else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume_batches = state.get("batches", 0)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_examples is None:
            return []
        if self.eval_task is not None:
            collate, batch_size = partial(collate_prompts, pad_token_id=self.tokenizer.pad_token_id), self.eval_batch_size
        else:
            collate, batch_size = self.collate(None), self.batch_size
        return DataLoader(self.val_examples, batch_size=batch_size, collate_fn=collate, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader | list:
        return self.val_dataloader()


def check_batch_layout(data: SFTDataModule, module) -> None:
    """The data loader splits, packs and pads its batches as the module runs them: the command line links the
    settings; a data module built in Python with others is refused rather than collating batches the module cannot run."""
    execution = getattr(module, "execution", None)
    if execution is None:
        return
    wanted = {"micro_batch_size": module.micro_batch_size, "pack": execution.packing, "pad_to_bucket": execution.compile}
    given = {"micro_batch_size": data.micro_batch_size, "pack": data.pack, "pad_to_bucket": data.pad_to_bucket}
    if given != wanted:
        shown = ", ".join(f"{key}={wanted[key]} (not {given[key]})" for key in wanted if given[key] != wanted[key])
        raise ConfigError(
            f"SFTDataModule needs {shown}, as the module's micro_batch_size, execution.packing and execution.compile: "
            "the command line links them; pass them when building both in Python"
        )


def check_blocks(module) -> None:
    """Before any model loads: blocks of several conversations need the packed forward pass, which keeps attention
    inside each (a padded one would attend across them), and an objective that reads neither a frozen model (its
    passes run on whole sequences) nor a quality score (a block has none of its own)."""
    objective = getattr(module, "objective", None)
    if not getattr(getattr(module, "execution", None), "packing", False):
        raise ConfigError(
            "data.lengths.pack_into_blocks needs model.execution.packing: true, which keeps attention inside each conversation"
        )
    if objective is not None and (objective.frozen_inputs or getattr(objective, "use_quality", False)):
        name = type(objective).__name__
        raise ConfigError(
            f"data.lengths.pack_into_blocks trains on blocks of several conversations: {name} reads a frozen model or quality scores"
        )


def read_chat_template(template: str) -> str:
    """A Jinja template given inline, or read from the file it names (a string without Jinja tags is a path)."""
    if "{%" in template or "{{" in template:
        return template
    path = Path(template).expanduser()
    if not path.is_file():
        raise DataError(template, "chat_template is neither a Jinja template ({% ... %} / {{ ... }}) nor an existing file")
    return path.read_text()
