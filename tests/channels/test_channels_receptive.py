"""Receptive fields: the formula against hand-worked tables, gradients and perturbations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kernelscope.analysis.receptive import (
    effective_receptive_field,
    locality_check,
    receptive_field,
    receptive_fields,
    unit_field_box,
)
from kernelscope.errors import KernelscopeError


def _gradient_support(model, layer, shape, unit, seed=0):
    """Bounding box of input pixels with a nonzero gradient of one unit (float64, random input)."""
    from kernelscope.analysis.hooks import capture

    net = model.double()
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((1, *shape))).requires_grad_(True)
    with capture(net, layer, detach=False) as out:
        net(x)
    out[layer][0, :, unit[0], unit[1]].sum().backward()
    rows, cols = np.nonzero(x.grad[0].abs().sum(0).numpy())
    return rows.min(), rows.max(), cols.min(), cols.max()


def test_table_matches_hand_computation():
    net = nn.Sequential(
        nn.Conv2d(1, 4, 5, stride=2, padding=2),  # r=5, j=2, start=0
        nn.BatchNorm2d(4), nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),  # r=5+2*2=9, j=4, start=0+(1-1)*2=0
        nn.Conv2d(4, 4, 3, dilation=2),  # r=9+2*2*4=25, j=4, start=0+(2-0)*4=8
        nn.AvgPool2d(2),  # r=25+1*4=29, j=8, start=8+0.5*4=10
    ).eval()
    rows = receptive_fields(net, (1, 64, 64))
    assert [(r.layer, r.size[0], r.jump[0], r.start[0]) for r in rows] == [
        ("0", 5, 2, 0.0), ("3", 9, 4, 0.0), ("4", 25, 4, 8.0), ("5", 29, 8, 10.0)]
    assert [r.output_size for r in rows] == [(32, 32), (16, 16), (12, 12), (6, 6)]


def test_rectangular_kernels_and_same_padding():
    net = nn.Sequential(nn.Conv2d(1, 1, (3, 5), padding="same"), nn.Conv2d(1, 1, (1, 3), stride=(1, 2)))
    field = receptive_field(net, "1", (1, 10, 10))
    assert field.size == (3, 7) and field.jump == (1, 2) and field.start == (0.0, 1.0)


@pytest.mark.parametrize("layer", ["0", "2", "3", "5"])
def test_gradient_support_is_exactly_the_theoretical_field(layer):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.MaxPool2d(2), nn.Conv2d(3, 3, 3, dilation=2),
                        nn.Tanh(), nn.Conv2d(3, 2, 3, stride=2, padding=1)).eval()
    shape = (1, 40, 40)
    field = receptive_field(net, layer, shape)
    unit = (field.output_size[0] // 2, field.output_size[1] // 2)
    assert tuple(_gradient_support(net, layer, shape, unit)) == unit_field_box(field, *unit)


def test_container_and_pointwise_layers_take_the_field_of_what_precedes():
    net = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), nn.Sequential(nn.Conv2d(2, 2, 5)))
    assert receptive_field(net, "0", (1, 12, 12)).size == (3, 3)
    assert receptive_field(net, "0.1", (1, 12, 12)).size == (3, 3)
    assert receptive_field(net, "1", (1, 12, 12)).size == (7, 7)


class ShortcutNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, stride=2, padding=1)
        self.short = nn.Conv2d(1, 2, 1, stride=2)
        self.after = nn.Conv2d(2, 2, 3)

    def forward(self, x):
        return self.after(self.conv(x) + self.short(x))


class FunctionalPoolNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3)
        self.conv2 = nn.Conv2d(2, 2, 3)

    def forward(self, x):
        return self.conv2(F.max_pool2d(self.conv1(x), 2))


@pytest.mark.parametrize(("model", "layer", "expected"), [
    # conv 3x3/2 p1: r 3, j 2, start 0; shortcut 1x1/2: r 1, j 2, start 0; their sum: the union, r 3;
    # after 3x3: r 3 + 2 * 2 = 7, j 2, start 0 + 1 * 2 = 2
    (ShortcutNet(), "after", ((7, 7), (2, 2), (2.0, 2.0))),
    # conv 3x3: r 3, start 1; F.max_pool2d(2): r 4, j 2, start 1.5; conv 3x3: r 4 + 2 * 2 = 8, start 3.5
    (FunctionalPoolNet(), "conv2", ((8, 8), (2, 2), (3.5, 3.5))),
])
def test_branching_models_are_followed_through_the_tensors(model, layer, expected):
    """A shortcut and a functional pooling call used to be refused ("not a chain"); now they are followed."""
    torch.manual_seed(0)
    shape = (1, 24, 24)
    field = receptive_field(model, layer, shape)
    assert (field.size, field.jump, field.start) == expected
    unit = (field.output_size[0] // 2, field.output_size[1] // 2)
    assert tuple(_gradient_support(model, layer, shape, unit)) == unit_field_box(field, *unit)


def test_zoo_resnet_is_followed_through_its_shortcuts():
    from kernelscope.models.zoo import build_model

    net = build_model("resnet-small", in_channels=1, num_classes=2, input_size=16).eval()
    assert receptive_field(net, "conv1", (1, 16, 16)).size == (3, 3)
    # stem 3; layer1: 5, 7; layer2 (3x3/2, 3x3): 9, 13 at jump 2; layer3: 17, 25 at jump 4 (the 1x1
    # shortcuts see less than the convs beside them, so each block's union is its conv path)
    field = receptive_field(net, "layer3", (1, 16, 16))
    assert (field.size, field.jump, field.start, field.output_size) == ((25, 25), (4, 4), (0.0, 0.0), (4, 4))


def test_unknown_layer_and_layers_after_flatten():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    assert [r.layer for r in receptive_fields(net, (1, 8, 8))] == ["0"]
    with pytest.raises(KernelscopeError, match=r"^unknown layer '9'"):
        receptive_field(net, "9", (1, 8, 8))
    with pytest.raises(KernelscopeError, match=r"^layer '1' \(Flatten\) runs before or inside '2'"):
        receptive_field(net, "2", (1, 8, 8))


def test_locality_outside_exactly_zero_inside_changes(face_run):
    from kernelscope.train.rundir import load_run

    model = load_run(face_run).model()
    for layer in ("features.2", "features.7"):
        result = locality_check(model, layer, (1, 25, 25), unit=(3, 2), n_trials=4)
        assert result.max_change_outside == 0.0
        assert result.changed_inside == 4
        assert result.passed


def test_locality_check_can_fail_when_the_field_is_wrong(monkeypatch):
    """A unit that sees everything (global pooling inside a custom leaf) breaks a too-small 'outside' claim.

    The tracer now gives Mixer's output the whole input (see test_channels_receptive_graph.py); the
    field the chain-only tracer gave it (the conv's 3x3) is put back here to show that the check fails.
    """
    import kernelscope.analysis.receptive as receptive

    class Mixer(nn.Module):  # shape-preserving but global: adds the image mean to every pixel
        def forward(self, x):
            return x + x.mean(dim=(2, 3), keepdim=True)

    net = nn.Sequential(nn.Conv2d(1, 1, 3), Mixer())
    conv_only = receptive.receptive_field(net, "0", (1, 12, 12))
    monkeypatch.setattr(receptive, "receptive_field", lambda *args: conv_only)
    result = locality_check(net, "1", (1, 12, 12), n_trials=2)
    assert result.max_change_outside > 0.0 and not result.passed


def test_effective_field_of_a_linear_net_matches_the_analytic_gaussian():
    # Two 3x3 box filters: the gradient of the centre unit is the 5x5 outer product of [1, 2, 3, 2, 1]
    net = nn.Sequential(nn.Conv2d(1, 1, 3, bias=False), nn.Conv2d(1, 1, 3, bias=False))
    with torch.no_grad():
        for layer in net:
            layer.weight.fill_(1.0)
    erf = effective_receptive_field(net, "1", input_shape=(1, 11, 11), n_random=3)
    profile = np.array([1.0, 2.0, 3.0, 2.0, 1.0])
    expected = np.zeros((11, 11))
    expected[3:8, 3:8] = np.outer(profile, profile)
    np.testing.assert_allclose(erf.grad_map, expected)
    sigma = np.sqrt((profile * (np.arange(5) - 2.0) ** 2).sum() / profile.sum())  # sqrt(12/9)
    np.testing.assert_allclose(erf.sigma, (sigma, sigma))
    assert erf.centre == (5.0, 5.0) and erf.theoretical.size == (5, 5)


@pytest.mark.parametrize("depth", [2, 4, 8])
def test_effective_field_grows_like_the_square_root_of_depth(depth):
    # n stacked 3x3 box filters: the gradient is an n-fold convolution of [1, 1, 1] per axis, whose
    # variance is n * 2/3 (Luo et al.'s central-limit argument), while the theoretical size is 2n + 1.
    net = nn.Sequential(*[nn.Conv2d(1, 1, 3, bias=False) for _ in range(depth)])
    with torch.no_grad():
        for layer in net:
            layer.weight.fill_(1.0)
    size = 2 * depth + 1
    erf = effective_receptive_field(net, str(depth - 1), input_shape=(1, size + 4, size + 4), n_random=2)
    assert erf.theoretical.size == (size, size)
    np.testing.assert_allclose(erf.sigma, (np.sqrt(depth * 2 / 3),) * 2)
    np.testing.assert_allclose(erf.ratio[0], 4 * np.sqrt(depth * 2 / 3) / size)


def test_effective_field_of_a_random_deep_net_stays_inside_the_theoretical_one():
    torch.manual_seed(0)
    layers = []
    for _ in range(6):
        layers += [nn.Conv2d(4 if layers else 1, 4, 3, padding=1), nn.Tanh()]
    net = nn.Sequential(*layers).eval()
    erf = effective_receptive_field(net, "10", input_shape=(1, 31, 31), n_random=4)
    assert erf.theoretical.size == (13, 13)
    assert erf.mass_inside == 1.0
    assert erf.ratio[0] < 1.0
