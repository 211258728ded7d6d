"""The layers of STYLE.md, kept by parsing imports: the folders of the package are its layers
and capabilities, ranked from the front ends down to the leaves.

A module may import its own folder or any folder ranked below it; function-level (lazy)
imports count too. Cycles between modules are refused, and so are folders and top-level
modules that have no rank here or that the README's layout map does not name. The catalog,
jobs and SQL-surface folders must import without torch (checked by importing them).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "jammi_sql"
# Top to bottom; each entry a folder (or the top-level modules named). Same rank: free.
RANKS = [
    ("surface", {"__init__", "cli", "demo", "display"}),  # the front ends
    ("surface", {"pg"}),  # the PostgreSQL-wire server
    ("surface", {"api"}),  # the Python API
    ("surface", {"functions"}),  # the SQL functions: one registry
    ("state", {"jobs"}),  # the job runner (no torch at import)
    ("engine", {"training"}),  # the trainer validates with evaluation's metrics
    ("state", {"evaluation"}),
    ("state", {"search"}),
    ("state", {"data"}),
    ("engine", {"scale"}),  # the Ray cluster: backfills on Ray Data (runs inference's encoder)
    ("engine", {"interchange"}),  # export_model and foreign formats (reads the catalog)
    ("engine", {"inference"}),
    ("state", {"catalog"}),  # all SQL against schema jammi (no torch)
    ("engine", {"shapes"}),
    ("artifacts", {"artifacts"}),
    ("leaf", {"config", "errors", "defaults", "progress", "hf"}),
]
WITHOUT_TORCH = ["catalog", "jobs", "functions"]


def rank_of(module: str) -> int:
    top = module.split(".")[0]
    for rank, (_, names) in enumerate(RANKS):
        if top in names:
            return rank
    raise AssertionError(f"jammi_sql.{top} has no rank; add it to RANKS in tests/test_layers.py")


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
            a, b = rank_of(module), rank_of(target)
            if b < a:
                problems.append(
                    f"{module} ({RANKS[a][0]}) imports {target} ({RANKS[b][0]}): against the flow"
                )
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                problems.append("import cycle: " + " -> ".join([*path, node, nxt]))
            elif nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    return problems


def test_imports_follow_the_layers_and_have_no_cycle():
    assert violations(PACKAGE) == []


@pytest.mark.parametrize("folder", WITHOUT_TORCH)
def test_the_state_and_sql_layers_import_without_torch(folder):
    modules = [module_name(p, PACKAGE) for p in sorted((PACKAGE / folder).rglob("*.py"))]
    code = "import sys\n" + "".join(f"import jammi_sql.{m}\n" for m in modules)
    code += "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"importing jammi_sql.{folder} loads {out.stdout.strip()}"


def unmapped(root: Path, readme: str) -> list[str]:
    """Folders and modules of the package that the README's layout map leaves out: each
    folder as ``name/``, each module by its file name on that folder's lines."""
    layout = readme.split("\njammi_sql/\n", 1)[1].split("```", 1)[0]
    blocks = re.split(r"^  (?=\S)", layout, flags=re.M)  # a block per top-level entry
    missing = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if parts[-1] == "__init__.py" and len(parts) > 1:
            continue
        if len(parts) == 1:
            text, name = layout, parts[0]
        else:
            folder = parts[0] + "/"
            found = [b for b in blocks if b.startswith(folder)]
            if not found:
                missing.append(folder)
                continue
            text, name = found[0], parts[1] + ("/" if len(parts) > 2 else "")
        if not re.search(rf"(?<![\w/]){re.escape(name)}", text):
            missing.append("/".join(parts))
    return sorted(set(missing))


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
        (
            {"inference/encoder.py": "from ..jobs.runner import JobRunner"},
            "inference.encoder (engine) imports jobs.runner (state)",
        ),
        (
            {"artifacts/layout.py": "from ..training import train"},
            "artifacts.layout (artifacts) imports training.train (engine)",
        ),
        (
            {"catalog/tables.py": "def f():\n    from ..cli import main"},
            "catalog.tables (state) imports cli",
        ),
        (
            {"config.py": "from jammi_sql.catalog.tables import Catalog"},
            "config (leaf) imports catalog.tables",
        ),
        ({"data/sources.py": "from . import checks"}, "import cycle"),
    ],
)
def test_the_layer_test_catches_an_upward_import_or_a_cycle(tmp_path, extra, expected):
    problems = violations(_copy_with(tmp_path, extra))
    assert any(expected in p for p in problems), problems


def test_the_layout_test_catches_a_module_the_readme_does_not_name(tmp_path):
    root = _copy_with(tmp_path, {})
    (root / "newcomer.py").write_text("")
    (root / "search" / "newroom.py").write_text("")
    readme = (PACKAGE.parent / "README.md").read_text()
    assert unmapped(root, readme) == ["newcomer.py", "search/newroom.py"]
