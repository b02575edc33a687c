"""Layers import only downward: backend -> kernels -> autograd -> nn -> optim -> models -> the programs.
Every import of a tinyllm module by another (at module level or inside a function) must point to a
lower layer; a new top-level module needs a place in LAYERS."""
import ast
import pathlib

import tinyllm

LAYERS = [  # lowest first; units on one line are peers and may not import each other
    ["backend"],
    ["kernels", "text", "checkpoint", "distributed"],
    ["autograd", "data"],
    ["nn"],
    ["optim"],
    ["models", "metrics"],
    ["generate", "train_config", "translation", "demo", "stats", "viz"],
    ["runs"],
    ["train", "export"],
    ["plot"],
    ["search"],
    ["serve"],
    ["cli", "__init__"],
    ["__main__"],
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
ROOT = pathlib.Path(tinyllm.__file__).parent


def unit_of(path):
    """tinyllm/autograd/ops.py -> 'autograd'; tinyllm/train.py -> 'train'."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return parts[0]


def imported_units(path):
    """The tinyllm units a file imports, resolving relative imports against its package."""
    package = list(path.relative_to(ROOT.parent).parent.parts)  # ['tinyllm', 'autograd']
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                if node.module:
                    targets = [base + node.module.split(".")]
                else:
                    targets = [base + [alias.name] for alias in node.names]
            elif node.module and node.module.split(".")[0] == "tinyllm":
                targets = [node.module.split(".")]
            else:
                continue
        elif isinstance(node, ast.Import):
            targets = [a.name.split(".") for a in node.names if a.name.split(".")[0] == "tinyllm"]
        else:
            continue
        found.update(t[1] for t in targets if len(t) > 1)
    return found


def test_every_module_has_a_layer():
    units = {unit_of(p) for p in ROOT.rglob("*.py")}
    assert units <= set(RANK), f"give these a place in LAYERS: {sorted(units - set(RANK))}"


def test_imports_point_downward():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        unit = unit_of(path)
        for target in imported_units(path) - {unit}:
            if RANK[target] >= RANK[unit]:
                upward.append(f"{path.relative_to(ROOT.parent)} ({unit}) imports {target}")
    assert not upward, "\n".join(upward)


def test_kernels_know_nothing_of_tensor():
    for path in (ROOT / "kernels").glob("*.py"):
        assert imported_units(path) <= {"kernels", "backend"}, path.name
