"""The README's examples are what the code does: its explain output, its Python block, its links and figures."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_starts_with_the_two_commands():
    first = _blocks("bash")[0].splitlines()
    assert first[0].startswith("make demo") and first[1].startswith("make test")
    assert README.index("```bash") < 40  # the first thing after the title


def test_readme_explain_block_is_what_the_engine_prints(cli_runner):
    (console,) = [b for b in _blocks("console") if b.startswith("$ kernelscope explain")]
    command, *printed = console.splitlines()
    args = shlex.split(command.removeprefix("$ kernelscope "))
    result = cli_runner(*args)
    assert result.exit_code == 0, result.output
    assert result.output.rstrip("\n").splitlines() == printed
    assert "= 154" in console and "154 157" in console  # the seed's slip (146) is not repeated


def test_readme_python_block_runs_as_written(tmp_path, monkeypatch):
    (block,) = _blocks("python")
    engine_part, training_part = block.split("from kernelscope.kernels import get_kernel")
    namespace: dict = {}
    exec(compile(engine_part, "README.md", "exec"), namespace)
    np.testing.assert_array_equal(namespace["y"].shape, (8, 12, 16, 16))
    from kernelscope.ops import convolve2d, correlate2d, flip_kernel

    x, k = namespace["x"], namespace["k"]
    np.testing.assert_array_equal(correlate2d(x, k), [[154, 157], [200, 233]])
    np.testing.assert_array_equal(convolve2d(x, k), correlate2d(x, flip_kernel(k)))
    # the training half, shortened to one epoch on 300 digits (the same calls, in a temporary folder)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERNELSCOPE_PROGRESS", "0")
    quick = training_part.replace('preset("structure")', 'preset("structure", epochs=1, train_limit=300, progress=False)')
    assert quick != training_part
    exec(compile("from kernelscope.kernels import get_kernel" + quick, "README.md", "exec"), namespace)
    np.testing.assert_array_equal(namespace["sobel_x"], [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    assert namespace["run"].kernels(0, "features.0").shape == (16, 1, 7, 7)
    assert "unexplained" in namespace["result"].summary_table()


@pytest.mark.parametrize("target", sorted(set(re.findall(r"\]\(((?:docs/)[^)#]+)\)", README))))
def test_readme_links_and_figures_exist(target):
    path = ROOT / target
    assert path.is_file(), f"README links to {target}, which does not exist"
    if path.suffix == ".png":
        assert 2_000 < path.stat().st_size < 200_000  # small committed PNGs
