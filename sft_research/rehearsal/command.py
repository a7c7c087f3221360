"""``sft-research rehearse --config FILE``: a fit or pipeline config run on this machine's CPUs through the real run's
code path, with tiny stand-in models, schema fixtures of hub data, 2 CPU processes where the config has several
devices, small batches and 2 optimizer steps per fit (:mod:`sft_research.rehearsal.plan` says what changes).

Before anything runs, the config as written (its models and hub data stood in, nothing else) goes through the real
run's checks before training, with the real models' architectures (:mod:`sft_research.fit.run_checks`), and the memory
plan of every fit at full scale is printed and checked against the card (:mod:`sft_research.rehearsal.memory_plan`).
Then every stage runs: its frozen-model passes, its fit, its export, and the next stage's reload. With several
processes, Lightning starts the others by running this same command again; they make the same plan and join the run.
The output ends with what the rehearsal did not test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import yaml

from sft_research.errors import DataError
from sft_research.fit.lightning_cli import FitCLI, cli_arguments
from sft_research.fit.run import in_run_dir, is_done
from sft_research.fit.run_checks import ModelFiles, check_fit
from sft_research.pipelines.stages import build_pipeline
from sft_research.rehearsal.memory_plan import check_fits, plan_config, plan_lines
from sft_research.rehearsal.plan import Plan, plan
from sft_research.rehearsal.resume_check import check_resume
from sft_research.rehearsal.standins import GivenFiles
from sft_research.runs.atomic_files import atomic_write_text


def rehearse_main(args: list[str]) -> Path:
    """Rehearses ``--config FILE`` with outputs under ``--output_dir`` (default ``runs/rehearsal/<config name>``);
    returns the folder of the last stage's model. Fails with the error the real run would hit."""
    parsed = parse_arguments(args)
    source = Path(parsed.config)
    config = yaml.safe_load(source.read_text())
    output = Path(parsed.output_dir or Path("runs") / "rehearsal" / "_".join(source.with_suffix("").parts[-2:]))
    launched = int(os.environ.get("LOCAL_RANK", "0")) > 0  # a process Lightning started: the first one reports
    if not launched:
        shutil.rmtree(output, ignore_errors=True)
    rehearsal = plan(config, str(output), given_files(parsed.model_config, parsed.tokenizer))
    if not launched:
        print(f"rehearsal of {source}: what stands in for the real run (everything else runs as written)")
        for change in rehearsal.changes:
            print(f"  {change}")
        check_before_training(rehearsal)
        print_memory_plan(config, rehearsal)
    with token_counts_said(rehearsal):
        final = run(rehearsal, output)
    resumed = check_resume(output, None if "stages" in rehearsal.config else rehearsal.config, report=not launched)
    if resumed is not None:
        print(resumed)
    if not launched:
        reloads = ", and each later stage or round started from the model before it" if "stages" in config else ""
        print(
            f"rehearsal of {source} passed: every fit trained, evaluated where the config does, and exported{reloads}; outputs in {output}"
        )
        print("\n".join(untested(rehearsal)))
    return final


def parse_arguments(args: list[str]):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog="sft-research rehearse", description=__doc__)
    parser.add_argument("--config", type=str, required=True, help="a fit or pipeline YAML, as for `sft-research fit/pipeline --config`")
    parser.add_argument("--output_dir", type=str, default=None, help="where the rehearsal writes (default: runs/rehearsal/<config name>)")
    parser.add_argument(
        "--model_config",
        action="append",
        default=[],
        help="NAME=FILE: the config.json of a model the config names, for a model with no stand-in that is not in the Hugging Face "
        "cache (repeat for several)",
    )
    parser.add_argument("--tokenizer", action="append", default=[], help="NAME=FOLDER: that model's tokenizer files (optional)")
    return parser.parse_args(args)


