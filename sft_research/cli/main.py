"""The ``sft-research`` command: dispatches to a fit (``fit``/``validate``/``test``, :mod:`sft_research.fit.lightning_cli`), a
pipeline, a benchmark suite, or a tool. Heavy modules (torch, Lightning) are imported by the subcommand that needs
them, so that ``sft-research --help`` answers at once."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

from sft_research.cli.help_cache import cached_help
from sft_research.errors import ConfigError

COMMANDS = {
    "fit": "fine-tune a model: sft-research fit --config FILE (LightningCLI: trainer, model, data)",
    "validate": "evaluate a model on held-out data or a task: sft-research validate --config FILE",
    "test": "the same, on the test stage",
    "pipeline": "several stages in order (SFT then DPO, IRFT rounds): sft-research pipeline --config FILE",
    "bench": "a benchmark suite, task score against forgetting: sft-research bench [--suite NAME_OR_FILE]",
    "data": "what training will see, trained tokens marked: sft-research data --config FILE [--examples N]",
    "merge": "a LoRA adapter into full weights: sft-research merge ADAPTER_DIR OUTPUT_DIR",
    "rehearse": "a fit or pipeline config on this CPU, scaled down, through the real code path",
}
USAGE = "usage: sft-research COMMAND [options]; sft-research COMMAND --help for its options\n\ncommands:\n" + "\n".join(
    f"  {name:<10} {text}" for name, text in COMMANDS.items()
)


def user_errors() -> tuple[type[Exception], ...]:
    """The project's own errors, which carry a complete message for the user; anything else is a bug and keeps its
    traceback. Imported here, late: most live beside heavy modules."""
    from sft_research.checkpoints.embedded import MissingAssetError
    from sft_research.checkpoints.names import ModelLoadError
    from sft_research.errors import DataError, PreflightError
    from sft_research.train.nonfinite import NonFiniteError

    return ConfigError, DataError, ModelLoadError, MissingAssetError, PreflightError, NonFiniteError


def pipeline_main(args: list[str]) -> dict:
    """``sft-research pipeline --config FILE``: runs the stages of a pipeline, skipping those already done."""
    from sft_research.pipelines.stages import build_pipeline

    return build_pipeline(args).run()


SUITES = Path(__file__).resolve().parent.parent / "bench" / "suites"


def suite_file(value: str) -> str:
    """A suite file, or the name of a suite shipped with the package (a file in ``sft_research/bench/suites``)."""
    if Path(value).suffix or "/" in value or os.sep in value:
        return value
    shipped = SUITES / f"{value}.yaml"
    if not shipped.is_file():
        names = sorted(path.stem for path in SUITES.glob("*.yaml"))
        raise ConfigError(f"--suite {value}: neither a file nor a shipped suite (shipped: {', '.join(names)})")
    return str(shipped)


def bench_main(args: list[str]):
    """``sft-research bench [--suite FILE_OR_NAME] [--output_dir DIR] [--suite.KEY VALUE ...]``: runs a benchmark
    suite (``default`` unless told), or every point of its sweep."""
    from jsonargparse import ArgumentParser

    from sft_research.bench.runner import run_suite
    from sft_research.bench.suite import Suite
    from sft_research.bench.sweep import run_sweep

    parser = ArgumentParser(prog="sft-research bench", description=Suite.__doc__)
    parser.add_class_arguments(Suite, "suite", sub_configs=True)
    parser.add_argument("--output_dir", type=str, default="runs/bench", help="where results, summary and plot go")
    if not any(arg == "--suite" or arg.startswith("--suite=") for arg in args):
        args = ["--suite", "default", *args]
    args = [
        f"--suite={suite_file(arg.split('=', 1)[1])}" if arg.startswith("--suite=") else suite_file(arg) if previous == "--suite" else arg
        for previous, arg in zip([None, *args], args)
    ]
    config = parser.parse_args(args)
    suite_config = json.loads(parser.dump(config, format="json", skip_unset=False))["suite"]  # None settings too
    init = parser.instantiate(config)
    if init.suite.sweep:
        return run_sweep(parser, suite_config, Path(init.output_dir))
    return run_suite(init.suite, init.output_dir, suite_config)


def main(args: list[str] | None = None):
    """The ``sft-research`` command (:data:`COMMANDS`); ``--help`` of a command comes from :func:`cached_help`."""
    argv = sys.argv[1:] if args is None else args
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return None
    if argv[0].startswith("-") or argv[0] not in COMMANDS:
        raise ConfigError(f"{argv[0]!r} is not a command; commands: {', '.join(COMMANDS)} (sft-research --help)")
    if argv[1:] in (["-h"], ["--help"]):
        return print(cached_help(argv[0], lambda: dispatch(argv)), end="")
    return dispatch(argv)


def dispatch(argv: list[str]):
    from sft_research.fit.yaml_files import check_config_files

    # Each command's config and suite files parse as YAML, or stop in one line that names the file (the parsers,
    # given a file's text, would name it "<unicode string>").
    check_config_files(argv[1:], ("--config", "--suite"))
    if argv[0] == "pipeline":
        return pipeline_main(argv[1:])
    if argv[0] == "bench":
        return bench_main(argv[1:])
    if argv[0] == "data":
        from sft_research.cli.inspect_data import data_main

        return data_main(argv[1:])
    if argv[0] == "rehearse":
        from sft_research.rehearsal.command import rehearse_main

        return rehearse_main(argv[1:])
    if argv[0] == "merge":
        from sft_research.cli.merge import merge_main

        return merge_main(argv[1:])
    from sft_research.fit.lightning_cli import FitCLI, cli_arguments

    return FitCLI(**cli_arguments(argv, run=True))


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"{category.__name__}: {message}\n"


def console() -> None:
    """The console script: runs ``main`` on the command line's arguments (its return value is for Python callers).

    The project's own errors (bad data, a model that cannot be loaded, a failed preflight check, a diverged run) end
    with one line on stderr and exit status 2; ``SFT_RESEARCH_DEBUG=1`` shows the traceback instead.
    Warnings print as one line each (``UserWarning: ...``), without the source line that raised them.
    """
    warnings.formatwarning = one_line_warning
    try:
        main()
    except Exception as error:
        if not isinstance(error, user_errors()) or os.environ.get("SFT_RESEARCH_DEBUG", "") not in ("", "0"):
            raise
        print(f"sft-research: error: {error} (set SFT_RESEARCH_DEBUG=1 for the traceback)", file=sys.stderr)
        raise SystemExit(2) from None
