"""Hooks: recorded outputs are right, and no hook survives, whatever fails."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kernelscope.analysis.dissect import dissect
from kernelscope.analysis.hooks import (
    capture,
    count_hooks,
    forward_until,
    iter_batches,
    layer_outputs,
)
from kernelscope.analysis.shift import shift
from kernelscope.analysis.toppatches import top_patches
from kernelscope.errors import KernelscopeError


class Boom(nn.Module):
    """Raises when run: a failure injected after the layer under study."""

    def forward(self, x):
        raise RuntimeError("injected failure")


def test_capture_records_hand_computable_outputs():
    net = nn.Sequential(nn.Conv2d(1, 1, 2, bias=False), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[[[1.0, -1.0], [0.0, 0.0]]]]))
    x = torch.tensor([[[[1.0, 3.0], [0.0, 0.0]]]])  # 1*1 + -1*3 = -2
    with capture(net, ["0", "1"]) as out:
        net(x)
    assert out["0"].item() == -2.0
    assert out["1"].item() == 0.0
    assert count_hooks(net) == 0


def test_hooks_removed_when_the_block_raises():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.ReLU(), Boom()))
    with pytest.raises(RuntimeError, match="injected failure"):
        with capture(net, ["0", "1.0"]):
            assert count_hooks(net) == 3  # one per layer, and the model's per-pass marker
            net(torch.zeros(1, 1, 5, 5))
    assert count_hooks(net) == 0


def test_hooks_removed_when_the_callback_raises():
    net = nn.Sequential(nn.Conv2d(1, 2, 3))

    def bad(name, output):
        raise ValueError("callback failed")

    with pytest.raises(ValueError, match="callback failed"):
        with capture(net, "0", callback=bad):
            net(torch.zeros(1, 1, 5, 5))
    assert count_hooks(net) == 0


def test_unknown_layer_lists_valid_names_and_registers_nothing():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    with pytest.raises(KernelscopeError, match=r"^unknown layer 'O'.*\(valid: 0, 1\)$"):
        with capture(net, ["0", "O"]):
            pass
    assert count_hooks(net) == 0


def test_forward_until_stops_before_later_layers():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), Boom())  # Boom would raise if the pass went on
    out = forward_until(net, "0", torch.zeros(2, 1, 5, 5))
    assert out.shape == (2, 2, 3, 3)
    assert count_hooks(net) == 0


def test_analyses_leave_no_hook_when_the_model_fails(rng):
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), Boom())  # the failure is after the studied layer
    x = rng.random((8, 1, 9, 9)).astype(np.float32)
    masks = {"m": np.zeros((8, 9, 9), dtype=bool)}
    with pytest.raises(RuntimeError, match="injected failure"):
        shift(net, "1", x, x + 1, n_boot=10)
    assert count_hooks(net) == 0
    failing_first = nn.Sequential(Boom(), nn.Conv2d(1, 2, 3))  # fails before the layer
    for run in (lambda: top_patches(failing_first, "1", x, k=2),
                lambda: dissect(failing_first, "1", x, masks, n_permutations=2)):
        with pytest.raises(RuntimeError, match="injected failure"):
            run()
        assert count_hooks(failing_first) == 0


def test_layer_outputs_match_torch(rng):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh())
    x = rng.standard_normal((2, 1, 6, 6)).astype(np.float32)
    with torch.no_grad():
        expected = torch.tanh(net[0](torch.from_numpy(x))).numpy()
    np.testing.assert_array_equal(layer_outputs(net, x, "1")["1"], expected)


def test_iter_batches_rejects_empty_data():
    with pytest.raises(KernelscopeError, match=r"^the dataset has no images \(0 given\)"):
        list(iter_batches(np.zeros((0, 1, 4, 4))))
    with pytest.raises(KernelscopeError, match=r"^the dataset has no images \(0 given\)"):
        list(iter_batches(iter([])))


def test_a_module_that_runs_twice_in_a_pass_is_read_at_its_first_call():
    """torchvision's ResNet blocks apply one ReLU module twice; the activation after conv1 is its first call."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.relu, self.conv2 = nn.Conv2d(1, 1, 1, bias=False), nn.ReLU(), nn.Conv2d(1, 1, 1)

        def forward(self, x):
            return self.relu(self.conv2(self.relu(self.conv1(x))) + 100.0)

    block = Block()
    with torch.no_grad():
        block.conv1.weight.fill_(2.0)
    x = torch.ones(1, 1, 2, 2)
    seen = []
    with torch.no_grad(), capture(block, "relu", callback=lambda name, out: seen.append(out.clone())) as _:
        block(x)
        block(x)
    assert len(seen) == 2  # once per pass, not twice
    assert all(torch.equal(out, torch.full((1, 1, 2, 2), 2.0)) for out in seen)
    assert torch.equal(layer_outputs_first(block, x), torch.full((1, 1, 2, 2), 2.0))


def layer_outputs_first(block, x):
    import torch

    with torch.no_grad(), capture(block, "relu") as out:
        block(x)
    return out["relu"]