def given_files(configs: list[str], tokenizers: list[str]) -> GivenFiles:
    def by_name(option: str, values: list[str]) -> dict[str, str]:
        pairs = [value.rpartition("=") for value in values]
        bad = [value for value, (name, equals, path) in zip(values, pairs) if not (name and equals and path)]
        if bad:
            from sft_research.errors import ConfigError

            raise ConfigError(f"rehearse: --{option} {bad[0]}: expected NAME={'FILE' if option == 'model_config' else 'FOLDER'}")
        return {name: path for name, _, path in pairs}

    return GivenFiles(by_name("model_config", configs), by_name("tokenizer", tokenizers))


def check_before_training(rehearsal: Plan) -> None:
    """The real run's checks before training (every stage's settings, architecture, data, frozen models), on the
    config as written with its models and hub data stood in, fed the architectures of the real models."""
    files = ModelFiles(configs=rehearsal.architectures)
    if "stages" in rehearsal.checked:
        build_pipeline({**rehearsal.checked, "output_dir": rehearsal.config["output_dir"]}).check(files)
    else:
        check_fit(rehearsal.checked, files)
    print("checks before training: passed, with the real models' config.json (settings, architecture, data's first rows, frozen models)")


def print_memory_plan(config: dict, rehearsal: Plan) -> None:
    """Prints every fit's memory plan at full scale, then stops if one does not fit its card."""
    plans = plan_config(config, ModelFiles(configs=rehearsal.architectures))
    print("memory plan at full scale, per GPU (an estimate from the real models' config.json: sft_research/train/memory.py)")
    for fit_plan in plans:
        print("\n".join(plan_lines(fit_plan)))
    for fit_plan in plans:
        check_fits(fit_plan)


def run(rehearsal: Plan, output: Path) -> Path:
    """Runs the rehearsal's config (checked already); returns the last stage's model folder."""
    config_file = output / "rehearsal.yaml"
    if "stages" in rehearsal.config:
        atomic_write_text(config_file, yaml.safe_dump(rehearsal.config, sort_keys=False))
        finals = build_pipeline([f"--config={config_file}"]).run(checked=True)
        final = Path(next(reversed(finals.values())))
    else:
        atomic_write_text(config_file, yaml.safe_dump(in_run_dir(rehearsal.config, output), sort_keys=False))
        FitCLI(**cli_arguments(["fit", f"--config={config_file}"], run=True))
        final = output / "hf_model"
    if not is_done(final.parent):
        raise RuntimeError(f"rehearsal: the run ended without its final model in {final}")
    return final


@contextlib.contextmanager
def token_counts_said(rehearsal: Plan) -> Iterator[None]:
    """A length error of the data says that a stand-in tokenizer counted its tokens, where one did."""
    try:
        yield
    except DataError as error:
        if "max_length" not in error.reason or not rehearsal.stand_in_tokenizers:
            raise
        names = ", ".join(rehearsal.stand_in_tokenizers)
        reason = f"{error.reason} [tokens counted by the rehearsal's stand-in tokenizer of {names}; the real tokenizer counts otherwise]"
        raise DataError(error.source, reason, error.row, error.field, line=error.line) from None


def untested(rehearsal: Plan) -> list[str]:
    """What a passing rehearsal does not show."""
    counted = (
        f"the stand-in tokenizers of {', '.join(rehearsal.stand_in_tokenizers)} counted the tokens above (lengths, truncation): "
        "the real tokenizers' counts are not tested"
        if rehearsal.stand_in_tokenizers
        else "the models' own tokenizers counted the tokens above"
    )
    return [
        "not tested by this rehearsal:",
        "  memory at full scale: the memory plan above is an estimate (its terms, from the real config.json); the stand-in's "
        "memory is in metrics.csv as stand_in/peak_memory_gib",
        "  speed at full scale: nothing here measures it (stand_in/tokens_per_s is a tiny random model's on this CPU)",
        f"  token counts: {counted}",
        "  the data beyond its schema: hub datasets stood in as schema fixtures of a few synthetic rows",
        "  the models' weights and what training does to them: stand-ins are tiny and random",
    ]
