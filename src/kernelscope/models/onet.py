"""MTCNN's output network (ONet): a small pretrained face network that has part detectors.

ONet is the third stage of MTCNN (Zhang et al., 2016, "Joint Face Detection and
Alignment using Multi-task Cascaded Convolutional Networks"). Given a 48x48 RGB
crop it says whether the crop is a face, refines the face box and places five
landmarks (two eyes, the nose, two mouth corners). The architecture is
re-implemented here; its weights are the ones that ship, MIT-licensed, in Tim
Esler's ``facenet-pytorch`` wheel (``facenet_pytorch/data/onet.pt``), carried
unchanged as ``kernelscope/models/weights/onet.pt`` (see
``LICENSE-facenet-pytorch.txt`` beside it). The file is a plain state dict that
loads with ``torch.load(weights_only=True)``.

::

    input (N, 3, 48, 48), (x * 255 - 127.5) / 128
    conv1 3->32 3x3, prelu1, pool1 max 3/2 ceil   -> (N, 32, 23, 23)
    conv2 32->64 3x3, prelu2, pool2 max 3/2 ceil  -> (N, 64, 10, 10)
    conv3 64->64 3x3, prelu3, pool3 max 2/2 ceil  -> (N, 64, 4, 4)   (conv3 itself: 8x8)
    conv4 64->128 2x2, prelu4                     -> (N, 128, 3, 3)
    permute to (N, W, H, C), flatten              -> (N, 1152)
    dense5 1152->256, prelu5
    dense6_1 -> 2 (softmax: face probability), dense6_2 -> 4 (box), dense6_3 -> 10 (landmarks)

The permute before the flatten is inherited from the original Caffe model
(trained on transposed images); it only reorders the inputs of ``dense5``.

Landmarks are ``(x1..x5, y1..y5)`` as fractions of the crop's width and height,
in the order left eye, right eye, nose, left mouth corner, right mouth corner
("left" as seen in the image).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from kernelscope.errors import KernelscopeError

__all__ = [
    "ONet",
    "ONET_INPUT_SIZE",
    "ONET_INPUT_SHAPE",
    "ONET_MEAN",
    "ONET_STD",
    "LANDMARK_NAMES",
    "WEIGHTS_PATH",
    "build_onet",
    "load_onet",
    "onet_logits",
    "preprocess_faces",
    "onet_predict",
]

#: Side of ONet's square RGB input.
ONET_INPUT_SIZE = 48
#: The five landmarks, in the order ONet returns them.
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
#: ONet's normalisation written as per-channel (x - mean) / std for x in [0, 1]: (x * 255 - 127.5) / 128.
ONET_MEAN = (127.5 / 255,) * 3
ONET_STD = (128 / 255,) * 3
#: ONet's input (C, H, W).
ONET_INPUT_SHAPE = (3, ONET_INPUT_SIZE, ONET_INPUT_SIZE)
#: The shipped weights (facenet-pytorch 2.6.0, MIT).
WEIGHTS_PATH = Path(__file__).with_name("weights") / "onet.pt"


class ONet(nn.Module):
    """MTCNN's ONet; ``forward`` returns ``(box (N, 4), landmarks (N, 10), face_prob (N, 2))``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.softmax6_1 = nn.Softmax(dim=1)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))  # (N, 32, 23, 23)
        x = self.pool2(self.prelu2(self.conv2(x)))  # (N, 64, 10, 10)
        x = self.pool3(self.prelu3(self.conv3(x)))  # (N, 64, 4, 4)
        x = self.prelu4(self.conv4(x))  # (N, 128, 3, 3)
        x = x.permute(0, 3, 2, 1).contiguous()  # (N, W, H, C): the Caffe order dense5 expects
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))  # (N, 256)
        box = self.dense6_2(x)  # (N, 4)
        landmarks = self.dense6_3(x)  # (N, 10)
        prob = self.softmax6_1(self.dense6_1(x))  # (N, 2): [non-face, face]
        return box, landmarks, prob


def build_onet() -> ONet:
    """An ONet with PyTorch's random initialisation (the random-init control).

    Returns
    -------
    torch.nn.Module
        In eval mode.

    Examples
    --------
    >>> net = build_onet()
    >>> [name for name, _ in net.named_children()][:3]
    ['conv1', 'prelu1', 'pool1']
    """
    return ONet().eval()


def load_onet(path: str | Path | None = None) -> ONet:
    """ONet with the pretrained MTCNN weights, in eval mode.

    Parameters
    ----------
    path : str or Path, optional
        A state-dict file with ONet's keys (default: the shipped weights).

    Returns
    -------
    torch.nn.Module

    Examples
    --------
    >>> net = load_onet()
    >>> tuple(net.conv1.weight.shape), tuple(net.dense6_3.weight.shape)
    ((32, 3, 3, 3), (10, 256))
    """
    path = WEIGHTS_PATH if path is None else Path(path)
    if not path.is_file():
        raise KernelscopeError(f"ONet weights: file {str(path)!r} does not exist")
    from kernelscope.models.io import read_weights

    try:
        state = read_weights(path)
    except KernelscopeError as error:
        raise KernelscopeError(f"ONet weights: cannot read {str(path)!r} as a state dict ({error})") from None
    net = build_onet()
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        first = str(error).splitlines()[0]
        raise KernelscopeError(f"ONet weights: {str(path)!r} is not an ONet state dict ({first})") from None
    return net.eval()


