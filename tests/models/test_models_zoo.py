"""The model zoo: every architecture builds, runs, exposes dotted conv names; options and errors."""

from __future__ import annotations

import pytest
import torch

from kernelscope.errors import KernelscopeError
from kernelscope.models import build_model, model_names
from kernelscope.models.layers import conv_layer_names, get_conv_layer


@pytest.mark.parametrize("name", model_names())
@pytest.mark.parametrize("channels,size", [(1, 28), (1, 8), (3, 32), (1, 25)])
def test_every_model_runs_on_every_input(name, channels, size):
    torch.manual_seed(0)
    if name == "lenet5" and size < 16:  # two valid 5x5 convs and two poolings need room
        with pytest.raises(KernelscopeError, match=rf"input_size \({size}, {size}\) is too small for this model"):
            build_model(name, in_channels=channels, num_classes=7, input_size=size)
        return
    net = build_model(name, in_channels=channels, num_classes=7, input_size=size)
    out = net(torch.randn(3, channels, size, size))
    assert out.shape == (3, 7)
    names = conv_layer_names(net)
    assert names and get_conv_layer(net)[1].in_channels == channels
    assert net.kernelscope_arch["name"] == name


def test_large_kernel_is_findings_recipe():
    net = build_model("large-kernel")
    assert conv_layer_names(net) == ["features.0", "features.3"]
    assert net.features[0].weight.shape == (16, 1, 7, 7) and net.features[3].weight.shape == (32, 16, 3, 3)
    assert build_model("large-kernel", kernel_size=9).features[0].weight.shape == (16, 1, 9, 9)


def test_tinyvgg_is_two_blocks_of_two_convs():
    net = build_model("tinyvgg", input_size=64, in_channels=3)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4 and all(c.out_channels == 10 for c in convs)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in net.modules()) == 2


def test_resnet_has_nested_dotted_names():
    names = conv_layer_names(build_model("resnet-small"))
    assert "layer2.0.conv1" in names and "layer2.0.shortcut.0" in names


@pytest.mark.parametrize("name", model_names())
def test_options_change_first_layer_and_depth(name):
    net = build_model(name, kernel_size=5, width=12, depth=2)
    first = get_conv_layer(net)[1]
    assert first.kernel_size == (5, 5) and first.out_channels == 12
    deeper = build_model(name, depth=3, input_size=64)
    assert len(conv_layer_names(deeper)) > len(conv_layer_names(build_model(name, depth=1, input_size=64)))


def test_same_seed_same_weights():
    torch.manual_seed(3)
    a = build_model("tinyvgg").state_dict()
    torch.manual_seed(3)
    b = build_model("tinyvgg").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kwargs,message", [
    ({"name": "resnet"}, r"unknown model 'resnet'; did you mean 'resnet-small'"),
    ({"name": "tinyvgg", "kernel_size": 4}, r"kernel_size must be odd .*got 4"),
    ({"name": "tinyvgg", "width": 0}, r"width must be an integer in \[1, 1024\], got 0"),
    ({"name": "tinyvgg", "depth": 2.5}, r"depth must be an integer in \[1, 8\], got 2.5"),
    ({"name": "tinyvgg", "colour": 1}, r"unknown model option 'colour' for 'tinyvgg'"),
    ({"name": "tinyvgg", "input_size": 0}, r"input_size must be a positive int"),
    ({"name": "lenet5", "input_size": 8, "depth": 3}, r"input_size \(8, 8\) is too small for this model"),
])
def test_bad_options(kwargs, message):
    name = kwargs.pop("name")
    with pytest.raises(KernelscopeError, match=message):
        build_model(name, **kwargs)
