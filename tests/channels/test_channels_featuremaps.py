"""Feature maps: hand-computable maps, the recorded maps of a run, and the figures' colour scales."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kernelscope.analysis.featuremaps import feature_maps, is_signed, run_feature_maps
from kernelscope.errors import KernelscopeError


def test_maps_of_a_hand_set_edge_detector():
    net = nn.Sequential(nn.Conv2d(1, 2, (1, 2), bias=False), nn.ReLU(), nn.Conv2d(2, 1, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[[[-1.0, 1.0]]], [[[1.0, -1.0]]]]))  # rising / falling edge
        net[2].weight.fill_(1.0)
    image = np.zeros((1, 3, 4), dtype=np.float32)
    image[:, :, 2:] = 1.0  # a step edge between columns 1 and 2
    maps = feature_maps(net, image, at="conv")
    assert list(maps) == ["0", "2"]
    np.testing.assert_array_equal(maps["0"][0], [[0, 1, 0]] * 3)
    np.testing.assert_array_equal(maps["0"][1], [[0, -1, 0]] * 3)  # signed: before the ReLU
    np.testing.assert_array_equal(maps["2"][0], [[0, 1, 0]] * 3)
    assert is_signed(maps["0"]) and not is_signed(maps["2"])
    after = feature_maps(net, image)  # the default: after the ReLU that follows conv 0 (conv 2 has none)
    np.testing.assert_array_equal(after["0"][0], [[0, 1, 0]] * 3)
    np.testing.assert_array_equal(after["0"][1], [[0, 0, 0]] * 3)
    np.testing.assert_array_equal(after["2"], maps["2"])


def test_chosen_layers_and_errors():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    assert list(feature_maps(net, np.zeros((5, 5)), ["1"])) == ["1"]
    with pytest.raises(KernelscopeError, match=r"^feature_maps takes one image, got 2"):
        feature_maps(net, np.zeros((2, 1, 5, 5)))
    with pytest.raises(KernelscopeError, match=r"^unknown layer '2'"):
        feature_maps(net, np.zeros((5, 5)), ["2"])
    with pytest.raises(KernelscopeError, match=r"has no Conv2d layer"):
        feature_maps(nn.Sequential(nn.ReLU()), np.zeros((5, 5)))


def test_run_maps_across_epochs_equal_a_fresh_forward_pass(face_run):
    from kernelscope.train.rundir import load_run

    run = load_run(face_run)
    epochs, stack = run_feature_maps(run, "features.0", index=1)
    assert epochs == list(range(9)) and stack.shape == (9, 8, 25, 25)
    images, _, _ = run.probe()
    fresh = feature_maps(run.model(8), images[1], ["features.0"], at="conv")["features.0"]  # recorded: conv output
    np.testing.assert_allclose(stack[-1], fresh, rtol=1e-5, atol=1e-6)
    assert not np.allclose(stack[0], stack[-1])  # training changed the maps
    with pytest.raises(KernelscopeError, match=r"^unknown recorded layer 'features.1'"):
        run_feature_maps(run, "features.1")


def test_figures_share_one_symmetric_scale_per_layer():
    from kernelscope.report.figures.channels import feature_epochs_figure, feature_maps_figure

    maps = {"a": np.stack([np.full((3, 3), -4.0), np.full((3, 3), 1.0)]), "b": np.ones((1, 2, 2))}
    fig = feature_maps_figure(maps)
    limits = {tuple(im.get_clim()) for ax in fig.axes for im in ax.images}
    assert (-4.0, 4.0) in limits and (0.0, 1.0) in limits and len(limits) == 2
    fig = feature_epochs_figure([0, 1], np.stack([maps["a"], 2 * maps["a"]]), "a")
    assert {tuple(im.get_clim()) for ax in fig.axes for im in ax.images} == {(-8.0, 8.0)}
