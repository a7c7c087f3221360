"""``sft-research rehearse --config FILE``: a fit or pipeline config run on this machine's CPUs through the real run's
code path, with tiny stand-in models, schema fixtures of hub data, 2 CPU processes where the config has several
devices, small batches and 2 optimizer steps per fit (:mod:`sft_research.rehearsal.plan` says what changes).

Every stage runs: its frozen-model passes, its fit, its export, and the next stage's reload. With several processes,
Lightning starts the others by running this same command again; they make the same plan and join the run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from sft_research.files import atomic_write_text
from sft_research.fit import FitCLI, cli_arguments, in_run_dir, is_done
from sft_research.pipelines.stages import build_pipeline
from sft_research.rehearsal.plan import plan
from sft_research.rehearsal.resume_check import check_resume


def rehearse_main(args: list[str]) -> Path:
    """Rehearses ``--config FILE`` with outputs under ``--output_dir`` (default ``runs/rehearsal/<config name>``);
    returns the folder of the last stage's model. Fails with the error the real run would hit."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog="sft-research rehearse", description=__doc__)
    parser.add_argument("--config", type=str, required=True, help="a fit or pipeline YAML, as for `sft-research fit/pipeline --config`")
    parser.add_argument("--output_dir", type=str, default=None, help="where the rehearsal writes (default: runs/rehearsal/<config name>)")
    parsed = parser.parse_args(args)
    source = Path(parsed.config)
    config = yaml.safe_load(source.read_text())
    output = Path(parsed.output_dir or Path("runs") / "rehearsal" / "_".join(source.with_suffix("").parts[-2:]))
    launched = int(os.environ.get("LOCAL_RANK", "0")) > 0  # a process Lightning started: the first one reports
    if not launched:
        shutil.rmtree(output, ignore_errors=True)
    rehearsal = plan(config, str(output))
    if not launched:
        print(f"rehearsal of {source}: what stands in for the real run (everything else runs as written)")
        for change in rehearsal.changes:
            print(f"  {change}")
    config_file = output / "rehearsal.yaml"
    if "stages" in rehearsal.config:
        atomic_write_text(config_file, yaml.safe_dump(rehearsal.config, sort_keys=False))
        finals = build_pipeline([f"--config={config_file}"]).run()
        final = next(reversed(finals.values()))
    else:
        atomic_write_text(config_file, yaml.safe_dump(in_run_dir(rehearsal.config, output), sort_keys=False))
        FitCLI(**cli_arguments(["fit", f"--config={config_file}"], run=True))
        final = output / "hf_model"
    if not is_done(Path(final).parent):
        raise RuntimeError(f"rehearsal of {source}: the run ended without its final model in {final}")
    resumed = check_resume(output, None if "stages" in rehearsal.config else rehearsal.config, report=not launched)
    if resumed is not None:
        print(resumed)
    if not launched:
        reloads = ", and each later stage or round started from the model before it" if "stages" in config else ""
        print(
            f"rehearsal of {source} passed: every fit trained, evaluated where the config does, and exported{reloads}; outputs in {output}"
        )
    return Path(final)
