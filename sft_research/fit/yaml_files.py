"""Config files read as YAML, a syntax error said in one line that names the file, the line and the column (the YAML
library, given the file's text, calls it "<unicode string>")."""

from __future__ import annotations

from pathlib import Path

from sft_research.errors import ConfigError


def read_yaml(path: str | Path):
    """The contents of a YAML file."""
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}{position(getattr(error, 'problem_mark', None))}: not valid YAML ({explained(error)})") from None


def position(mark) -> str:
    return "" if mark is None else f", line {mark.line + 1}, column {mark.column + 1}"


def explained(error) -> str:
    """The parser's problem, and what it was in the middle of and where that began."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context, mark = getattr(error, "context", None), getattr(error, "context_mark", None)
    if context is None:
        return problem
    began = "" if mark is None else f" that began at line {mark.line + 1}, column {mark.column + 1}"
    return f"{problem}; {context}{began}"


def check_config_files(args: list[str], options: tuple[str, ...] = ("--config",)) -> None:
    """Every existing file given on the command line to one of ``options`` (``--config FILE`` or ``--config=FILE``)
    parses as YAML; checked before the parser reads it."""
    for previous, arg in zip([None, *args], args):
        option, _, value = arg.partition("=")
        path = arg if previous in options else value if option in options else None
        if path and Path(path).is_file():
            read_yaml(path)
