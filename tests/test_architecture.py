"""The layering of docs/architecture.md, checked on every import of src/kernelscope (inside functions too)."""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "kernelscope"

#: Floors: a part may import only from its own floor or below (see docs/architecture.md).
FLOOR = {
    "errors": 0, "_io": 0, "_progress": 0, "_display": 0, "py": 0,
    "ops": 1,
    "kernels": 2, "data": 2,
    "models": 3, "npnet": 3,
    "train": 4,
    "sources": 5,
    "analysis": 6,
    "report": 7,
    "demo": 8,
    "cli": 9, "serve": 9,
    "__main__": 10, "__init__": 10,
}
#: The engine imports NumPy and SciPy only (and the standard library; threadpoolctl keeps BLAS single-threaded).
ENGINE_ALLOWED = set(sys.stdlib_module_names) | {"numpy", "scipy", "threadpoolctl", "kernelscope"}


def _imports(path: Path) -> list[tuple[int, str]]:
    module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                found.append((node.lineno, f"{base}.{node.module}" if node.module else base))
            else:
                found.append((node.lineno, node.module or ""))
    return found


def _part(module: str) -> str | None:
    bits = module.split(".")
    if bits[0] != "kernelscope":
        return None
    return bits[1] if len(bits) > 1 else "__init__"


def _edges() -> tuple[list[str], dict[str, set[str]]]:
    upward, edges = [], defaultdict(set)
    for path in sorted(ROOT.rglob("*.py")):
        me = _part(".".join(path.relative_to(ROOT.parent).with_suffix("").parts))
        for line, name in _imports(path):
            if me == "ops" and name.split(".")[0] not in ENGINE_ALLOWED:
                upward.append(f"{path.relative_to(ROOT)}:{line}: the engine imports {name}")
            other = _part(name)
            if other is None or other in (me, "__init__"):
                continue
            edges[me].add(other)
            if FLOOR[other] > FLOOR[me]:
                upward.append(f"{path.relative_to(ROOT)}:{line}: {me} imports {name}")
    return upward, edges


def test_every_part_has_a_floor():
    parts = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())) and p.name != "__init__.py"}
    assert parts <= set(FLOOR), f"give these parts a floor here and in docs/architecture.md: {parts - set(FLOOR)}"


def test_imports_run_one_way():
    upward, _ = _edges()
    assert upward == [], "imports against the layering:\n" + "\n".join(upward)


def test_no_package_imports_another_in_a_circle():
    _, edges = _edges()

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in edges.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    circles = sorted(p for p in edges if reaches(p, p, {p}))
    assert circles == [], f"packages in an import circle: {circles}"


@pytest.mark.parametrize("source, expected", [
    ("import torch\n", ["ops imports torch"]),
    ("def f():\n    from kernelscope.train import train\n", ["ops imports kernelscope.train"]),
])
def test_the_check_can_fail(tmp_path, monkeypatch, source, expected):
    """An upward import (inside a function too) and a foreign import in the engine are caught."""
    fake = tmp_path / "kernelscope"
    (fake / "ops").mkdir(parents=True)
    (fake / "ops" / "__init__.py").write_text("")
    (fake / "ops" / "bad.py").write_text(source)
    monkeypatch.setitem(globals(), "ROOT", fake)
    upward, _ = _edges()
    assert [u.split(": ", 1)[1].replace("the engine imports", "ops imports") for u in upward] == expected
