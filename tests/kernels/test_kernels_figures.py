"""Figures: kernel grids (grey and RGB) and filter responses use honest colour scales."""

from __future__ import annotations

import numpy as np
import pytest

from kernelscope.errors import KernelscopeError
from kernelscope.kernels import filter_image, get_kernel
from kernelscope.report.figures.common import save_figure
from kernelscope.report.figures.kernels import (
    draw_filter_responses,
    draw_kernel_grid,
    rgb_kernel_image,
)


def _images(fig):
    return [image for ax in fig.axes for image in ax.images]


def test_grid_shares_one_symmetric_limit_and_writes_numbers(tmp_path):
    bank = np.stack([get_kernel(n) for n in ("sobel_x", "laplacian", "box")])
    fig = draw_kernel_grid(bank, ["sobel_x", "laplacian", "box"])
    panels = [im for im in _images(fig) if im.get_array().shape == (3, 3)]
    assert len(panels) == 3
    assert {im.get_clim() for im in panels} == {(-4.0, 4.0)}  # the laplacian's -4 sets the shared limit
    texts = [t.get_text() for t in fig.axes[1].texts]
    assert texts == ["0", "1", "0", "1", "-4", "1", "0", "1", "0"]
    assert save_figure(fig, tmp_path / "grid.png").stat().st_size > 1000


def test_grid_each_gives_own_limits_and_accepts_o_1_kh_kw():
    bank = np.stack([get_kernel("sobel_x"), 0.01 * get_kernel("sobel_y")])[:, None]  # (2, 1, 3, 3)
    fig = draw_kernel_grid(bank, limit="each", colorbar=False)
    assert [im.get_clim() for im in _images(fig)] == [(-2.0, 2.0), (-0.02, 0.02)]
    assert [ax.get_xlabel() for ax in fig.axes[:2]] == ["|max| 2", "|max| 0.02"]


def test_rgb_kernels_are_drawn_with_zero_at_grey(rng):
    bank = rng.standard_normal((5, 3, 7, 7))
    fig = draw_kernel_grid(bank, suptitle="first layer")
    shown = [im.get_array() for im in _images(fig)]
    assert len(shown) == 5 and shown[0].shape == (7, 7, 3)
    limit = np.abs(bank).max()
    np.testing.assert_allclose(shown[2], rgb_kernel_image(bank[2], limit))
    np.testing.assert_allclose(rgb_kernel_image(np.zeros((3, 1, 1)), 2.0), 0.5)
    assert "zero = grey" in fig._suptitle.get_text()


@pytest.mark.parametrize("kernels,kwargs,message", [
    (np.zeros((2, 5, 3, 3)), {}, r"kernels must have shape \(O, kh, kw\), \(O, 1, kh, kw\) or \(O, 3, kh, kw\), got \(2, 5, 3, 3\)"),
    (np.zeros((0, 3, 3)), {}, r"kernels: nothing to draw"),
    (np.full((1, 3, 3), np.nan), {}, r"kernels contain NaN"),
    (np.zeros((2, 3, 3)), {"titles": ["a"]}, r"titles: got 1 titles for 2 kernels"),
    (np.zeros((2, 3, 3)), {"limit": "max"}, r"limit must be 'shared', 'each' or a number, got 'max'"),
])
def test_grid_errors(kernels, kwargs, message):
    with pytest.raises(KernelscopeError, match=message):
        draw_kernel_grid(kernels, **kwargs)


def test_filter_responses_share_limits_within_a_family_and_grey_for_smoothing():
    image = np.zeros((24, 32))
    image[:, 16:] = 1.0
    names = ["sobel_x", "sobel_y", "gabor", "gaussian"]
    rows = [(n, get_kernel(n), filter_image(image, n), fam)
            for n, fam in zip(names, ["edge", "edge", "gabor", "smoothing"], strict=True)]
    fig = draw_filter_responses(image, rows)
    maps = {ax.get_title().split(":")[0]: ax.images[0] for ax in fig.axes
            if ax.images and ax.images[0].get_array().shape == (24, 32)}
    assert maps["sobel_x"].get_clim() == maps["sobel_y"].get_clim() == (-4.0, 4.0)
    gabor_peak = float(np.abs(rows[2][2]).max())
    assert maps["gabor"].get_clim() == pytest.approx((-gabor_peak, gabor_peak))
    assert maps["gaussian"].get_cmap().name == "gray"
    shared = draw_filter_responses(image, rows, scale="shared")
    clims = {ax.images[0].get_clim() for ax in shared.axes
             if ax.images and ax.images[0].get_array().shape == (24, 32)
             and ax.get_title().startswith("gabor")}
    assert clims == {(-4.0, 4.0)}
    with pytest.raises(KernelscopeError, match="scale must be 'family', 'shared' or 'each'"):
        draw_filter_responses(image, rows, scale="auto")


def test_grid_writes_numbers_only_where_they_fit():
    bank = np.stack([get_kernel("gabor", size=7, theta=t) for t in (0.0, 1.0)])
    assert not any(ax.texts for ax in draw_kernel_grid(bank).axes)
    assert len(draw_kernel_grid(bank, panel_size=1.75).axes[0].texts) == 49
    assert len(draw_kernel_grid(bank[:, :5, :5]).axes[0].texts) == 25


def test_grid_draws_at_most_max_kernels_and_says_so(rng):
    bank = rng.standard_normal((40, 3, 3))
    fig = draw_kernel_grid(bank, max_kernels=12, suptitle="conv1")
    assert sum(1 for ax in fig.axes if ax.images) == 12
    assert fig._suptitle.get_text() == "conv1: first 12 of 40 kernels"
    assert len(draw_kernel_grid(bank[:3], max_kernels=12).axes) == 4  # 3 panels + colour bar, no note


def test_a_large_grey_layer_is_one_mosaic_with_the_same_colours(rng):
    bank = rng.standard_normal((40, 5, 5))
    fig = draw_kernel_grid(bank, suptitle="conv1")
    assert len(fig.axes) == 2  # the mosaic and its colour bar
    (image,) = _images(fig)
    limit = float(np.abs(bank).max())
    assert image.get_clim() == (-limit, limit)
    tiles = image.get_array()  # 8 columns of 5x5 tiles with one NaN pixel between them
    np.testing.assert_array_equal(tiles[:5, :5], bank[0])
    np.testing.assert_array_equal(tiles[6:11, 12:17], bank[10])
    assert [t.get_text() for t in fig.axes[0].texts][:3] == ["0", "1", "2"]
    assert len(draw_kernel_grid(bank, mosaic_image=False).axes) == 41  # forced panels: 40 and a colour bar


def test_a_mosaic_can_be_asked_for_and_is_refused_where_it_cannot_show_everything(rng):
    bank = rng.standard_normal((3, 3, 3))
    fig = draw_kernel_grid(bank, ["a", "b", "c"], mosaic_image=True)  # numbers off by default then
    assert [t.get_text() for t in fig.axes[0].texts] == ["a", "b", "c"]
    for kwargs, what in [({"limit": "each"}, "limit=each"), ({"annotate": True}, "annotate=True")]:
        with pytest.raises(KernelscopeError, match=rf"^mosaic_image=True draws grey kernels with one limit and no "
                                                   rf"numbers; got {what}$"):
            draw_kernel_grid(bank, mosaic_image=True, **kwargs)
    with pytest.raises(KernelscopeError, match="got RGB kernels$"):
        draw_kernel_grid(rng.standard_normal((2, 3, 3, 3)), mosaic_image=True)
