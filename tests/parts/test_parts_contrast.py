"""The answer to the seed: eye channels emerge in ONet and in a net trained on a task that needs eyes,
not in the same net trained on the easy face/non-face task, nor at random initialisation."""

from __future__ import annotations

import numpy as np
import pytest

from kernelscope.analysis.occlusion import onet_part_masks
from kernelscope.analysis.part_contrast import part_contrast
from kernelscope.data.face_tasks import face_task_data
from kernelscope.data.faces import lfw_faces
from kernelscope.errors import KernelscopeError


@pytest.fixture(scope="module")
def contrast():
    return part_contrast(seed=0, quick=True, dissection=True)


def test_onet_has_eye_channels_in_conv3(contrast):
    onet = contrast["models"]["onet"]
    # FINDINGS: the strongest conv3 eye channel drops ~51% against ~14% for controls.
    assert onet["n_detectors"]["conv3"] >= 3
    conv3 = onet["per_layer"]["conv3"]
    assert conv3["detector"] and conv3["part_drop"] > 0.4 and conv3["control_drop"] < 0.2
    assert onet["detector"] and onet["ci"][0] > 0.15


def test_eye_channels_emerge_only_where_the_task_needs_eyes(contrast):
    models = contrast["models"]
    eyes, easy, random = models["eyes"], models["easy"], models["random"]
    assert sum(eyes["n_detectors"].values()) >= 1 and eyes["detector"]
    assert sum(easy["n_detectors"].values()) == 0 and not easy["detector"]
    assert sum(random["n_detectors"].values()) == 0
    assert eyes["selectivity"] > easy["selectivity"] + 0.05
    # both models solve their task on held-out images
    assert eyes["test_accuracy"] > 0.85 and easy["test_accuracy"] > 0.85


def test_occluding_the_eyes_matters_to_the_eyes_model_output_only(contrast):
    models = contrast["models"]
    assert models["eyes"]["output"]["effect"] > 0.15 and models["eyes"]["output"]["ci_low"] > 0.05
    assert abs(models["easy"]["output"]["effect"]) < 0.05
    assert abs(models["random"]["output"]["effect"]) < 0.02


def test_face_task_splits_share_no_face():
    eye_masks = onet_part_masks(lfw_faces(), parts=["eyes"])["eyes"]
    data = face_task_data("easy", eye_masks=eye_masks, seed=3)
    faces = data["test_faces"].reshape(len(data["test_faces"]), -1)
    train_pos = data["x_train"][data["y_train"] == 1].reshape(-1, faces.shape[1])
    assert not (faces[:, None, :] == train_pos[None, :, :]).all(axis=2).any()
    assert data["test_eye_masks"].shape == (40, 25, 25)
    with pytest.raises(KernelscopeError, match="task: expected 'easy' or 'eyes', got 'hard'"):
        face_task_data("hard", eye_masks=eye_masks)
    with pytest.raises(KernelscopeError, match=r"eye_masks: expected shape \(100, 25, 25\) \(one mask per "
                                               r"lfw_subset face\), got \(40, 25, 25\)"):
        face_task_data("eyes", eye_masks=data["test_eye_masks"])
    # the held-out faces carry the masks given for them
    all_faces = lfw_faces().reshape(100, -1)
    index = [int(np.flatnonzero((all_faces == face).all(axis=1))[0]) for face in faces]
    np.testing.assert_array_equal(data["test_eye_masks"], eye_masks[index])


def test_dissection_sees_no_eye_detector_on_aligned_crops(contrast):
    # IoU cannot tell an eye channel from a location channel when every eye sits in the same place.
    for name, model in contrast["models"].items():
        assert set(model["dissection"]) == set(model["n_detectors"]), name
        assert all(layer["n_detectors"] == 0 for layer in model["dissection"].values()), name
        assert all(0.0 <= layer["best_iou"] < 0.04 for layer in model["dissection"].values()), name
