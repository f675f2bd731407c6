"""ONet: the shipped weights load, and it tells the bundled faces from the non-faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernelscope.data.faces import lfw_faces, lfw_nonfaces
from kernelscope.errors import KernelscopeError
from kernelscope.models.onet import (
    WEIGHTS_PATH,
    build_onet,
    load_onet,
    onet_predict,
    preprocess_faces,
)


@pytest.fixture(scope="module")
def onet():
    return load_onet()


def test_weights_are_a_plain_state_dict_with_onet_shapes():
    state = torch.load(WEIGHTS_PATH, weights_only=True)
    assert state["conv1.weight"].shape == (32, 3, 3, 3)
    assert state["dense5.weight"].shape == (256, 1152)
    assert (WEIGHTS_PATH.parent / "LICENSE-facenet-pytorch.txt").read_text().count("MIT") >= 1


def test_onet_finds_every_face_and_no_nonface(onet):
    # FINDINGS: 100 of 100 faces and 0 of 100 non-faces with face probability > 0.5.
    faces = onet_predict(lfw_faces(), net=onet)["face_prob"]
    nonfaces = onet_predict(lfw_nonfaces(), net=onet)["face_prob"]
    assert (faces > 0.5).sum() == 100
    assert (nonfaces > 0.5).sum() == 0


def test_random_init_onet_does_not_detect_faces():
    # The control: the same architecture without the trained weights cannot separate them.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = build_onet()
    p_face = onet_predict(lfw_faces(), net=net)["face_prob"]
    p_non = onet_predict(lfw_nonfaces(), net=net)["face_prob"]
    assert abs(p_face.mean() - p_non.mean()) < 0.05


def test_landmarks_are_where_faces_have_them(onet):
    marks = onet_predict(lfw_faces(), net=onet)["landmarks"]  # (100, 5, 2) fractions
    left_eye, right_eye, nose, mouth_left, mouth_right = (marks[:, k] for k in range(5))
    assert (left_eye[:, 0] < right_eye[:, 0]).all()
    assert (mouth_left[:, 0] < mouth_right[:, 0]).all()
    eyes_y = (left_eye[:, 1] + right_eye[:, 1]) / 2
    mouth_y = (mouth_left[:, 1] + mouth_right[:, 1]) / 2
    assert (eyes_y < nose[:, 1]).all() and (nose[:, 1] < mouth_y).all()
    # FINDINGS: in 25-px coordinates the aligned eyes sit near (6-7, 9) and (15-16, 8.5).
    mean_left = left_eye.mean(0) * 25 - 0.5
    mean_right = right_eye.mean(0) * 25 - 0.5
    assert np.allclose(mean_left, [6.5, 8.8], atol=1.5)
    assert np.allclose(mean_right, [15.5, 8.5], atol=1.5)


def test_preprocessing_is_onets_normalisation():
    x = preprocess_faces(np.array([[[0.0, 1.0], [1.0, 0.0]]]), size=2)
    assert x.shape == (1, 3, 2, 2)
    assert np.allclose(x[0, :, 0, 0], -127.5 / 128) and np.allclose(x[0, :, 0, 1], 127.5 / 128)


def test_preprocessing_rejects_bad_input():
    with pytest.raises(KernelscopeError, match=r"images: expected shape \(N, H, W\), \(N, 1, H, W\) or \(N, 3, H, W\), got \(2, 2\)"):
        preprocess_faces(np.zeros((2, 2)))
    with pytest.raises(KernelscopeError, match=r"images: expected values in \[0, 1\], got \[0, 255\]"):
        preprocess_faces(np.full((1, 4, 4), 255.0) * np.eye(4))


def test_load_onet_errors(tmp_path):
    with pytest.raises(KernelscopeError, match="ONet weights: file .* does not exist"):
        load_onet(tmp_path / "missing.pt")
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(KernelscopeError, match="is not an ONet state dict"):
        load_onet(wrong)


def test_load_model_knows_onet_by_name(onet):
    from kernelscope.models.onet import ONet
    from kernelscope.sources import load_model

    model = load_model("onet")
    assert isinstance(model, ONet) and not model.training
    assert torch.equal(model.conv3.weight, onet.conv3.weight)
