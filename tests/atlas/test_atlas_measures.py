"""Spectral shape, colour, quality and the null kernels: known answers on constructed kernels."""

from __future__ import annotations

import numpy as np
import pytest

from kernelscope.analysis.atlas.colour import off_luminance_fraction
from kernelscope.analysis.atlas.controls import null_kernels
from kernelscope.analysis.atlas.quality import kernel_quality
from kernelscope.analysis.atlas.spectral import spectral_shape
from kernelscope.analysis.atlas.templates import gabor_template
from kernelscope.errors import KernelscopeError


@pytest.mark.parametrize("theta", [0.0, 0.5, 1.2, 2.0, 3.0])
def test_orientation_of_a_grating_is_its_wave_vector_mod_pi(theta):
    g = gabor_template((11, 11), frequency=0.25, theta=theta, phase=0.0, sigma_u=3.0, sigma_v=3.0)
    s = spectral_shape(g[None])
    d = abs(np.mod(s.orientation[0] - theta, np.pi))
    assert min(d, np.pi - d) < 0.05
    assert s.bandpass[0] and s.osi[0] > 0.6
    assert s.peak_frequency[0] == pytest.approx(0.25, abs=0.04)


def test_isotropic_kernels_are_not_orientation_selective(rng):
    y, x = np.mgrid[-5:6, -5:6]
    dog = np.exp(-(x**2 + y**2) / 2) - 0.4 * np.exp(-(x**2 + y**2) / 8)
    blob = np.exp(-(x**2 + y**2) / 8)
    s = spectral_shape(np.stack([dog, blob]))
    assert np.all(s.osi < 0.05)
    assert not s.bandpass[1]  # a Gaussian blob peaks at zero frequency
    random_osi = spectral_shape(rng.standard_normal((300, 11, 11))).osi
    assert np.median(random_osi) < 0.4


def test_colour_opponency_and_luminance(rng):
    edge = np.outer(np.ones(5), [-1.0, -0.5, 0, 0.5, 1])
    luminance = np.stack([edge, edge, edge])
    opponent = np.stack([edge, -edge, np.zeros_like(edge)])
    values = off_luminance_fraction(np.stack([luminance, opponent, rng.standard_normal((3, 5, 5))]))
    assert values[0] == pytest.approx(0.0, abs=1e-12) and values[1] == pytest.approx(1.0)
    many = off_luminance_fraction(rng.standard_normal((2000, 3, 5, 5)))
    assert np.mean(many) == pytest.approx(2 / 3, abs=0.01)  # random kernels: 2 of 3 channel directions
    assert np.all(np.isnan(off_luminance_fraction(np.ones((2, 1, 3, 3)))))


def test_quality_flags_dead_and_flat_kernels(rng):
    k = rng.standard_normal((6, 2, 5, 5))
    k[1] = 1e-9 * k[1]  # dead
    k[2] = 3.0 + 0.01 * k[2]  # flat (near-constant)
    q = kernel_quality(k)
    assert q.dead.tolist() == [False, True, False, False, False, False]
    assert q.flat.tolist() == [False, False, True, False, False, False]
    assert q.degenerate.tolist() == [False, True, True, False, False, False]
    np.testing.assert_allclose(q.norm, np.linalg.norm(k.reshape(6, -1), axis=1))
    assert np.all((q.sparsity[~q.dead] >= 0) & (q.sparsity[~q.dead] <= 1))
    assert q.entropy[2] > 0.99  # a constant kernel spreads its energy evenly


def test_nulls_have_the_right_shape_and_statistics(rng):
    smooth = null_kernels("smooth", (4, 1, 7, 7), n=500, rng=1, smooth_sigma=1.5)
    random = null_kernels("random", (4, 1, 7, 7), n=500, rng=1)
    assert smooth.shape == random.shape == (500, 1, 7, 7)
    # neighbouring pixels are correlated in the smooth null and not in the random one
    def neighbour_corr(a):
        return np.corrcoef(a[..., :-1].ravel(), a[..., 1:].ravel())[0, 1]
    assert neighbour_corr(smooth) > 0.7 and abs(neighbour_corr(random)) < 0.05
    # stationary: the border is as variable as the centre (drawn on a larger field)
    assert np.std(smooth[..., 0, 0]) / np.std(smooth[..., 3, 3]) == pytest.approx(1.0, abs=0.15)


def test_shuffled_null_keeps_values_and_colours_and_is_seeded(rng):
    k = rng.standard_normal((3, 3, 5, 5))
    s1 = null_kernels("shuffled", k.shape, n=7, rng=4, kernels=k)
    s2 = null_kernels("shuffled", k.shape, n=7, rng=4, kernels=k)
    np.testing.assert_array_equal(s1, s2)
    for i in range(7):
        source = k[i % 3].reshape(3, -1)
        pixels = s1[i].reshape(3, -1)
        # the same colour vectors (columns), in another order
        assert sorted(map(tuple, source.T.round(12))) == sorted(map(tuple, pixels.T.round(12)))


def test_spectral_null_copies_the_layers_power_spectrum(rng):
    y, x = np.mgrid[-3:4, -3:4]
    stripes = np.stack([np.cos(2 * np.pi * 0.25 * x + p) * np.exp(-(x**2 + y**2) / 8) for p in (0.0, 1.0, 2.0)])
    kernels = stripes[:, None]  # (3, 1, 7, 7): vertical stripes
    null = null_kernels("spectral", kernels.shape, n=3000, rng=2, kernels=kernels)
    assert null.shape == (3000, 1, 7, 7) and np.isrealobj(null)
    expected = np.mean(np.abs(np.fft.fft2(kernels)) ** 2, axis=0)
    measured = np.mean(np.abs(np.fft.fft2(null)) ** 2, axis=0)
    np.testing.assert_allclose(measured, expected, rtol=0.15, atol=0.02 * expected.max())
    # the null keeps the orientation of the layer: vertical stripes stay vertical on average
    from kernelscope.analysis.atlas.spectral import spectral_shape

    orientation = spectral_shape(null[:, 0]).orientation
    assert np.median(np.minimum(orientation, np.pi - orientation)) < 0.3


@pytest.mark.parametrize(("kind", "kwargs", "message"), [
    ("spectral", {}, r"'spectral' null needs the kernels whose spectrum it copies"),
    ("shuffled", {}, r"'shuffled' null needs the kernels to shuffle"),
    ("init", {}, r"'init' null comes from the network"),
    ("randon", {}, r"unknown null 'randon'; did you mean 'random'\?"),
    ("smooth", {"smooth_sigma": 0.0}, r"smooth_sigma must be > 0 pixels, got 0.0"),
    ("random", {"n": 0}, r"n must be at least 1 null kernel, got 0"),
])
def test_null_errors(kind, kwargs, message):
    with pytest.raises(KernelscopeError, match=message):
        null_kernels(kind, (2, 1, 5, 5), **kwargs)
