"""Agreement with scikit-image, with every difference in normalisation, sign, orientation
naming and boundary handling written down (the table in kernelscope.kernels.filtering and
docs/kernels.md). Exact to rounding, on a real photo, border pixels included."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.filters as skf

from kernelscope.data.images import load_image
from kernelscope.kernels import edge_magnitude, filter_image, gabor_kernel, get_kernel


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return load_image("sample:camera")[100:164, 200:280]  # (64, 80): the cameraman's edges


# (skimage function, our kernel, our scale): skimage == ours / scale, with padding "symmetric"
EDGES = [
    (skf.sobel_h, "sobel_y", 4.0), (skf.sobel_v, "sobel_x", 4.0),
    (skf.prewitt_h, "prewitt_y", 3.0), (skf.prewitt_v, "prewitt_x", 3.0),
    (skf.scharr_h, "scharr_y", 16.0), (skf.scharr_v, "scharr_x", 16.0),
    (skf.roberts_pos_diag, "roberts_d45", 1.0), (skf.roberts_neg_diag, "roberts_d135", 1.0),
]


@pytest.mark.parametrize("reference,name,scale", EDGES, ids=[e[1] for e in EDGES])
def test_edge_filters_match_skimage_with_normalisation_and_same_sign(photo, reference, name, scale):
    ours = filter_image(photo, name, padding_mode="symmetric") / scale
    np.testing.assert_allclose(ours, reference(photo), rtol=0, atol=1e-12)
    assert np.abs(ours).max() > 0.05  # a real edge response, not two zero maps agreeing


def test_skimage_reflect_is_our_symmetric_not_our_reflect(photo):
    """skimage's mode='reflect' repeats the edge pixel (scipy); ours mirrors without it (PyTorch)."""
    reference = skf.sobel_h(photo)
    symmetric = filter_image(photo, "sobel_y", padding_mode="symmetric") / 4
    reflect = filter_image(photo, "sobel_y", padding_mode="reflect") / 4
    replicate = filter_image(photo, "sobel_y", padding_mode="replicate") / 4
    np.testing.assert_allclose(symmetric, reference, atol=1e-12)
    np.testing.assert_allclose(replicate, reference, atol=1e-12)  # same for a 3x3 kernel
    np.testing.assert_allclose(reflect[1:-1, 1:-1], reference[1:-1, 1:-1], atol=1e-12)  # interiors agree
    assert np.abs(reflect[[0, -1]] - reference[[0, -1]]).max() > 0.01  # first/last rows differ


def test_sobel_magnitude_matches_skimage_rms_normalisation(photo):
    ours = edge_magnitude(photo, "sobel", padding_mode="symmetric") / 4 / np.sqrt(2)
    np.testing.assert_allclose(ours, skf.sobel(photo), atol=1e-12)


def test_laplace_has_the_opposite_sign(photo):
    ours = filter_image(photo, "laplacian", padding_mode="symmetric")
    np.testing.assert_allclose(-ours, skf.laplace(photo), atol=1e-12)
    assert np.abs(ours).max() > 0.05


@pytest.mark.parametrize("sigma", [0.7, 1.0, 2.5])
def test_gaussian_matches_skimage_nearest_mode_and_truncation(photo, sigma):
    ours = filter_image(photo, "gaussian", sigma=sigma, padding_mode="replicate")
    np.testing.assert_allclose(ours, skf.gaussian(photo, sigma=sigma), atol=1e-12)


@pytest.mark.parametrize("frequency,theta,phase,sigma", [(0.2, 0.0, 0.0, 2.0), (0.15, 0.7, 0.3, 3.0),
                                                         (0.3, 2.0, -np.pi / 2, 1.5)])
def test_gabor_kernel_and_filter_match_skimage(photo, frequency, theta, phase, sigma):
    reference_kernel = skf.gabor_kernel(frequency, theta, sigma_x=sigma, sigma_y=sigma, offset=phase).real
    ours = gabor_kernel(frequency=frequency, theta=theta, phase=phase, sigma=sigma)
    assert ours.shape == reference_kernel.shape
    np.testing.assert_allclose(ours, reference_kernel, atol=1e-15)
    real, _ = skf.gabor(photo, frequency, theta, sigma_x=sigma, sigma_y=sigma, offset=phase)
    np.testing.assert_allclose(filter_image(photo, ours, mode="convolve", padding_mode="symmetric"), real,
                               atol=1e-12)


def test_gabor_default_sigma_and_size_are_skimages():
    np.testing.assert_allclose(get_kernel("gabor"), skf.gabor_kernel(0.25).real, atol=1e-15)
    np.testing.assert_allclose(get_kernel("gabor_odd", frequency=0.1, theta=0.4),
                               skf.gabor_kernel(0.1, 0.4, offset=-np.pi / 2).real, atol=1e-15)


def test_odd_gabor_needs_convolve_to_match_skimage_since_it_is_antisymmetric(photo):
    """skimage convolves (flips the kernel); an antisymmetric kernel flips sign under that."""
    kernel = get_kernel("gabor_odd", frequency=0.2, sigma=2.0)
    real, _ = skf.gabor(photo, 0.2, sigma_x=2.0, sigma_y=2.0, offset=-np.pi / 2)
    correlated = filter_image(photo, kernel, padding_mode="symmetric")
    np.testing.assert_allclose(-correlated, real, atol=1e-12)


@pytest.mark.parametrize("theta,aspect", [(0.0, 0.5), (0.9, 0.5), (0.4, 2.0)])
def test_gabor_aspect_is_sigma_over_sigma_along_the_stripes(theta, aspect):
    """aspect (OpenCV's gamma) = sigma_x / sigma_y in skimage's naming; skimage may pick a
    non-square window, so compare on the common centred window."""
    reference = skf.gabor_kernel(0.2, theta, sigma_x=2.0, sigma_y=2.0 / aspect).real
    ours = gabor_kernel(frequency=0.2, theta=theta, sigma=2.0, aspect=aspect, size=41)
    rh, rw = reference.shape
    window = ours[20 - rh // 2: 20 + rh // 2 + 1, 20 - rw // 2: 20 + rw // 2 + 1]
    np.testing.assert_allclose(window, reference, atol=1e-15)
    assert max(rh, rw) <= gabor_kernel(frequency=0.2, theta=theta, sigma=2.0, aspect=aspect).shape[0]
