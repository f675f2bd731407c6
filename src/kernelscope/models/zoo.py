"""The small model zoo, defined here (no torchvision).

- ``lenet5``: LeNet-5 style, 5x5 convolutions, average pooling, three linear layers.
- ``tinyvgg``: the 2-block network of CNN Explainer (conv-relu-conv-relu-maxpool, twice,
  10 channels, 3x3), with padding so that it also fits 8x8 digits.
- ``resnet-small``: a 3x3 stem and one residual basic block per stage (16, 32, 64 channels).
- ``large-kernel``: a 7x7 (or 9x9) 16-channel first layer, then 3x3x32, then linear: large
  enough first-layer kernels to tell an oriented edge or a Gabor from noise.

Apart from the registry, :func:`build_face_net` builds the small face network of the parts
contrast (:mod:`kernelscope.analysis.part_contrast`): fixed to 1x25x25 input, seeded by its own
argument.

Every builder takes ``in_channels``, ``num_classes``, ``input_size`` and the options
``kernel_size`` (first conv layer), ``width`` (channels of the first layer; later
layers scale with it) and ``depth`` (number of conv blocks / stages). Conv layers have
dotted names such as ``features.0`` or ``layer2.0.conv1``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from kernelscope.errors import KernelscopeError, suggest

__all__ = ["build_model", "model_names", "ZOO", "build_face_net"]


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise KernelscopeError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return value


def _flat_features(features: nn.Module, in_channels: int, input_size: tuple[int, int]) -> int:
    try:
        with torch.no_grad():
            out = features(torch.zeros(1, in_channels, *input_size))
    except RuntimeError:
        out = torch.zeros(0)
    if out.numel() == 0:
        raise KernelscopeError(f"input_size {input_size} is too small for this model: the feature maps "
                               "shrink to nothing (use a smaller depth or a larger input)")
    return int(out.numel())


def _lenet5(in_channels: int, num_classes: int, input_size: tuple[int, int], *, kernel_size: int = 5,
            width: int = 6, depth: int = 2) -> nn.Module:
    layers: list[nn.Module] = []
    channels = in_channels
    for block in range(depth):
        out = width if block == 0 else int(round(width * 16 / 6)) * block
        k = kernel_size if block == 0 else 5
        # The first layer pads so a 28x28 digit keeps its size (as LeNet-5's 32x32 input did).
        layers += [nn.Conv2d(channels, out, k, padding=k // 2 if block == 0 else 0), nn.ReLU(),
                   nn.AvgPool2d(2)]
        channels = out
    features = nn.Sequential(*layers)
    flat = _flat_features(features, in_channels, input_size)
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(flat, 120), nn.ReLU(), nn.Linear(120, 84),
                               nn.ReLU(), nn.Linear(84, num_classes))
    return _Sequential(features, classifier)


def _tinyvgg(in_channels: int, num_classes: int, input_size: tuple[int, int], *, kernel_size: int = 3,
             width: int = 10, depth: int = 2) -> nn.Module:
    layers: list[nn.Module] = []
    channels = in_channels
    for block in range(depth):
        for conv in range(2):
            k = kernel_size if block == 0 and conv == 0 else 3
            layers += [nn.Conv2d(channels, width, k, padding=k // 2), nn.ReLU()]
            channels = width
        layers.append(nn.MaxPool2d(2))
    features = nn.Sequential(*layers)
    flat = _flat_features(features, in_channels, input_size)
    return _Sequential(features, nn.Sequential(nn.Flatten(), nn.Linear(flat, num_classes)))


def _large_kernel(in_channels: int, num_classes: int, input_size: tuple[int, int], *,
                  kernel_size: int = 7, width: int = 16, depth: int = 2) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, width, kernel_size, padding=kernel_size // 2),
                               nn.ReLU(), nn.MaxPool2d(2)]
    channels = width
    for _ in range(depth - 1):
        layers += [nn.Conv2d(channels, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        channels = 2 * width
    features = nn.Sequential(*layers)
    flat = _flat_features(features, in_channels, input_size)
    return _Sequential(features, nn.Sequential(nn.Flatten(), nn.Linear(flat, num_classes)))


class _Sequential(nn.Module):
    """``features`` then ``classifier``: conv layers are named ``features.<i>``."""

    def __init__(self, features: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, classes)
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """Two 3x3 conv + batch norm layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))  # (N, C_out, H/s, W/s)
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A 3x3 stem, ``depth`` stages of one basic block (channels double, stride 2 after the first)."""

    def __init__(self, in_channels: int, num_classes: int, *, kernel_size: int = 3, width: int = 16,
                 depth: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        channels = width
        for stage in range(depth):
            out = width * 2**stage
            self.add_module(f"layer{stage + 1}", nn.Sequential(BasicBlock(channels, out, 1 if stage == 0 else 2)))
            channels = out
        self.depth = depth
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))  # (N, width, H, W)
        for stage in range(self.depth):
            x = getattr(self, f"layer{stage + 1}")(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)  # (N, channels)
        return self.fc(x)


def _resnet_small(in_channels: int, num_classes: int, input_size: tuple[int, int], *,
                  kernel_size: int = 3, width: int = 16, depth: int = 3) -> nn.Module:
    return SmallResNet(in_channels, num_classes, kernel_size=kernel_size, width=width, depth=depth)


ZOO: dict[str, Callable[..., nn.Module]] = {
    "lenet5": _lenet5,
    "tinyvgg": _tinyvgg,
    "resnet-small": _resnet_small,
    "large-kernel": _large_kernel,
}
_OPTIONS = ("kernel_size", "width", "depth")


def model_names() -> list[str]:
    """Names of the zoo's architectures.

    Examples
    --------
    >>> model_names()
    ['lenet5', 'tinyvgg', 'resnet-small', 'large-kernel']
    """
    return list(ZOO)


def build_model(name: str, *, in_channels: int = 1, num_classes: int = 10,
                input_size: int | tuple[int, int] = 28, **options: Any) -> nn.Module:
    """Build a zoo model with freshly initialised weights (seed torch first for reproducibility).

    Parameters
    ----------
    name : str
        One of :func:`model_names`.
    in_channels : int
        Channels of the input images (1 grey, 3 RGB).
    num_classes : int
        Number of output logits.
    input_size : int or (int, int)
        Height and width of the input images.
    **options
        ``kernel_size`` (odd, first conv layer), ``width`` (channels of the first
        layer), ``depth`` (conv blocks or stages). ``None`` values mean the default.

    Returns
    -------
    torch.nn.Module
        With ``kernelscope_arch = {"name": ..., "kwargs": ...}``, enough to rebuild it.

    Examples
    --------
    >>> import torch
    >>> from kernelscope.models.layers import conv_layer_names
    >>> net = build_model("large-kernel", in_channels=1, num_classes=10, input_size=28)
    >>> conv_layer_names(net), tuple(net(torch.zeros(2, 1, 28, 28)).shape)
    (['features.0', 'features.3'], (2, 10))
    >>> net.features[0].weight.shape
    torch.Size([16, 1, 7, 7])
    """
    if name not in ZOO:
        raise KernelscopeError(suggest(str(name), ZOO, what="model"))
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise KernelscopeError(f"unknown model option {unknown[0]!r} for {name!r} (allowed: {', '.join(_OPTIONS)})")
    options = {k: v for k, v in options.items() if v is not None}
    if "kernel_size" in options:
        k = _check_int("kernel_size", options["kernel_size"], 1, 31)
        if k % 2 == 0:
            raise KernelscopeError(f"kernel_size must be odd (so that 'same' padding is symmetric), got {k}")
    if "width" in options:
        _check_int("width", options["width"], 1, 1024)
    if "depth" in options:
        _check_int("depth", options["depth"], 1, 8)
    _check_int("in_channels", in_channels, 1, 64)
    _check_int("num_classes", num_classes, 2, 100000)
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
        raise KernelscopeError(f"input_size must be a positive int or (height, width), got {input_size!r}")
    model = ZOO[name](in_channels, num_classes, size, **options)
    model.kernelscope_arch = {  # type: ignore[assignment]
        "name": name,
        "kwargs": {"in_channels": in_channels, "num_classes": num_classes, "input_size": list(size), **options},
    }
    return model


def build_face_net(seed: int = 0) -> nn.Module:
    """The small face network of the parts contrast: two conv blocks and a linear head, for 1x25x25 input.

    ::

        conv1 1->16 3x3 pad 1, ReLU, max 2  -> (N, 16, 12, 12)
        conv2 16->32 3x3 pad 1, ReLU, max 2 -> (N, 32, 6, 6)
        conv3 32->32 3x3 pad 1, ReLU        -> (N, 32, 6, 6)
        flatten, linear 1152->2

    Its conv layers are ``"0"``, ``"3"`` and ``"6"`` (a plain ``nn.Sequential``). The weights are
    PyTorch's default initialisation under ``torch.manual_seed(seed)``, drawn without touching the
    caller's random state: the same seed gives the same weights, bit for bit.

    Examples
    --------
    >>> build_face_net()(torch.zeros(3, 1, 25, 25)).shape
    torch.Size([3, 2])
    >>> bool(torch.equal(build_face_net(1)[0].weight, build_face_net(1)[0].weight))
    True
    """
    with torch.random.fork_rng():  # seeded without touching the caller's random state
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 16, 12, 12)
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 32, 6, 6)
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),  # (N, 32, 6, 6)
            nn.Flatten(), nn.Linear(32 * 6 * 6, 2),  # (N, 2)
        )
