"""The bank: family properties, sign conventions, rotation relations, parameters and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kernelscope.errors import KernelscopeError
from kernelscope.kernels import (
    DIHEDRAL_NAMES,
    dihedral_transforms,
    flip,
    gabor_kernel,
    gaussian_kernel,
    get_kernel,
    kernel_info,
    kernel_names,
    log_kernel,
    rotate90,
)
from kernelscope.kernels.registry import FAMILIES, format_kernel, parse_kernel_spec, parse_value

DERIVATIVES = [n for n in kernel_names("edge")]
SMOOTHING = kernel_names("smoothing")


def correlate_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """A plain cross-correlation, independent of the engine, to state conventions."""
    kh, kw = kernel.shape
    windows = np.lib.stride_tricks.sliding_window_view(image, (kh, kw))  # (H', W', kh, kw)
    return np.einsum("ijuv,uv->ij", windows, kernel)


def test_every_kernel_is_float64_2d_finite_with_known_family_and_description():
    assert len(kernel_names()) >= 26
    for name in kernel_names():
        info = kernel_info(name)
        kernel = get_kernel(name)
        assert kernel.dtype == np.float64 and kernel.ndim == 2, name
        assert np.isfinite(kernel).all(), name
        assert kernel.shape == info.shape, name
        assert info.family in FAMILIES, name
        assert len(info.description) > 20 and "\n" not in info.description, name
        assert info.to_dict()["resizable"] == info.resizable


def test_required_names_present():
    required = {"identity", "box", "gaussian", "sharpen", "emboss", "roberts_d45", "roberts_d135",
                "prewitt_x", "prewitt_y", "prewitt_d45", "prewitt_d135", "sobel_x", "sobel_y",
                "sobel_d45", "sobel_d135", "sobel5_x", "sobel5_y", "scharr_x", "scharr_y",
                "laplacian", "laplacian8", "log", "dog_on", "dog_off", "gabor", "gabor_odd"}
    assert required <= set(kernel_names())


@pytest.mark.parametrize("name", DERIVATIVES)
def test_derivative_kernels_sum_to_zero_and_are_antisymmetric(name):
    kernel = get_kernel(name)
    assert abs(kernel.sum()) < 1e-12
    np.testing.assert_allclose(np.rot90(kernel, 2), -kernel)  # odd symmetry about the centre


@pytest.mark.parametrize("name", ["laplacian", "laplacian8", "log", "dog_on", "dog_off"])
def test_centre_surround_kernels_sum_to_zero_and_are_rotation_symmetric(name):
    kernel = get_kernel(name)
    assert abs(kernel.sum()) < 1e-12
    for transformed in dihedral_transforms(kernel).values():
        np.testing.assert_allclose(transformed, kernel, atol=1e-15)


@pytest.mark.parametrize("name,params", [("box", {}), ("box", {"size": 5}), ("gaussian", {}),
                                         ("gaussian", {"sigma": 0.3}), ("gaussian", {"sigma": 3, "size": 7}),
                                         ("identity", {"size": 5}), ("sharpen", {}), ("emboss", {})])
def test_smoothing_and_other_kernels_sum_to_one(name, params):
    assert get_kernel(name, **params).sum() == pytest.approx(1.0, abs=1e-12)


def test_sobel_is_outer_product_of_smoothing_and_difference():
    np.testing.assert_array_equal(get_kernel("sobel_x"), np.outer([1, 2, 1], [-1, 0, 1]))
    np.testing.assert_array_equal(get_kernel("prewitt_x"), np.outer([1, 1, 1], [-1, 0, 1]))
    np.testing.assert_array_equal(get_kernel("scharr_x"), np.outer([3, 10, 3], [-1, 0, 1]))
    np.testing.assert_array_equal(get_kernel("sobel5_x"), np.outer([1, 4, 6, 4, 1], [-1, -2, 0, 2, 1]))
    np.testing.assert_array_equal(get_kernel("sobel_x", size=5), get_kernel("sobel5_x"))
    assert np.linalg.matrix_rank(get_kernel("sobel_x", size=7)) == 1
    for stem in ("prewitt", "sobel", "sobel5", "scharr"):
        np.testing.assert_array_equal(get_kernel(f"{stem}_y"), get_kernel(f"{stem}_x").T)


def test_rotation_relations_between_x_y_and_diagonals():
    sx, sy = get_kernel("sobel_x"), get_kernel("sobel_y")
    # np.rot90 turns counter-clockwise on screen; with y pointing down, +x turns into -y.
    np.testing.assert_array_equal(rotate90(sx), -sy)
    np.testing.assert_array_equal(rotate90(sy), sx)
    np.testing.assert_array_equal(rotate90(get_kernel("sobel_d45")), -get_kernel("sobel_d135"))
    # the diagonal responds to the sum of the two directions' differences at the corners
    np.testing.assert_array_equal(get_kernel("sobel_d45"), [[-2, -1, 0], [-1, 0, 1], [0, 1, 2]])
    np.testing.assert_array_equal(get_kernel("sobel_d135"), np.fliplr(get_kernel("sobel_d45")))
    np.testing.assert_array_equal(get_kernel("prewitt_d45"), [[-1, -1, 0], [-1, 0, 1], [0, 1, 1]])
    np.testing.assert_array_equal(get_kernel("roberts_d135"), np.fliplr(get_kernel("roberts_d45")))
    np.testing.assert_array_equal(get_kernel("laplacian8"), np.ones((3, 3)) - 9 * np.eye(3)[1][:, None] * np.eye(3)[1])


@pytest.mark.parametrize("name,direction", [
    ("sobel_x", (0, 1)), ("prewitt_x", (0, 1)), ("scharr_x", (0, 1)), ("sobel5_x", (0, 1)),
    ("sobel_y", (1, 0)), ("prewitt_y", (1, 0)), ("scharr_y", (1, 0)), ("sobel5_y", (1, 0)),
    ("sobel_d45", (1, 1)), ("prewitt_d45", (1, 1)), ("roberts_d45", (1, 1)),
    ("sobel_d135", (1, -1)), ("prewitt_d135", (1, -1)), ("roberts_d135", (1, -1)),
    ("gabor_odd", (0, 1)),
])
def test_derivatives_respond_positively_to_intensity_increasing_in_their_named_direction(name, direction):
    """Sign convention under cross-correlation, x right, y down: a ramp increasing along
    (dy, dx) gives a positive response, the reversed ramp a negative one, the
    perpendicular ramp zero (for the x/y kernels)."""
    kernel = get_kernel(name)
    yy, xx = np.mgrid[0:20, 0:20].astype(float)
    dy, dx = direction
    ramp = dy * yy + dx * xx
    response = correlate_valid(ramp, kernel)
    assert (response > 1e-9).all(), name
    assert (correlate_valid(-ramp, kernel) < -1e-9).all(), name
    if 0 in direction and name != "gabor_odd":
        perpendicular = dx * yy + dy * xx
        np.testing.assert_allclose(correlate_valid(perpendicular, kernel), 0.0, atol=1e-12)


def test_laplacians_are_zero_on_ramps_and_negative_on_a_bright_dot():
    yy, xx = np.mgrid[0:15, 0:15].astype(float)
    for name in ("laplacian", "laplacian8"):
        np.testing.assert_allclose(correlate_valid(3 * xx - 2 * yy + 1, get_kernel(name)), 0.0, atol=1e-12)
    dot = np.zeros((15, 15))
    dot[7, 7] = 1.0
    for name in ("laplacian", "laplacian8", "log", "dog_off"):
        k = get_kernel(name, **({"size": 9} if name in ("log", "dog_off") else {}))
        out = correlate_valid(np.pad(dot, 4), k)
        c = 11 - k.shape[0] // 2  # the output pixel whose window is centred on the dot
        assert out[c, c] == out.min() < 0, name  # most negative exactly on the dot
    out = correlate_valid(np.pad(dot, 4), get_kernel("dog_on", size=9))
    assert out[7, 7] == out.max() > 0


def test_log_response_to_a_disc_peaks_near_sigma_equal_radius_over_sqrt2():
    """Scale selection: the scale-normalised LoG at a bright disc's centre is most negative
    for sigma ~ r / sqrt(2) (Lindeberg)."""
    radius = 5.0
    yy, xx = np.mgrid[-40:41, -40:41]
    disc = (xx**2 + yy**2 <= radius**2).astype(float)
    sigmas = np.linspace(1.5, 7.0, 23)
    responses = [sigma**2 * float((log_kernel(sigma, size=81) * disc).sum()) for sigma in sigmas]
    best = sigmas[int(np.argmin(responses))]
    assert abs(best - radius / math.sqrt(2)) < 0.5
    assert min(responses) < 0


def test_gaussian_is_separable_symmetric_and_widens_with_sigma():
    g1, g3 = gaussian_kernel(1.0, 15), gaussian_kernel(3.0, 15)
    assert np.linalg.matrix_rank(g1) == 1
    for transformed in dihedral_transforms(g1).values():
        np.testing.assert_allclose(transformed, g1)
    yy, xx = np.mgrid[-7:8, -7:8]
    variance = lambda g: float((g * xx**2).sum())  # noqa: E731
    assert variance(g1) == pytest.approx(1.0, rel=1e-3)
    assert variance(g3) > 5 * variance(g1)
    assert gaussian_kernel(1.0).shape == (9, 9)  # scipy's truncate=4: radius int(4 * 1 + 0.5)


def test_gabor_rotation_relation_parity_and_orientation():
    for theta in (0.0, 0.3, 1.2):
        g = gabor_kernel(frequency=0.2, theta=theta, sigma=2.0, size=11)
        np.testing.assert_allclose(rotate90(g), gabor_kernel(frequency=0.2, theta=theta - np.pi / 2,
                                                             sigma=2.0, size=11), atol=1e-15)
    even = gabor_kernel(frequency=0.2, sigma=2.0, size=11)
    odd = gabor_kernel(frequency=0.2, phase=-np.pi / 2, sigma=2.0, size=11)
    np.testing.assert_allclose(np.rot90(even, 2), even, atol=1e-15)
    np.testing.assert_allclose(np.rot90(odd, 2), -odd, atol=1e-15)
    # theta = 0: vertical stripes: the same sign pattern on every row, envelope times one row
    np.testing.assert_array_equal(np.sign(even), np.repeat(np.sign(even[5])[None], 11, axis=0))
    assert np.linalg.matrix_rank(even) == 1
    assert len(set(np.sign(even[5]).tolist())) == 2  # both signs along a row: stripes across x
    np.testing.assert_allclose(gabor_kernel(wavelength=5.0, sigma=2.0, size=11), even)
    # aspect < 1 elongates the envelope along the stripes (down the columns for theta = 0)
    long = gabor_kernel(frequency=0.2, sigma=2.0, aspect=0.5, size=11)
    assert long[0, 5] / long[5, 5] > 5 * even[0, 5] / even[5, 5]
    assert abs(gabor_kernel(frequency=0.2, sigma=2.0, size=11, zero_mean=True).sum()) < 1e-12
    np.testing.assert_array_equal(gabor_kernel(frequency=0.2, sigma=2.0, size=11, parity="odd"), odd)
    np.testing.assert_array_equal(get_kernel("gabor", parity="odd"), get_kernel("gabor_odd"))
    np.testing.assert_array_equal(get_kernel("gabor", parity="even"), get_kernel("gabor"))


def test_dihedral_transforms_form_the_group_of_eight():
    kernel = np.arange(12.0).reshape(3, 4)  # non-square and asymmetric: all 8 differ
    transforms = dihedral_transforms(kernel)
    assert tuple(transforms) == DIHEDRAL_NAMES
    flat = {name: (t.shape, t.tobytes()) for name, t in transforms.items()}
    assert len(set(flat.values())) == 8
    np.testing.assert_array_equal(transforms["rot180"], flip(kernel, "both"))
    np.testing.assert_array_equal(transforms["transpose"], kernel.T)
    np.testing.assert_array_equal(transforms["anti_transpose"], np.rot90(kernel, 2).T)
    np.testing.assert_array_equal(rotate90(transforms["rot270"]), kernel)
    bank = np.arange(2 * 3 * 5 * 5.0).reshape(2, 3, 5, 5)  # (O, C, kh, kw): last two axes
    np.testing.assert_array_equal(dihedral_transforms(bank)["rot90"][1, 2], np.rot90(bank[1, 2]))


@pytest.mark.parametrize("name,params,message", [
    ("sobelx", {}, r"unknown kernel 'sobelx'; did you mean 'sobel_x'"),
    ("gaussian", {"sigma": 0}, r"sigma must be a finite number > 0, got 0.0"),
    ("gaussian", {"sigma": -1.5}, r"sigma must be a finite number > 0, got -1.5"),
    ("gaussian", {"sigma": float("nan")}, r"sigma must be a finite number > 0"),
    ("gaussian", {"size": 4}, r"size must be an odd integer between 1 and 1001 .* got 4"),
    ("box", {"size": 2.5}, r"size must be an odd integer >= 1, got 2.5"),
    ("sobel_x", {"size": 1}, r"size must be an odd integer between 3 and 1001"),
    ("gaussian", {"sigma": 1000}, r"sigma must be at most 200, got 1000"),
    ("gaussian", {"sgima": 2}, r"kernel 'gaussian' takes no parameter 'sgima' \(parameters: sigma, size\)"),
    ("laplacian", {"size": 5}, r"kernel 'laplacian' has a fixed size \(3, 3\)"),
    ("gabor", {"frequency": 0.7}, r"frequency must be at most 0.5, got 0.7"),
    ("gabor", {"wavelength": 1.5}, r"wavelength must be >= 2 pixels"),
    ("gabor", {"frequency": 0.2, "wavelength": 5}, r"give exactly one of frequency and wavelength"),
    ("gabor", {"theta": "up"}, r"theta must be a finite number, got 'up'"),
    ("dog_on", {"ratio": 0.8}, r"ratio must be > 1"),
    ("gabor", {"parity": "sine"}, r"parity must be 'even' or 'odd', got 'sine'"),
    ("gabor", {"parity": "odd", "phase": 1.0}, r"give parity or phase, not both"),
])
def test_bad_parameters_give_one_line_errors(name, params, message):
    with pytest.raises(KernelscopeError, match=message) as caught:
        get_kernel(name, **params)
    assert "\n" not in str(caught.value)


def test_kernel_names_unknown_family_suggests():
    with pytest.raises(KernelscopeError, match=r"unknown kernel family 'edges'; did you mean 'edge'"):
        kernel_names("edges")


def test_spec_strings_and_values():
    assert parse_kernel_spec("gabor:theta=90deg:wavelength=6") == ("gabor", {"theta": pytest.approx(math.pi / 2),
                                                                               "wavelength": 6})
    assert parse_value("pi/4") == pytest.approx(math.pi / 4)
    assert parse_value("2pi") == pytest.approx(2 * math.pi)
    assert parse_value("-45deg") == pytest.approx(-math.pi / 4)
    assert parse_value("word") == "word"
    with pytest.raises(KernelscopeError, match="unknown kernel 'gabr'; did you mean 'gabor'"):
        parse_kernel_spec("gabr:theta=1")
    with pytest.raises(KernelscopeError, match="kernel parameter must be key=value, got 'theta' in 'gabor:theta'"):
        parse_kernel_spec("gabor:theta")


def test_format_kernel_textbook():
    assert format_kernel(get_kernel("sobel_x")).splitlines()[1].split() == ["[", "-2", "0", "2", "]"]
    text = format_kernel(get_kernel("gaussian", sigma=1.0, size=3) * 0 + np.outer([1, 2, 1], [1, 2, 1]) / 16)
    assert text.splitlines()[0] == "1/16 x"
    assert text.splitlines()[2].split() == ["[", "2", "4", "2", "]"]
    floats = format_kernel(get_kernel("gaussian", sigma=1.0, size=3))
    assert "0.204" in floats and "x" not in floats.splitlines()[0]
