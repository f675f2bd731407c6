"""The convention probe of the installed libraries (it imports each one only inside its probe)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from kernelscope.analysis import conventions
from kernelscope.analysis.conventions import PROBE_INPUT, PROBE_KERNEL, probe_conventions

EXPECTED = {
    "torch.nn.functional.conv2d": "cross-correlation",
    "torch.nn.Conv2d": "cross-correlation",
    "scipy.signal.convolve2d": "true convolution",
    "scipy.signal.correlate2d": "cross-correlation",
    "scipy.ndimage.convolve": "true convolution",
    "scipy.ndimage.correlate": "cross-correlation",
    "numpy.convolve": "true convolution",
    "numpy.correlate": "cross-correlation",
    "cv2.filter2D": "cross-correlation",
    "kernelscope.ops.correlate2d": "cross-correlation",
    "kernelscope.ops.convolve2d": "true convolution",
}


def test_verdicts_of_installed_libraries():
    report = probe_conventions()
    verdicts = {r.call.split("(")[0]: r.verdict for r in report.results}
    for call, verdict in EXPECTED.items():
        assert verdicts[call] == verdict, call
    jax = verdicts["jax.lax.conv_general_dilated"]
    if importlib.util.find_spec("jax") is None:
        assert jax == "skipped"
    else:
        assert jax == "cross-correlation"


def test_the_probe_can_tell_the_two_apart():
    corr, conv = conventions._candidates_2d(PROBE_INPUT, PROBE_KERNEL)
    assert (corr != conv).mean() > 0.8
    corr1, conv1 = conventions._candidates_2d(PROBE_INPUT[:1], PROBE_KERNEL[:1])
    assert (corr1 != conv1).mean() > 0.5


def test_absent_wrong_and_broken_libraries(monkeypatch):
    def wrong(x, k):
        return np.zeros_like(x)

    def broken(x, k):
        raise RuntimeError("no backend\nsecond line")

    monkeypatch.setattr(conventions, "_PROBES", [
        ("ghost", "kernelscope_no_such_module", "ghost.conv(x, k)", wrong, False),
        ("wrong", "numpy", "wrong.conv(x, k)", wrong, False),
        ("broken", "numpy", "broken.conv(x, k)", broken, False),
    ])
    results = probe_conventions().results
    assert [(r.verdict, r.note) for r in results] == [
        ("skipped", "kernelscope_no_such_module is not installed"),
        ("neither", "matches neither candidate (a different boundary or alignment?)"),
        ("error", "RuntimeError: no backend"),
    ]
    assert results[1].output == np.zeros((5, 6)).tolist()


def test_importing_the_probe_and_its_command_imports_no_library():
    code = ("import sys, kernelscope.analysis.conventions, kernelscope.cli.conventions\n"
            "bad = [m for m in ('torch', 'cv2', 'jax', 'matplotlib') if m in sys.modules]\n"
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_cli_table_and_json(cli_runner):
    result = cli_runner("conventions")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    torch_line = next(line for line in lines if line.startswith("torch.nn.functional.conv2d"))
    assert "cross-correlation" in torch_line
    assert "2 10 3 19 -4 15  2 10 3 19 -4 15  22 2 15 5 -2 5" in torch_line
    data = json.loads(cli_runner("conventions", "--json").output)
    assert data["kernel"] == PROBE_KERNEL.tolist()
    assert {r["verdict"] for r in data["results"]} >= {"cross-correlation", "true convolution"}


@pytest.mark.parametrize("name", ["explain", "conventions"])
def test_commands_are_registered(cli_runner, name):
    result = cli_runner("--help")
    assert name in result.output


def test_cli_json_is_strict_even_for_a_library_that_returns_nan(cli_runner, monkeypatch):
    def nan_out(x, k):
        return np.full_like(x, np.nan, dtype=float)

    monkeypatch.setattr(conventions, "_PROBES", [("nan", "numpy", "nan.conv(x, k)", nan_out, False)])
    text = cli_runner("conventions", "--json").output
    assert "NaN" not in text
    (result,) = json.loads(text)["results"]
    assert result["verdict"] == "neither"
    assert result["output"][0] == [None] * 6
