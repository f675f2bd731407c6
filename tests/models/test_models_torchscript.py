"""Opening a TorchScript file never runs its code: hostile payloads in forward() and __setstate__ stay inert."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from kernelscope.errors import KernelscopeError
from kernelscope.models.torchscript import load_torchscript_code, read_torchscript
from kernelscope.sources import open_source

ORIGINAL = b"precious data, do not touch"


class _WritesInForward(nn.Module):
    """tinyvgg-like tensors whose forward overwrites the file at ``target``."""

    def __init__(self, target: str):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.target = target

    def forward(self, x: Tensor) -> Tensor:
        written = torch.from_file(self.target, shared=True, size=8, dtype=torch.uint8).fill_(33)
        return self.features(x).mean(dim=(2, 3)) + 0.0 * written[0].float()  # used: not eliminated


class _WritesOnLoad(nn.Module):
    """A module whose __setstate__ (run by torch.jit.load) overwrites the file at ``target``."""

    def __init__(self, target: str):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.target = target

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.target, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        written = torch.from_file(state[0], shared=True, size=8, dtype=torch.uint8).fill_(66)
        self.target = state[0] + str(int(written[0]) * 0)  # used: not eliminated
        self.training = state[1]


def _script(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():  # TorchScript is deprecated in torch 2.x; files still save and load
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(module), str(path))
    return path


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_bytes(ORIGINAL)
    return path


def test_the_forward_payload_is_real(tmp_path, victim):
    """The fixture can fail the tests below: running the graph does overwrite the file."""
    path = _script(_WritesInForward(str(victim)), tmp_path / "evil.pt")
    load_torchscript_code(path)(torch.zeros(1, 1, 8, 8))
    assert victim.read_bytes() != ORIGINAL


def test_the_load_payload_is_real(tmp_path, victim):
    path = _script(_WritesOnLoad(str(victim)), tmp_path / "evil.pt")
    victim.write_bytes(ORIGINAL)  # scripting itself may have run __getstate__ only; restore to be sure
    with pytest.raises(KernelscopeError, match="left uninitialized after '__setstate__'"):
        load_torchscript_code(path)  # fails, but only after __setstate__ has run
    assert victim.read_bytes() != ORIGINAL


def test_opening_reads_weights_and_never_runs_forward(tmp_path, victim):
    module = _WritesInForward(str(victim))
    path = _script(module, tmp_path / "evil.pt")
    src = open_source(path)
    assert victim.read_bytes() == ORIGINAL
    assert not src.runnable and src.conv_layers == ["features.0"]
    assert torch.equal(src.model.get_submodule("features.0").weight, module.features[0].weight)
    with pytest.raises(KernelscopeError, match="pass --trust-code"):
        src.model(torch.zeros(1, 1, 8, 8))
    assert victim.read_bytes() == ORIGINAL


def test_opening_never_runs_setstate(tmp_path, victim):
    path = _script(_WritesOnLoad(str(victim)), tmp_path / "evil.pt")
    victim.write_bytes(ORIGINAL)
    with pytest.raises(KernelscopeError, match="cannot read TorchScript .*without running their code"):
        read_torchscript(path)  # its state is a custom tuple: refused as data, not run
    assert victim.read_bytes() == ORIGINAL


@pytest.mark.parametrize("payload", [_WritesInForward, _WritesOnLoad])
@pytest.mark.parametrize("command", [["atlas", "--n-null", "10"], ["maps"], ["parts", "--no-init", "--limit", "2"]])
def test_commands_leave_the_victim_untouched(tmp_path, victim, payload, command):
    path = _script(payload(str(victim)), tmp_path / "evil.pt")
    victim.write_bytes(ORIGINAL)
    done = subprocess.run([sys.executable, "-m", "kernelscope", command[0], str(path), *command[1:],
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert victim.read_bytes() == ORIGINAL
    if command[0] == "atlas" and payload is _WritesInForward:
        assert done.returncode == 0, done.stderr  # weights only: the atlas works on the file
    else:
        assert done.returncode == 2 and done.stderr.startswith("Error: ") and "Traceback" not in done.stderr
