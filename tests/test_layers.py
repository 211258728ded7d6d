"""The layers of STYLE.md, kept by parsing imports: surface -> state -> engine -> artifacts.

A module may import its own layer or any layer below it; config and errors are leaves that
everyone may import. Function-level (lazy) imports count too. Cycles are refused, and so are
modules over 400 lines, functions over 80, and modules the README's layout map does not name.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jammi_sql"
ORDER = ["surface", "state", "engine", "artifacts", "leaf"]
LAYERS = {
    "surface": {"__init__", "functions", "database", "job_handle", "cli", "demo", "display"}
    | {"server", "relation", "arguments", "udfs", "wire", "pgdialect", "psql_describe", "wire_copy"}
    | {"registry", "data_functions"},
    "state": {"context", "catalog", "jobs", "models", "sources", "embeddings", "evaluation"}
    | {"infer", "progress", "checks", "hard_negatives", "doc_pairs"},
    "engine": {"encoder", "encoders", "lora", "head", "data", "train", "trainee", "evaluate"}
    | {"losses", "checkpoint", "selection", "trial", "gradcache", "mining", "precision"}
    | {"generator", "memory"},
    "artifacts": {"artifacts"},
    "leaf": {"config", "errors", "defaults"},
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def layer_of(module: str) -> str:
    top = module.split(".")[0]
    for layer, names in LAYERS.items():
        if top in names:
            return layer
    raise AssertionError(f"module jammi_sql.{module} is in no layer; add it to LAYERS")


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def imports_of(path: Path, root: Path) -> set[str]:
    """The jammi_sql modules a file imports (relative and absolute, lazy ones included)."""
    here = module_name(path, root).split(".")
    package = here if path.name == "__init__.py" and here != ["__init__"] else here[:-1]

    def exists(dotted: str) -> bool:
        base = root / dotted.replace(".", "/")
        return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package[: len(package) - node.level + 1]
            elif (node.module or "").split(".")[0] == "jammi_sql":
                parts = []
            else:
                continue
            module = (node.module or "").removeprefix("jammi_sql").lstrip(".")
            target = ".".join([*parts, *filter(None, module.split("."))])
            for alias in node.names:
                sub = f"{target}.{alias.name}".strip(".")
                found.add(sub if exists(sub) else (target or "__init__"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("jammi_sql."):
                    found.add(alias.name.removeprefix("jammi_sql."))
    return found - {module_name(path, root)}


def graph(root: Path) -> dict[str, set[str]]:
    return {module_name(p, root): imports_of(p, root) for p in sorted(root.rglob("*.py"))}


def violations(root: Path) -> list[str]:
    edges = graph(root)
    problems = []
    for module, targets in edges.items():
        for target in targets:
            a, b = layer_of(module), layer_of(target)
            if ORDER.index(b) < ORDER.index(a):
                problems.append(f"{module} ({a}) imports {target} ({b}): against the flow")
    # cycles among top-level modules (a package counts as one module)
    tops = {m.split(".")[0] for m in edges}
    adj = {t: set() for t in tops}
    for module, targets in edges.items():
        for target in targets:
            if target.split(".")[0] != module.split(".")[0]:
                adj[module.split(".")[0]].add(target.split(".")[0])
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(adj.get(node, ())):
            if state.get(nxt) == 1:
                problems.append("import cycle: " + " -> ".join([*path, node, nxt]))
            elif nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(adj):
        if node not in state:
            visit(node, [])
    return problems


def size_problems(root: Path) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            problems.append(f"{path.name} has {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    problems.append(f"{path.name}:{node.lineno} {node.name}() has {length} lines")
    return problems


def test_imports_follow_the_layers_and_have_no_cycle():
    assert violations(PACKAGE) == []


def test_modules_and_functions_stay_small():
    assert size_problems(PACKAGE) == []


def unmapped(root: Path, readme: str) -> list[str]:
    """Modules and packages of the package's top level that the README's layout map leaves out."""
    layout = readme.split("\njammi_sql/\n", 1)[1].split("```", 1)[0]
    names = [p.name for p in sorted(root.glob("*.py"))]
    names += [p.name + "/" for p in sorted(root.iterdir()) if (p / "__init__.py").is_file()]
    return [name for name in names if not re.search(rf"(?<![\w/]){re.escape(name)}", layout)]


def test_the_readme_layout_names_every_module():
    readme = (PACKAGE.parent / "README.md").read_text()
    assert unmapped(PACKAGE, readme) == []


# ---- the test of the test ---------------------------------------------------------------
def _copy_with(tmp_path: Path, extra: dict[str, str]) -> Path:
    root = tmp_path / "jammi_sql"
    for path in PACKAGE.rglob("*.py"):
        target = root / path.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    for name, code in extra.items():
        (root / name).write_text((root / name).read_text() + "\n" + code + "\n")
    return root


@pytest.mark.parametrize(
    "extra, expected",
    [
        ({"encoder.py": "from .jobs import JobRunner"}, "encoder (engine) imports jobs (state)"),
        ({"artifacts.py": "from . import train"}, "artifacts (artifacts) imports train (engine)"),
        ({"catalog.py": "def f():\n    from .cli import main"}, "catalog (state) imports cli"),
        ({"config.py": "from jammi_sql.catalog import Catalog"}, "config (leaf) imports catalog"),
        ({"sources.py": "from . import embeddings"}, "import cycle"),
    ],
)
def test_the_layer_test_catches_an_upward_import_or_a_cycle(tmp_path, extra, expected):
    problems = violations(_copy_with(tmp_path, extra))
    assert any(expected in p for p in problems), problems


def test_the_size_test_catches_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(90))
    root = _copy_with(tmp_path, {"errors.py": f"def too_long():\n{body}"})
    assert any("too_long() has 91 lines" in p for p in size_problems(root))


def test_the_layout_test_catches_a_module_the_readme_does_not_name(tmp_path):
    root = _copy_with(tmp_path, {})
    (root / "newcomer.py").write_text("")
    readme = (PACKAGE.parent / "README.md").read_text()
    assert unmapped(root, readme) == ["newcomer.py"]
