"""The package as a user installs it: a wheel and an sdist that twine accepts, installed into a fresh venv.

Nothing is downloaded: the build runs without isolation (setuptools from this environment), the wheel is
installed with ``--no-deps --no-index``, and the fresh venv sees this environment's dependencies (torch,
NumPy, ...) through a ``.pth`` line, the way ``--system-site-packages`` would show a system's. The
editable install of this checkout is not visible there (a ``.pth`` inside a path added by a ``.pth`` is
not read), and the test checks that ``kernelscope`` is imported from the fresh venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

import kernelscope

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DATA = ["kernelscope/py.typed", "kernelscope/models/weights/onet.pt",
                "kernelscope/models/weights/LICENSE-facenet-pytorch.txt", "kernelscope/serve/static/index.html",
                "kernelscope/serve/static/app.js", "kernelscope/serve/static/style.css"]

pytestmark = pytest.mark.slow


def _run(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None,
         timeout: int = 120) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd,
                            timeout=timeout)
    assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """Build the sdist and the wheel from a copy of the source (the checkout is left untouched)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    out = work / "dist"
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, source, timeout=300)
    return out


def _one(dist: Path, pattern: str) -> Path:
    found = sorted(dist.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def test_wheel_and_sdist_pass_twine_check(dist):
    wheel, sdist = _one(dist, "*.whl"), _one(dist, "*.tar.gz")
    assert wheel.name == f"kernelscope-{kernelscope.__version__}-py3-none-any.whl"
    result = _run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist)
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_package_data_is_in_the_wheel_and_the_sdist(dist):
    with zipfile.ZipFile(_one(dist, "*.whl")) as wheel:
        names = set(wheel.namelist())
        for name in PACKAGE_DATA:
            assert name in names, name
        assert wheel.getinfo("kernelscope/models/weights/onet.pt").file_size == (
            ROOT / "src" / "kernelscope" / "models" / "weights" / "onet.pt").stat().st_size
        entry_points = wheel.read(f"kernelscope-{kernelscope.__version__}.dist-info/entry_points.txt").decode()
        assert "kernelscope = kernelscope.cli:main" in entry_points
        # every module of the source tree is packaged (a package without __init__ would be dropped)
        modules = {str(p.relative_to(ROOT / "src")) for p in (ROOT / "src" / "kernelscope").rglob("*.py")}
        assert modules <= names, sorted(modules - names)[:5]
    with tarfile.open(_one(dist, "*.tar.gz")) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
        for name in PACKAGE_DATA:
            assert f"src/{name}" in names, name


def test_installed_wheel_runs(dist, tmp_path):
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index",
         _one(dist, "*.whl"), timeout=180)
    # this environment's dependencies, as --system-site-packages would show a system's (not its editable kernelscope)
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "zz-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    where = _run(python, "-c", "import kernelscope, torch; print(kernelscope.__file__)", env=env, cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout

    script = venv / "bin" / "kernelscope"
    assert script.exists()
    version = _run(script, "--version", env=env, cwd=tmp_path)
    assert version.stdout == f"kernelscope, version {kernelscope.__version__}\n"
    explained = _run(script, "explain", "--input", "9 8 7 6; 5 4 3 2; 1 2 3 4; 5 6 7 8",
                     "--kernel", "1 2 3; 4 5 6; 7 8 9", env=env, cwd=tmp_path)
    assert "154 157" in explained.stdout, explained.stdout
    # package data is found where it was installed: the explorer's page and the ONet weights
    data = _run(python, "-c", "from importlib.resources import files; r = files('kernelscope'); "
                "print((r / 'serve/static/index.html').is_file(), (r / 'models/weights/onet.pt').is_file())",
                env=env, cwd=tmp_path)
    assert data.stdout.split() == ["True", "True"]
