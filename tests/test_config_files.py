"""A config or suite file that is not valid YAML stops every command in one line naming the file, the line and the
column (the YAML library, given the file's text, says "<unicode string>")."""

import pytest

from sft_research.cli.main import console
from sft_research.errors import ConfigError
from sft_research.fit.yaml_files import read_yaml

BROKEN = "trainer:\n  max_steps: 2\n  callbacks: [1, 2\n"
SAID = (
    "line 4, column 1: not valid YAML (expected ',' or ']', but got '<stream end>'; "
    "while parsing a flow sequence that began at line 3, column 14)"
)


@pytest.mark.parametrize(
    ("command", "option"),
    [("fit", "--config"), ("pipeline", "--config"), ("bench", "--suite"), ("rehearse", "--config"), ("data", "--config=")],
)
def test_every_command_names_the_broken_file(tmp_path, monkeypatch, capsys, command, option):
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    given = [f"{option}{broken}"] if option.endswith("=") else [option, str(broken)]
    monkeypatch.setattr("sys.argv", ["sft-research", command, *given])
    with pytest.raises(SystemExit):
        console()
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"sft-research: error: {broken}, {SAID}")


def test_a_fit_started_from_python_names_it_too(tmp_path):
    from sft_research.fit.lightning_cli import FitCLI, cli_arguments

    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    with pytest.raises(ConfigError, match=rf"^{broken}, line 4, column 1: not valid YAML"):
        FitCLI(**cli_arguments(["fit", "--config", str(broken)], run=False))
    broken.write_text("model:\n\tpretrained: x\n")
    with pytest.raises(ConfigError, match=r", line 2, column 1: not valid YAML \(found character '\\t' that cannot start any token"):
        read_yaml(broken)
