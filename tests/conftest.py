"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os

import numpy as np
import pytest

# Progress bars off in tests; OpenBLAS threads must not spin against torch (see FINDINGS.md).
os.environ.setdefault("KERNELSCOPE_PROGRESS", "0")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded random generator: every test that draws numbers is reproducible."""
    return np.random.default_rng(20210216)


@pytest.fixture
def cli_runner():
    """Run the CLI in-process and return click's Result (exit_code, output)."""
    from click.testing import CliRunner

    from kernelscope.cli import cli

    runner = CliRunner()

    def run(*args: str, **kwargs):
        return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False, **kwargs)

    return run
