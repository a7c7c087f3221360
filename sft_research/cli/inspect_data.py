"""``sft-research data --config FILE``: what training will see, before any compute is spent.

It builds the data module of a fit config exactly as ``fit`` does (same parser, same tokenizer, same truncation) and
prints the data report and the first examples, with the tokens that are trained on marked ``⟦like this⟧``.
"""

from __future__ import annotations

import statistics
from itertools import groupby

from sft_research.data.tokenize import Sequence, TokenizedExample
from sft_research.fit.lightning_cli import FitCLI, cli_arguments

OPEN, CLOSE = "⟦", "⟧"


def marked_text(tokenizer, sequence: Sequence) -> str:
    """The sequence's text with every run of trained tokens between ⟦ and ⟧."""
    pieces = []
    for trained, run in groupby(zip(sequence.input_ids, sequence.completion_mask), key=lambda pair: pair[1]):
        text = tokenizer.decode([token for token, _ in run])
        pieces.append(f"{OPEN}{text}{CLOSE}" if trained else text)
    return "".join(pieces)


def show_example(tokenizer, example: TokenizedExample) -> str:
    names = ["chosen", "rejected"] if len(example.sequences) == 2 else [""]
    header = f"--- {example.raw.source}, row {example.raw.row} (quality {example.quality:g})"
    blocks = [f"[{name}] " * bool(name) + marked_text(tokenizer, s) for name, s in zip(names, example.sequences)]
    return "\n".join([header, *blocks])


def data_report(data) -> str:
    examples, report = data.train_examples, data.reports[data.train_source.name]
    lengths = sorted(len(s.input_ids) for e in examples for s in e.sequences)
    trained = sorted(sum(s.completion_mask) for e in examples for s in e.sequences)

    def spread(values: list[int]) -> str:
        p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
        return f"min {values[0]}, median {statistics.median(values):g}, 90th percentile {p90}, max {values[-1]}"

    return "\n".join(
        [
            f"{data.train_source.name}: {len(examples)} examples kept, {len(report.truncated)} truncated "
            f"(prompt cut in {len(report.prompt_cut)}, completion cut in {len(report.completion_cut)}), "
            f"{len(report.dropped)} dropped; max_length {data.lengths.max_length}, truncation {data.lengths.truncation!r}",
            f"sequence tokens: {spread(lengths)}",
            f"trained tokens per sequence: {spread(trained)}",
        ]
    )


class DataCLI(FitCLI):
    """A fit config's parser, with the examples to show."""

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--examples", type=int, default=3, help="how many training examples to show, trained tokens marked")


def data_main(args: list[str]) -> str:
    """``sft-research data [--examples N] --config FILE [fit options]``: prints and returns the report and examples."""
    settings = cli_arguments(args, run=False)
    settings["parser_kwargs"] |= {"prog": "sft-research data", "description": __doc__}
    cli = DataCLI(**settings)
    data = cli.datamodule
    data.setup("fit")
    examples = data.train_examples[: cli.config.examples]
    text = "\n".join([data_report(data), *(show_example(data.tokenizer, e) for e in examples)])
    print(text)
    return text
