"""The package's folders are its layers, and no module imports from a layer above its own (README, Layout)."""

import ast
from pathlib import Path

import sft_research

LAYERS = [
    "errors",
    "checkpoints",
    "runs",
    "data",
    "model",
    "frozen",
    "objectives",
    "train",
    "fit",
    "pipelines",
    "rehearsal",
    "bench",
    "cli",
]
PACKAGE = Path(sft_research.__file__).parent


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, layer) of every ``from sft_research.<layer>...`` import in the file, at any depth (lazy ones too)."""
    tree = ast.parse(path.read_text())
    return [
        (node.lineno, node.module.split(".")[1])
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sft_research.")
    ]


def test_every_top_level_module_and_package_is_a_layer():
    top = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert top - {"__init__"} == set(LAYERS)


def test_no_module_imports_from_a_layer_above_its_own():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if layer == "__init__":
            continue
        upward += [
            f"{path.relative_to(PACKAGE)}:{line} imports {target}"
            for line, target in imports(path)
            if LAYERS.index(target) > LAYERS.index(layer)
        ]
    assert upward == []
