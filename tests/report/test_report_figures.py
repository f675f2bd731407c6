"""One image's feature maps per layer: one colour scale per layer, covering every channel."""

from __future__ import annotations

import numpy as np

from kernelscope.report.figures.channels import feature_maps_figure


def test_signed_and_non_negative_layers_and_the_channels_left_out():
    signed = np.zeros((20, 3, 3))
    signed[0, 0, 0], signed[19, 1, 1] = -2.0, 5.0  # the largest value is in a channel not drawn
    relu = np.zeros((2, 4, 4))
    relu[1, 2, 2] = 3.0
    fig = feature_maps_figure({"conv1": signed, "relu": relu}, np.ones((3, 6, 6)) * 0.5, max_channels=16)
    images = {ax.get_subplotspec().rowspan.start: ax.images[0] for ax in fig.axes if ax.images}
    assert images[0].get_array().shape == (6, 6, 3)  # the input, in colour
    assert images[1].get_clim() == (-5.0, 5.0)  # symmetric, over all 20 channels
    assert images[1].get_cmap().name == "RdBu_r"
    assert images[1].get_array().shape == (3, 16 * 4 - 1)  # 16 tiles in one row
    assert images[2].get_clim() == (0.0, 3.0) and images[2].get_cmap().name == "magma"
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert "conv1\nsigned, first 16 of 20" in titles and "relu\n>= 0" in titles


def test_wide_layers_wrap_into_rows_of_columns():
    fig = feature_maps_figure({"conv2": np.arange(40 * 4, dtype=float).reshape(40, 2, 2)}, columns=16)
    (image,) = [ax.images[0] for ax in fig.axes if ax.images]
    assert image.get_array().shape == (3 * 3 - 1, 16 * 3 - 1)  # 40 maps: 3 rows of 16
    assert fig._suptitle.get_text() == "Feature maps (one colour scale per layer)"