class ONetLogits(ONet):
    """ONet whose forward returns the face/non-face logits (N, 2), ``[non-face, face]`` (no softmax)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)[2]  # (N, 2)


def onet_logits() -> ONetLogits:
    """The pretrained ONet as a classifier: same layers and weights as :func:`load_onet`, logits out.

    Examples
    --------
    >>> import torch
    >>> net = onet_logits()
    >>> logits = net(torch.zeros(2, 3, 48, 48))
    >>> tuple(logits.shape), bool(torch.allclose(torch.softmax(logits, 1), load_onet()(torch.zeros(2, 3, 48, 48))[2]))
    ((2, 2), True)
    """
    net = ONetLogits()
    net.load_state_dict(load_onet().state_dict())
    net.softmax6_1 = nn.Identity()
    return net.eval()


def preprocess_faces(images: np.ndarray, *, size: int = ONET_INPUT_SIZE) -> np.ndarray:
    """Turn face crops in [0, 1] into ONet's input: upscaled, RGB, ``(x * 255 - 127.5) / 128``.

    Grey crops are repeated on the three channels; crops of another size are
    resized with bilinear interpolation (PyTorch's ``interpolate``,
    ``align_corners=False``) and clipped back to [0, 1] first.

    Parameters
    ----------
    images : ndarray of shape (N, H, W), (N, 1, H, W) or (N, 3, H, W)
        Values in [0, 1] (the bundled ``lfw_subset`` faces are ``(100, 1, 25, 25)``).
    size : int
        Output side (ONet needs 48).

    Returns
    -------
    ndarray of shape (N, 3, size, size), float32
        0 is mid-grey; the range is [-0.996, 0.996].

    Examples
    --------
    >>> x = preprocess_faces(np.full((2, 25, 25), 0.5))
    >>> x.shape, float(x.min()), float(x.max())
    ((2, 3, 48, 48), 0.0, 0.0)
    >>> bool(np.allclose(preprocess_faces(np.ones((1, 3, 48, 48))), (1 - ONET_MEAN[0]) / ONET_STD[0]))
    True
    """
    import torch.nn.functional as F

    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise KernelscopeError(
            f"images: expected shape (N, H, W), (N, 1, H, W) or (N, 3, H, W), got {tuple(np.shape(images))}"
        )
    if x.size and (np.nanmin(x) < -1e-6 or np.nanmax(x) > 1 + 1e-6):
        raise KernelscopeError(
            f"images: expected values in [0, 1], got [{float(np.nanmin(x)):.3g}, {float(np.nanmax(x)):.3g}]"
        )
    t = torch.from_numpy(np.ascontiguousarray(x))  # (N, C, H, W)
    if t.shape[-2:] != (size, size):
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    if t.shape[1] == 1:
        t = t.repeat(1, 3, 1, 1)  # (N, 3, size, size)
    return ((t * 255.0 - 127.5) / 128.0).numpy().astype(np.float32)


def onet_predict(images: np.ndarray, *, net: nn.Module | None = None, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Run ONet on face crops in [0, 1] and return face probability, box and landmarks.

    Parameters
    ----------
    images : ndarray of shape (N, H, W) or (N, C, H, W)
        Crops in [0, 1], any size (resized to 48x48 by :func:`preprocess_faces`).
    net : torch.nn.Module, optional
        An ONet (default: :func:`load_onet`).
    batch_size : int
        Crops per forward pass.

    Returns
    -------
    dict
        ``face_prob`` (N,) float64, the probability of "face";
        ``box`` (N, 4) float64, the box regression;
        ``landmarks`` (N, 5, 2) float64, ``(x, y)`` of the five landmarks as
        fractions of the crop (order :data:`LANDMARK_NAMES`).

    Examples
    --------
    >>> from kernelscope.data.faces import lfw_faces
    >>> out = onet_predict(lfw_faces()[:4])
    >>> bool((out["face_prob"] > 0.5).all()), out["landmarks"].shape
    (True, (4, 5, 2))
    """
    net = load_onet() if net is None else net
    x = preprocess_faces(images)  # (N, 3, 48, 48)
    probs, boxes, marks = [], [], []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            box, landmarks, prob = net(torch.from_numpy(x[start:start + batch_size]))
            probs.append(prob[:, 1].double().numpy())
            boxes.append(box.double().numpy())
            marks.append(landmarks.double().numpy())
    landmarks = np.concatenate(marks) if marks else np.zeros((0, 10))
    return {
        "face_prob": np.concatenate(probs) if probs else np.zeros(0),
        "box": np.concatenate(boxes) if boxes else np.zeros((0, 4)),
        "landmarks": np.stack([landmarks[:, :5], landmarks[:, 5:]], axis=-1),  # (N, 5, 2)
    }
