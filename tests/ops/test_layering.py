"""seg.ops imports flow one way: common and dispatch are leaves, the kernels import the
leaves only, and the op files decide for themselves (no import cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

OPS = Path(__file__).resolve().parents[2] / "seg" / "ops"


def _imports(path: Path) -> set[str]:
    """Modules a file imports, relative ones written as '.name' / '..name'."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            if node.module is None:
                names |= {base + alias.name for alias in node.names}
            else:
                names.add(base)
    return names


def test_common_is_a_leaf():
    assert {n.split(".")[0] for n in _imports(OPS / "common.py")} <= {
        "__future__",
        "warnings",
        "typing",
        "torch",
    }


def test_dispatch_imports_nothing_of_the_ops_but_the_kernels_lazily():
    imports = _imports(OPS / "dispatch.py")
    assert {n for n in imports if n.startswith(".")} == {".triton"}
    assert (
        "from . import triton" in (OPS / "dispatch.py").read_text().split("def triton_kernels")[1]
    )


def test_kernels_import_the_leaves_not_the_reference_ops():
    for path in (OPS / "triton").glob("*.py"):
        parents = {n for n in _imports(path) if n.startswith("..")}
        assert parents <= {"..common", ".._window"}, (path.name, parents)
