"""The engine imports only NumPy and SciPy (and the standard library), even inside functions."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import kernelscope.ops

OPS = Path(kernelscope.ops.__file__).parent
# threadpoolctl: the optional BLAS thread limiter of ops/_threads.py (a no-op when it is missing)
ALLOWED = {"numpy", "scipy", "threadpoolctl", "kernelscope"}
ALLOWED_OWN = ("kernelscope.ops", "kernelscope.errors")


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module that a file imports, at any depth (inside functions too), with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def _offending(path: Path) -> list[str]:
    bad = []
    for line, module in _imports(path):
        top = module.split(".")[0]
        if top == "kernelscope":
            if not module.startswith(ALLOWED_OWN):
                bad.append(f"{path.name}:{line} {module}")
        elif top not in ALLOWED and top not in sys.stdlib_module_names:
            bad.append(f"{path.name}:{line} {module}")
    return bad


def test_no_engine_module_imports_anything_but_numpy_and_scipy():
    files = sorted(OPS.glob("*.py"))
    assert len(files) > 5
    bad = [entry for path in files for entry in _offending(path)]
    assert bad == []


def test_the_check_sees_imports_inside_functions(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import numpy\n\ndef f():\n    import torch.nn\n    from cv2 import filter2D\n"
                     "    from kernelscope.models import zoo\n    from kernelscope.ops import shapes\n")
    assert _offending(probe) == ["probe.py:4 torch.nn", "probe.py:5 cv2",
                                 "probe.py:6 kernelscope.models"]


def test_importing_the_engine_imports_no_torch():
    code = ("import sys, kernelscope, kernelscope.ops, kernelscope.ops.explain, "
            "kernelscope.ops.explain_backward, kernelscope.ops.backward, kernelscope.ops.matrices, "
            "kernelscope.cli.explain\n"
            "from kernelscope.ops import correlate2d\n"
            "import numpy as np\ncorrelate2d(np.ones((40, 40)), np.ones((13, 13)), method='fft')\n"
            "correlate2d(np.ones((4, 2, 20, 20)), np.ones((3, 2, 3, 3)), method='im2col')\n"
            "bad = [m for m in ('torch', 'cv2', 'jax', 'matplotlib') if m in sys.modules]\n"
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
