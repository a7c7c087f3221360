"""The command line as a TRL user meets it: every command listed, each command's own help (kept, so that it answers
without importing torch), and parse errors said first with the option most likely meant."""

import re
import subprocess
import sys

import pytest

from sft_research.cli.help_cache import cached_help
from sft_research.cli.main import COMMANDS, main
from sft_research.errors import ConfigError

pytestmark = pytest.mark.usefixtures("private_cache")


def test_the_top_level_help_lists_every_command_without_importing_torch(capsys):
    code = "import sys; from sft_research.cli.main import main; main(['--help']); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "False"
    assert all(f"  {name} " in done.stdout for name in COMMANDS) and "predict" not in done.stdout
    with pytest.raises(ConfigError, match=r"'predict' is not a command; commands: fit, validate, test, pipeline, bench, data, merge"):
        main(["predict"])


def test_a_commands_help_is_kept_and_served_without_building_its_parser(tmp_path):
    calls = []

    def produce():
        calls.append(1)
        print("usage: sft-research data ...")
        raise SystemExit(0)

    assert cached_help("fake", produce) == cached_help("fake", produce) == "usage: sft-research data ...\n"
    assert len(calls) == 1
    code = "import sys; from sft_research.cli.main import main; main(['data', '--help']); print('torch' in sys.modules)"
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert first.stdout.splitlines()[:-1] == again.stdout.splitlines()[:-1]
    assert again.stdout.splitlines()[-1] == "False", "the second help came from the cache"
    assert "usage: sft-research data" in again.stdout and "--examples EXAMPLES" in again.stdout
    assert "what training will see" in again.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--learning_rate", "1e-5"],
            r"^unrecognized arguments: --learning_rate 1e-5; did you mean --model.optimizer.lr\?; sft-research fit --help",
        ),
        (["--max_seq_length", "512"], r"did you mean --data.lengths.max_length\?"),
        (["--trainer.max_step", "2"], r"unrecognized arguments: --trainer.max_step 2; did you mean --trainer.max_steps\?"),
        (["--optimizer.lr", "1e-4"], r"did you mean --model.optimizer.lr\?"),
        (
            ["--model.optimizer.lr", "-1e-5"],
            r"expected one argument; a negative number after a space reads as an option: write --model.optimizer.lr=-1e-5",
        ),
        (
            ["--model.objective", "sft_research.objectives.IwSFTT"],
            r"has no attribute 'IwSFTT'; did you mean sft_research.objectives.IwSFT\?",
        ),
    ],
)
def test_a_parse_error_comes_first_with_what_was_meant(args, message):
    with pytest.raises(ConfigError, match=message):
        main(["fit", *args])


def test_a_yaml_key_trl_users_write_is_explained(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  learning_rate: 1.0e-5\n")
    with pytest.raises(ConfigError, match=r"does not accept option 'model.learning_rate'; did you mean --model.optimizer.lr\?"):
        main(["fit", f"--config={config}"])


@pytest.mark.parametrize("command", ["fit", "validate", "test"])
def test_the_help_leaves_out_the_trainer_options_this_module_replaces_or_no_command_reads(command, capsys):
    main([command, "--help"])
    shown = capsys.readouterr().out
    assert "--trainer.max_steps" in shown and "--trainer.precision" in shown and "--model.optimizer.max_grad_norm" in shown
    for option in ("accumulate_grad_batches", "gradient_clip_val", "gradient_clip_algorithm", "limit_predict_batches"):
        assert option not in shown


def test_a_trainer_option_left_out_of_the_help_is_still_answered_with_what_to_use(tmp_path):
    from sft_research.fit.lightning_cli import parse_fit

    micro = "set data.micro_batch_size instead: the optimizer batch (data.batch_size) is split into micro-batches of that size"
    for args in (["--trainer.accumulate_grad_batches=2"], ["--trainer.accumulate_grad_batches", "2"]):
        with pytest.raises(ConfigError, match="^" + re.escape(f"--trainer.accumulate_grad_batches 2: not used by this module; {micro}")):
            main(["fit", *args])
    config = tmp_path / "c.yaml"
    config.write_text("trainer:\n  gradient_clip_val: 0.5\n")
    clip = "--trainer.gradient_clip_val 0.5: not used by this module; set model.optimizer.max_grad_norm instead: the module clips"
    for args in ([f"--config={config}"], ["--config", str(config)]):
        with pytest.raises(ConfigError, match="^" + re.escape(clip)):
            main(["validate", *args])
    with pytest.raises(ConfigError, match=r"^--trainer.limit_predict_batches 3: not used by this module; sft-research has no predict"):
        parse_fit({"trainer": {"limit_predict_batches": 3}})


def test_a_data_option_of_its_old_flat_name_stops_in_one_line_naming_the_new_one(tmp_path):
    import dataclasses

    from sft_research.data.options import LengthConfig, TemplateConfig
    from sft_research.fit.lightning_cli import parse_fit
    from sft_research.fit.parse import MOVED_DATA_OPTIONS

    grouped = {f"data.template.{f.name}" for f in dataclasses.fields(TemplateConfig)} | {
        f"data.lengths.{f.name}" for f in dataclasses.fields(LengthConfig)
    }
    assert set(MOVED_DATA_OPTIONS.values()) == grouped, "every grouped option is found by its old name"
    line = "--data.max_length is now --data.lengths.max_length (the data options are grouped: data.template, data.lengths)"
    for args in (["--data.max_length=256"], ["--data.max_length", "256"]):
        with pytest.raises(ConfigError) as error:
            main(["fit", *args])
        assert str(error.value) == line
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  chat_template: t.jinja\n")
    with pytest.raises(ConfigError, match=r"^--data.chat_template is now --data.template.chat_template \(the data options are grouped"):
        main(["validate", f"--config={config}"])
    with pytest.raises(ConfigError, match=r"^--data.pack_into_blocks is now --data.lengths.pack_into_blocks "):
        parse_fit({"data": {"pack_into_blocks": True}})
