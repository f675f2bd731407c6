"""The free-centre Gabor fit: known Gabors come back exactly; random kernels do not fit."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.filters import gabor_kernel as skimage_gabor
from skimage.transform import resize

from kernelscope.analysis.atlas.gabor import fit_gabor, gabor_model
from kernelscope.analysis.atlas.templates import gabor_template


def _angle_error(a, b):
    """Distance between orientations modulo pi, radians."""
    d = np.mod(np.asarray(a) - np.asarray(b), np.pi)
    return np.minimum(d, np.pi - d)


def _crop_centre(g, size):
    cy, cx, h = g.shape[0] // 2, g.shape[1] // 2, size // 2
    return g[cy - h : cy + h + 1, cx - h : cx + h + 1]


def test_rotated_shifted_gabors_are_recovered(rng):
    n = 24
    shape = (9, 9)
    truth = {"theta": rng.uniform(0, np.pi, n), "frequency": rng.uniform(0.12, 0.3, n),
             "phase": rng.uniform(-np.pi, np.pi, n), "x0": rng.uniform(-1.5, 1.5, n),
             "y0": rng.uniform(-1.5, 1.5, n)}
    kernels = np.stack([
        gabor_template(shape, frequency=truth["frequency"][i], theta=truth["theta"][i], phase=truth["phase"][i],
                       sigma_u=2.0, sigma_v=1.6, centre=(truth["x0"][i], truth["y0"][i])) for i in range(n)])
    fit = fit_gabor(kernels)
    assert np.all(fit.r2 > 0.999)
    assert np.all(_angle_error(fit.theta, truth["theta"]) < 0.02)
    np.testing.assert_allclose(fit.frequency, truth["frequency"], rtol=0.02)
    np.testing.assert_allclose(fit.x0, truth["x0"], atol=0.05)
    np.testing.assert_allclose(fit.y0, truth["y0"], atol=0.05)
    np.testing.assert_allclose(fit.fitted, kernels, atol=1e-3)


@pytest.mark.parametrize("size", [7, 9, 11])
def test_skimage_gabors_cropped_or_resized_fit_with_the_right_orientation(size):
    thetas = np.linspace(0, np.pi, 6, endpoint=False) + 0.1
    kernels = []
    for theta in thetas:
        g = np.real(skimage_gabor(frequency=0.2, theta=theta, sigma_x=1.8, sigma_y=2.4))  # 15x15 to 17x17
        kernels.append(_crop_centre(g, size))
    fit = fit_gabor(np.stack(kernels))
    assert np.all(fit.r2 > 0.99), fit.r2
    assert np.all(_angle_error(fit.theta, thetas) < 0.05), np.degrees(fit.theta)


def test_resampled_skimage_gabor_still_fits():
    g = np.real(skimage_gabor(frequency=0.15, theta=1.0, sigma_x=3.0, sigma_y=3.0))  # larger than 9x9
    small = resize(g, (9, 9), anti_aliasing=True)
    fit = fit_gabor(small[None])
    assert fit.r2[0] > 0.98
    assert _angle_error(fit.theta[0], 1.0) < 0.05


def test_off_centre_edge_needs_the_free_centre():
    # An odd Gabor (an edge) two pixels off the middle: fitted exactly, centre found.
    edge = gabor_template((7, 7), frequency=0.12, theta=0.0, phase=-np.pi / 2, sigma_u=1.2, sigma_v=2.0,
                          centre=(2.0, 0.0))
    fit = fit_gabor(edge[None])
    assert fit.r2[0] > 0.999
    assert fit.x0[0] == pytest.approx(2.0, abs=0.05)


def test_random_kernels_fit_badly_and_worse_when_larger(rng):
    r2_7 = fit_gabor(rng.standard_normal((200, 7, 7))).r2
    r2_11 = fit_gabor(rng.standard_normal((200, 11, 11))).r2
    assert np.median(r2_7) < 0.4 and np.percentile(r2_7, 99) < 0.6
    assert np.median(r2_11) < np.median(r2_7)


def test_constant_kernel_has_no_r2():
    assert np.isnan(fit_gabor(np.ones((1, 7, 7))).r2[0])


def test_model_matches_the_template_drawing():
    p = np.array([[0.5, -0.3, 0.7, np.log(0.2), np.log(1.5), np.log(2.5), 2.0, 0.0, 0.0]])
    expected = 2.0 * gabor_template((7, 7), frequency=0.2, theta=0.7, phase=0.0, sigma_u=1.5, sigma_v=2.5,
                                    centre=(0.5, -0.3))
    np.testing.assert_allclose(gabor_model((7, 7), p)[0], expected, atol=1e-12)


def test_reported_phase_and_amplitude_reproduce_the_kernel():
    g = 3.0 * gabor_template((9, 9), frequency=0.25, theta=2.5, phase=1.1, sigma_u=2.0, sigma_v=2.0)
    fit = fit_gabor(g[None])
    again = fit.amplitude[0] * gabor_template((9, 9), frequency=fit.frequency[0], theta=fit.theta[0],
                                              phase=fit.phase[0], sigma_u=fit.sigma_u[0], sigma_v=fit.sigma_v[0],
                                              centre=(fit.x0[0], fit.y0[0])) + fit.offset[0]
    np.testing.assert_allclose(again, g, atol=1e-3)
