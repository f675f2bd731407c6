"""explain_cell against the network's own output, computed independently here (float64 F.conv2d on the input
a test hook keeps, then the modules after the conv), for every layer kind: stride, padding (zeros and the other
modes, 'same' with an even kernel), dilation, groups (depthwise too), bias or none, BatchNorm before the
activation, the zoo, and torchvision-compatible ResNet-18 / MobileNetV2 with random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kernelscope.analysis.cell import explain_cell
from kernelscope.analysis.hooks import count_hooks
from kernelscope.errors import KernelscopeError


def _reference(model: nn.Module, layer: str, x: torch.Tensor, channel: int, row: int, col: int):
    """The conv's float64 output at the cell from its recorded input, and the network's own value there."""
    conv = dict(model.named_modules())[layer]
    seen = {}

    def pre(module, inputs):
        seen.setdefault("in", inputs[0].detach())

    def post(module, inputs, output):
        seen.setdefault("out", output.detach())

    handles = [conv.register_forward_pre_hook(pre), conv.register_forward_hook(post)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    inp = seen["in"].double()
    if conv.padding_mode != "zeros":
        inp = F.pad(inp, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        padding = 0
    else:
        padding = conv.padding
    bias = None if conv.bias is None else conv.bias.detach().double()
    out = F.conv2d(inp, conv.weight.detach().double(), bias, conv.stride, padding, conv.dilation, conv.groups)
    return float(out[0, channel, row, col]), float(seen["out"][0, channel, row, col]), seen["in"]


def _maps(model: nn.Module, layer: str, x: torch.Tensor):
    """The conv's whole float64 output map from its recorded input, and the network's own map."""
    conv = dict(model.named_modules())[layer]
    _, _, conv_in = _reference(model, layer, x, 0, 0, 0)
    inp = conv_in.double()
    with torch.no_grad():
        own = conv(conv_in)[0]
        if conv.padding_mode != "zeros":
            inp = F.pad(inp, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        bias = None if conv.bias is None else conv.bias.double()
        out = F.conv2d(inp, conv.weight.double(), bias, conv.stride, conv.padding if conv.padding_mode == "zeros"
                       else 0, conv.dilation, conv.groups)
    return out[0], own


def _net(conv: nn.Conv2d, bn: bool = False) -> nn.Module:
    layers = [conv] + ([nn.BatchNorm2d(conv.out_channels)] if bn else []) + [nn.ReLU()]
    net = nn.Sequential(*layers, nn.Conv2d(conv.out_channels, 2, 1))
    if bn:
        with torch.no_grad():
            net[1].running_mean.uniform_(-0.5, 0.5)
            net[1].running_var.uniform_(0.5, 2.0)
            net[1].weight.uniform_(-2, 2)
            net[1].bias.uniform_(-0.5, 0.5)
    return net.eval()


KINDS = {
    "plain": dict(in_channels=2, out_channels=3, kernel_size=3),
    "stride2-pad1": dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1),
    "pad2-asym-kernel": dict(in_channels=1, out_channels=2, kernel_size=(3, 5), padding=2),
    "dilation2": dict(in_channels=2, out_channels=2, kernel_size=3, dilation=2, padding=2),
    "groups2": dict(in_channels=4, out_channels=6, kernel_size=3, groups=2, padding=1),
    "depthwise": dict(in_channels=3, out_channels=3, kernel_size=3, groups=3, padding=1, stride=2),
    "no-bias": dict(in_channels=2, out_channels=3, kernel_size=3, padding=1, bias=False),
    "same-even": dict(in_channels=2, out_channels=2, kernel_size=4, padding="same"),
    "reflect": dict(in_channels=2, out_channels=2, kernel_size=3, padding=1, padding_mode="reflect"),
    "replicate": dict(in_channels=1, out_channels=2, kernel_size=3, padding=2, padding_mode="replicate"),
    "circular": dict(in_channels=2, out_channels=2, kernel_size=3, padding=1, padding_mode="circular"),
}


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")  # torch's own note
@pytest.mark.parametrize("bn", [False, True], ids=["relu", "bn-relu"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_layer_kind_matches_the_network(kind, bn):
    torch.manual_seed(0)
    net = _net(nn.Conv2d(**KINDS[kind]), bn=bn)
    c_in = KINDS[kind]["in_channels"]
    x = torch.randn(1, c_in, 7, 8)
    with torch.no_grad():
        out = net[0](x)  # (1, O, H', W')
        after = net[:3 if bn else 2](x)
    h_out, w_out = out.shape[2:]
    for channel, row, col in [(0, 0, 0), (out.shape[1] - 1, h_out - 1, w_out - 1), (1, h_out // 2, w_out - 1)]:
        cell = explain_cell(net, "0", x.numpy(), channel, row, col)
        expected, network, _ = _reference(net, "0", x, channel, row, col)
        assert abs(cell.total - expected) < 1e-9, (kind, channel, row, col)
        assert cell.total_agrees and cell.network_total == network
        assert abs(cell.total - network) <= cell.tolerance
        assert cell.post_agrees and cell.network_post == float(after[0, channel, row, col])
        assert cell.read_at == f"{2 if bn else 1} (ReLU after conv 0)"
        # the shown parts add up: per-channel sums are the sums of the shown products
        products = np.array([t.products for t in cell.channels])  # (Cg, kh, kw)
        assert np.allclose(products, np.array([t.window for t in cell.channels]) * np.array([t.kernel for t in cell.channels]))
        assert abs(products.sum() + (cell.bias or 0.0) - cell.total) < 1e-9
        assert len(cell.channels) == c_in // net[0].groups
    assert count_hooks(net) == 0


def test_window_holds_the_real_input_and_marks_padding():
    torch.manual_seed(1)
    net = _net(nn.Conv2d(2, 2, 3, stride=2, padding=1, dilation=1))
    x = torch.randn(1, 2, 6, 6)
    cell = explain_cell(net, "0", x, 1, 0, 2)  # rows -1..1, cols 3..5
    assert cell.input_rows == [-1, 0, 1] and cell.input_cols == [3, 4, 5]
    assert cell.padding_mask == [[True] * 3, [False] * 3, [False] * 3]
    assert cell.channels[1].window[0] == [0.0, 0.0, 0.0]
    assert np.allclose(cell.channels[1].window[1:], x[0, 1, 0:2, 3:6].double().numpy())
    assert np.allclose(cell.channels[0].kernel, net[0].weight[1, 0].double().detach().numpy())


def test_reflect_padding_is_shown_as_copies():
    net = _net(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"))
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    cell = explain_cell(net, "0", x, 0, 0, 0)
    assert cell.channels[0].window[0] == [5.0, 4.0, 5.0]  # row -1 reflects row 1
    assert cell.padding_mask[0] == [True, True, True] and "reflect" in cell.notes[0]


def test_zoo_and_standard_networks_every_conv_reachable():
    from kernelscope.models import build_model
    from kernelscope.models.layers import conv_layer_names
    from kernelscope.models.standard import mobilenet_v2, resnet18

    torch.manual_seed(0)
    cases = [(build_model("resnet-small", input_size=(16, 16)), torch.randn(1, 1, 16, 16)),
             (build_model("tinyvgg", input_size=(16, 16)), torch.randn(1, 1, 16, 16)),
             (build_model("lenet5", input_size=(28, 28)), torch.randn(1, 1, 28, 28)),
             (build_model("large-kernel", input_size=(28, 28)), torch.randn(1, 1, 28, 28)),
             (resnet18(num_classes=10), torch.randn(1, 3, 40, 40)),
             (mobilenet_v2(num_classes=10), torch.randn(1, 3, 40, 40))]
    for model, x in cases:
        model.eval()
        for module in model.modules():  # non-trivial BatchNorm statistics, so bn is not the identity
            if isinstance(module, nn.BatchNorm2d):
                with torch.no_grad():
                    module.running_mean.uniform_(-0.2, 0.2)
                    module.running_var.uniform_(0.5, 1.5)
        names = conv_layer_names(model)
        picked = names if len(names) <= 5 else [names[0], names[1], names[len(names) // 2], names[-2], names[-1]]
        for name in picked:
            expected_map, network_map = _maps(model, name, x)  # (O, H', W') each
            c, h, w = expected_map.shape
            cell = explain_cell(model, name, x, c - 1, h - 1, w // 2)
            assert abs(cell.total - float(expected_map[c - 1, h - 1, w // 2])) < 1e-9 and cell.total_agrees, name
            assert cell.network_total == float(network_map[c - 1, h - 1, w // 2])
            assert cell.post_agrees, (name, cell.read_at, cell.post, cell.network_post, cell.post_note)
        assert count_hooks(model) == 0


def test_depthwise_of_mobilenet_reads_relu6_after_batchnorm():
    from kernelscope.models.standard import mobilenet_v2

    torch.manual_seed(0)
    model = mobilenet_v2(num_classes=10).eval()
    cell = explain_cell(model, "features.2.conv.1.0", torch.randn(1, 3, 32, 32), 5, 1, 1)
    assert cell.groups == cell.input_shape[0] and len(cell.channels) == 1 and cell.channels[0].channel == 5
    assert cell.after == ["features.2.conv.1.1 (BatchNorm2d)", "features.2.conv.1.2 (ReLU6)"]
    assert cell.post_agrees and 0.0 <= cell.post <= 6.0


@pytest.mark.parametrize(("cell", "message"), [
    ((3, 0, 0), r"channel must be 0\.\.2 for layer '0' \(output map 3x5x5\); got 3"),
    ((0, 5, 0), r"row must be 0\.\.4"),
    ((0, 0, -1), r"col must be 0\.\.4"),
])
def test_a_cell_outside_the_map_is_refused(cell, message):
    net = _net(nn.Conv2d(1, 3, 3))
    with pytest.raises(KernelscopeError, match=message):
        explain_cell(net, "0", np.zeros((1, 1, 7, 7), dtype=np.float32), *cell)
    assert count_hooks(net) == 0


def test_not_a_conv_and_unknown_layer_are_refused():
    net = _net(nn.Conv2d(1, 3, 3))
    with pytest.raises(KernelscopeError, match="is a ReLU, not a Conv2d"):
        explain_cell(net, "1", np.zeros((1, 1, 7, 7), dtype=np.float32), 0, 0, 0)
    with pytest.raises(KernelscopeError, match="nope"):
        explain_cell(net, "nope", np.zeros((1, 1, 7, 7), dtype=np.float32), 0, 0, 0)
    with pytest.raises(KernelscopeError, match="one image"):
        explain_cell(net, "0", np.zeros((2, 1, 7, 7), dtype=np.float32), 0, 0, 0)


def test_a_wrong_explanation_would_fail_the_check():
    """The check can fail: with the bias dropped from the network after the pass, the shown total is off."""
    torch.manual_seed(0)
    net = _net(nn.Conv2d(1, 2, 3))
    with torch.no_grad():
        net[0].bias.fill_(0.5)
    x = torch.randn(1, 1, 6, 6)
    good = explain_cell(net, "0", x, 0, 1, 1)
    assert good.total_agrees
    from kernelscope.analysis.cell import cell_tolerance

    assert abs((good.total - 0.5) - good.network_total) > cell_tolerance(10.0, 0.5)
    with pytest.raises(KernelscopeError, match="precision must be one of float32, tf32"):
        cell_tolerance(1.0, None, "float8")


def test_pretrained_onet_every_conv():
    """A pretrained network (MTCNN's ONet, shipped weights; PReLU after each conv)."""
    from kernelscope.sources import open_source

    src = open_source("onet")
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, *src.input_shape)).astype(np.float32))
    for name in src.conv_layers:
        expected_map, network_map = _maps(src.model, name, x)
        c, h, w = expected_map.shape
        cell = explain_cell(src.model, name, x, c // 2, h - 1, 0)
        assert abs(cell.total - float(expected_map[c // 2, h - 1, 0])) < 1e-9
        assert cell.total_agrees and cell.post_agrees and cell.after == [f"prelu{name[-1]} (PReLU)"]


def test_a_bfloat16_network_is_checked_at_its_own_precision():
    torch.manual_seed(0)
    net = _net(nn.Conv2d(3, 4, 3, padding=1), bn=True).to(torch.bfloat16)
    x = torch.randn(1, 3, 8, 8).to(torch.bfloat16)
    cell = explain_cell(net, "0", x, 2, 3, 4)
    expected, network, _ = _reference(net.double(), "0", x.double(), 2, 3, 4)  # the same bf16 values, in float64
    assert abs(cell.total - expected) < 1e-9 and cell.total_agrees and cell.post_agrees
    assert "bfloat16" in cell.notes[0] and cell.tolerance > 1e-3
