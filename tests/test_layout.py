"""The package is laid out as the pipeline: each folder imports only the folders below it."""

import ast
from pathlib import Path

import audiotext

# Top to bottom; a module may import only what stands below its own layer.
LAYERS = [
    {"__main__"},  # python -m audiotext
    {"cli"},
    {"recipes"},
    {"training"},
    {"evaluation"},
    {"inference"},
    {"models"},
    {"data"},
    {"features"},
    {"config", "io", "runtime", "resources", "__init__"},
    {"errors"},  # what every layer raises
]
PACKAGE = Path(audiotext.__file__).parent


def layer_of(name: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if name in layer)


def imports() -> set[tuple[str, str]]:
    """(importing folder or module, imported folder or module) pairs within the package."""
    edges = set()
    for file in PACKAGE.rglob("*.py"):
        parts = file.relative_to(PACKAGE).with_suffix("").parts
        source = parts[0]
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                target = name.split(".")
                if target[0] == "audiotext" and len(target) > 1 and target[1] != source:
                    edges.add((source, target[1]))
    return edges


def test_every_folder_has_a_layer():
    top_level = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert top_level <= set().union(*LAYERS), f"not in LAYERS: {top_level - set().union(*LAYERS)}"


def test_imports_run_one_way_down_the_pipeline():
    upward = sorted((a, b) for a, b in imports() if layer_of(b) <= layer_of(a))
    assert not upward, f"imports against the pipeline's order: {upward}"
