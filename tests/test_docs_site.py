"""The docs site: `mkdocs build --strict` passes, and fails on a broken link or an unresolved API reference."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
API_MODULES = ["kernelscope.ops", "kernelscope.kernels", "kernelscope.sources", "kernelscope.train",
               "kernelscope.analysis.atlas", "kernelscope.analysis.toppatches", "kernelscope.analysis.dissect",
               "kernelscope.analysis.shift", "kernelscope.analysis.parts"]

pytestmark = pytest.mark.slow


def _mkdocs(config: Path, site: Path, cwd: Path) -> subprocess.CompletedProcess:
    # cwd: where mkdocs-jupyter keeps its cache (.cache/), so the checkout is left untouched
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def _copy_of_the_site(tmp: Path) -> Path:
    """mkdocs.yml and docs/ copied (the source tree linked), to break on purpose."""
    shutil.copy2(ROOT / "mkdocs.yml", tmp / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", tmp / "docs")
    (tmp / "src").symlink_to(ROOT / "src")
    return tmp / "mkdocs.yml"


def test_the_site_builds_strictly_with_every_api_page(tmp_path):
    started = time.perf_counter()
    result = _mkdocs(ROOT / "mkdocs.yml", tmp_path / "site", tmp_path)
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stdout + result.stderr
    site = tmp_path / "site"
    for name in ("index.html", "engine/index.html", "ecosystem/index.html", "examples/question/index.html",
                 "figures/mnist-atlas-match.png"):
        assert (site / name).is_file(), name
    api = "".join(p.read_text() for p in (site / "api").rglob("index.html"))
    for module in API_MODULES:
        assert f'id="{module}"' in api, module  # mkdocstrings rendered the module
    ops = (site / "api" / "ops" / "index.html").read_text()
    assert 'id="kernelscope.ops.correlate2d"' in ops and "Parameters" in ops  # numpydoc sections parsed
    notebook = (site / "examples" / "question" / "index.html").read_text()
    assert "format_explanation" in notebook  # the notebook's code is on its page
    assert seconds < 120, f"docs build took {seconds:.0f} s"


def test_a_broken_link_fails_the_build(tmp_path):
    config = _copy_of_the_site(tmp_path)
    page = tmp_path / "docs" / "engine.md"
    page.write_text(page.read_text() + "\nSee [the missing page](no-such-page.md).\n")
    result = _mkdocs(config, tmp_path / "site", tmp_path)
    assert result.returncode != 0
    assert "no-such-page.md" in result.stderr + result.stdout


def test_an_unresolved_api_reference_fails_the_build(tmp_path):
    config = _copy_of_the_site(tmp_path)
    page = tmp_path / "docs" / "api" / "ops.md"
    page.write_text(page.read_text() + "\n::: kernelscope.ops.no_such_function\n")
    result = _mkdocs(config, tmp_path / "site", tmp_path)
    assert result.returncode != 0
    assert "kernelscope.ops.no_such_function" in result.stderr + result.stdout
