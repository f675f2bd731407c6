"""SOURCE 'onet' in the channel commands: MTCNN's ONet as a face/non-face classifier on 48x48 RGB."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kernelscope.errors import KernelscopeError
from kernelscope.sources import open_source


def test_onet_source_gives_the_logits_of_onet_and_its_input():
    import torch

    from kernelscope.data.faces import lfw_faces
    from kernelscope.models.onet import load_onet, preprocess_faces

    src = open_source("onet")
    inputs, raw, description = src.images("faces", limit=8)
    assert inputs.shape == raw.shape == (8, 3, 48, 48) and description == "lfw_subset faces"
    assert 0.0 <= raw.min() and raw.max() <= 1.0
    np.testing.assert_allclose(inputs, preprocess_faces(lfw_faces()[:8]), atol=1e-5)
    with torch.no_grad():
        logits = src.model(torch.from_numpy(inputs))  # (8, 2)
        _, _, prob = load_onet()(torch.from_numpy(inputs))
    np.testing.assert_allclose(torch.softmax(logits, dim=1).numpy(), prob.numpy(), atol=1e-6)


def test_onet_rejects_epoch_and_normalisation():
    with pytest.raises(KernelscopeError, match=r"^--epoch/epoch=3 applies to run directories only, not to onet$"):
        open_source("onet", epoch=3)
    with pytest.raises(KernelscopeError, match=r"^onet brings its own normalisation, \(x \* 255 - 127.5\) / 128; "):
        open_source("onet", mean=(0.5,), std=(0.5,))


def test_rf_and_patches_on_onet(cli_runner, tmp_path):
    result = cli_runner("rf", "onet", "--out", tmp_path / "rf")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "rf" / "rf.json").read_text())
    assert data["input_shape"] == [3, 48, 48]
    assert {row["layer"]: row["size"][0] for row in data["layers"]}["conv4"] == 33
    assert data["locality"]["passed"] is True

    result = cli_runner("patches", "onet", "--layer", "conv3", "-k", "2", "--images", "nonfaces",
                        "--out", tmp_path / "patches")
    assert result.exit_code == 0, result.output
    assert "top-2 patches of 64 channels of prelu3 (PReLU after conv conv3) over 100 images (lfw_subset non-faces)" in result.output
    with np.load(tmp_path / "patches" / "patches.npz") as patches:
        assert patches["crops"].shape == (64, 2, 3, 21, 21)


def test_shift_and_dissect_on_onet(cli_runner, tmp_path):
    result = cli_runner("shift", "onet", "--ood", "nonfaces", "--bootstrap", "20", "--no-init",
                        "--out", tmp_path / "shift")
    assert result.exit_code == 0, result.output
    assert "note: no labelled in-distribution training images: Mahalanobis score skipped" in result.output
    data = json.loads((tmp_path / "shift" / "shift.json").read_text())
    assert sorted(data["trained"]["network"]) == ["energy", "max_logit", "max_softmax"]
    assert data["source"] == "MTCNN ONet (pretrained)" and len(data["channels"]) == 128

    result = cli_runner("dissect", "onet", "--layer", "conv2", "--permutations", "2", "--no-init",
                        "--out", tmp_path / "dissect")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("read at prelu2 (PReLU after conv conv2)\neyes: best channel ")
    assert "masks: eyes " in result.output  # the default Haar masks, on the grey faces
