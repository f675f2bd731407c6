"""filter_image: known answers on synthetic images, colour handling, modes, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernelscope.errors import KernelscopeError
from kernelscope.kernels import edge_magnitude, filter_image, get_kernel
from kernelscope.kernels.filtering import magnitude_pairs


def vertical_step(height: int = 12, width: int = 16, at: int = 8) -> np.ndarray:
    step = np.zeros((height, width))
    step[:, at:] = 1.0  # dark left, bright right: a vertical edge
    return step


def test_vertical_step_lights_up_sobel_x_as_a_line_and_not_sobel_y():
    step = vertical_step()
    gx = filter_image(step, "sobel_x")
    gy = filter_image(step, "sobel_y")
    expected = np.zeros_like(step)
    expected[:, 7:9] = 4.0  # the two columns beside the edge, 1 + 2 + 1
    np.testing.assert_array_equal(gx, expected)
    np.testing.assert_array_equal(gy, 0.0)
    np.testing.assert_array_equal(filter_image(step.T, "sobel_y"), expected.T)  # and the transpose
    np.testing.assert_array_equal(filter_image(1.0 - step, "sobel_x"), -expected)  # bright-to-dark: negative


def test_zeros_give_zeros_and_constants_pass_smoothing_unchanged():
    flat = np.full((10, 11), 0.3)
    for name in ("sobel_x", "laplacian", "log", "dog_on", "gabor_odd"):
        np.testing.assert_allclose(filter_image(np.zeros((20, 20)), name), 0.0)
        np.testing.assert_allclose(filter_image(flat, name) if get_kernel(name).shape[0] <= 10 else 0.0, 0.0,
                                   atol=1e-12)
    for name in ("box", "gaussian", "identity"):
        np.testing.assert_allclose(filter_image(flat, name), 0.3, atol=1e-12)


def test_identity_returns_the_image_and_output_keeps_the_input_size(rng):
    image = rng.random((9, 13))
    np.testing.assert_allclose(filter_image(image, "identity", size=5), image)
    for name in ("roberts_d45", "sobel5_x", "gaussian"):
        assert filter_image(image, name).shape == image.shape


def test_matches_a_plain_numpy_reference_for_every_padding_mode(rng):
    image = rng.random((7, 9))
    kernel = rng.standard_normal((3, 5))
    modes = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap",
             "symmetric": "symmetric"}
    for ours, numpy_mode in modes.items():
        padded = np.pad(image, ((1, 1), (2, 2)), mode=numpy_mode)
        windows = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape)
        expected = np.einsum("ijuv,uv->ij", windows, kernel)
        np.testing.assert_allclose(filter_image(image, kernel, padding_mode=ours), expected, atol=1e-12)
    padded = np.pad(image, ((1, 1), (2, 2)), mode="constant", constant_values=0.5)
    expected = np.einsum("ijuv,uv->ij", np.lib.stride_tricks.sliding_window_view(padded, kernel.shape), kernel)
    np.testing.assert_allclose(filter_image(image, kernel, padding_mode="constant", pad_value=0.5), expected)


def test_convolve_flips_the_kernel(rng):
    image = rng.random((8, 8))
    kernel = rng.standard_normal((3, 3))
    np.testing.assert_allclose(filter_image(image, kernel, mode="convolve"),
                               filter_image(image, kernel[::-1, ::-1]), atol=1e-12)
    assert not np.allclose(filter_image(image, kernel, mode="convolve"), filter_image(image, kernel))


def test_colour_luminance_and_per_channel(rng):
    rgb = rng.random((10, 12, 3))
    per = filter_image(rgb, "sobel_x", color="per-channel")
    assert per.shape == (10, 12, 3)
    for c in range(3):
        np.testing.assert_allclose(per[..., c], filter_image(rgb[..., c], "sobel_x"), atol=1e-12)
    lum = filter_image(rgb, "sobel_x")
    assert lum.shape == (10, 12)
    # linear filter: filtering the luminance = luminance of the per-channel responses
    np.testing.assert_allclose(lum, per @ np.array([0.2125, 0.7154, 0.0721]), atol=1e-12)


def test_integer_images_are_scaled_and_samples_load_by_name():
    step8 = (vertical_step() * 255).astype(np.uint8)
    np.testing.assert_allclose(filter_image(step8, "sobel_x"), filter_image(vertical_step(), "sobel_x"))
    out = filter_image("sample:coins", "gabor:theta=90deg:wavelength=8")
    assert out.shape == (303, 384) and np.abs(out).max() > 0.01


def test_kernel_spec_parameters_reach_the_kernel(rng):
    image = rng.random((20, 20))
    np.testing.assert_allclose(filter_image(image, "gaussian:sigma=2"), filter_image(image, "gaussian", sigma=2.0))
    np.testing.assert_allclose(filter_image(image, "gaussian:sigma=2"),
                               filter_image(image, get_kernel("gaussian", sigma=2.0)))


def test_edge_magnitude_is_rotation_invariant_on_a_disc():
    yy, xx = np.mgrid[-20:21, -20:21]
    disc = (xx**2 + yy**2 <= 12**2).astype(float)
    magnitude = edge_magnitude(disc, "scharr")
    assert magnitude.shape == disc.shape and (magnitude >= 0).all()
    np.testing.assert_allclose(magnitude, np.rot90(magnitude), atol=1e-12)
    assert magnitude[20, 20] == 0 and magnitude[20, 32] > 10  # zero inside, strong on the rim


def test_magnitude_pairs_finds_x_y_pairs():
    assert magnitude_pairs(["sobel_y", "prewitt_x", "sobel_x", "prewitt_y", "laplacian"]) == [
        ("prewitt", "prewitt_x", "prewitt_y"), ("sobel", "sobel_x", "sobel_y")]
    assert magnitude_pairs(["gabor", "sobel_x"]) == []


@pytest.mark.parametrize("call,message", [
    (lambda: filter_image(np.zeros((2, 8)), "sobel_x"),
     r"image of 2x8 pixels is smaller than the 3x3 kernel sobel_x; use a larger image or a smaller kernel"),
    (lambda: filter_image(np.zeros((20, 20)), "gaussian", sigma=5),
     r"image of 20x20 pixels is smaller than the 41x41 kernel gaussian:sigma=5"),
    (lambda: filter_image(np.zeros((0, 5)), "sobel_x"), r"image: the image is empty \(shape \(0, 5\)\)"),
    (lambda: filter_image(np.zeros((5, 5, 5)), "sobel_x"), r"image must have shape \(H, W\) or \(H, W, 3\)"),
    (lambda: filter_image(np.full((5, 5), 2.0), "sobel_x"), r"float pixel values must lie in \[0, 1\], got \[2, 2\]"),
    (lambda: filter_image(np.zeros((5, 5)), "sobel_x", padding_mode="mirror"),
     r"padding_mode: unknown padding mode 'mirror'"),
    (lambda: filter_image(np.zeros((5, 5)), "sobel_x", color="rgb"), r"color must be 'luminance' or 'per-channel'"),
    (lambda: filter_image(np.zeros((5, 5)), "sobel_x", mode="conv"), r"mode must be 'correlate' or 'convolve'"),
    (lambda: filter_image(np.zeros((5, 5)), "sobl_x"), r"unknown kernel 'sobl_x'; did you mean 'sobel_x'"),
    (lambda: filter_image(np.zeros((5, 5)), np.ones(3)), r"kernel must be a non-empty 2-D array"),
    (lambda: filter_image(np.zeros((5, 5)), np.ones((3, 3)), sigma=1),
     r"kernel parameters \(sigma\) apply only to named kernels"),
    (lambda: filter_image(np.zeros((5, 5)), np.full((3, 3), np.nan)), r"kernel contains NaN"),
    (lambda: edge_magnitude(np.zeros((5, 5)), "sobell"), r"unknown edge family 'sobell'; did you mean 'sobel'"),
])
def test_bad_input_gives_one_line_errors(call, message):
    with pytest.raises(KernelscopeError, match=message) as caught:
        call()
    assert "\n" not in str(caught.value)


# scipy.ndimage names for our padding modes (odd kernels: scipy centres them as we do)
_SCIPY_MODES = {"zeros": "constant", "replicate": "nearest", "circular": "wrap", "symmetric": "reflect",
                "reflect": "mirror"}


@settings(max_examples=40, deadline=None)
@given(height=st.integers(3, 12), width=st.integers(3, 12), kh=st.sampled_from([1, 3, 5]),
       kw=st.sampled_from([1, 3, 5]), padding_mode=st.sampled_from(sorted(_SCIPY_MODES)),
       mode=st.sampled_from(["correlate", "convolve"]), seed=st.integers(0, 2**16))
def test_filter_image_equals_scipy_ndimage_for_any_odd_kernel(height, width, kh, kw, padding_mode, mode, seed):
    from scipy import ndimage

    generator = np.random.default_rng(seed)
    kh, kw = min(kh, height), min(kw, width)
    kh -= 1 - kh % 2
    kw -= 1 - kw % 2
    image = generator.random((height, width))
    kernel = generator.standard_normal((kh, kw))
    reference = getattr(ndimage, mode)(image, kernel, mode=_SCIPY_MODES[padding_mode])
    np.testing.assert_allclose(filter_image(image, kernel, padding_mode=padding_mode, mode=mode), reference,
                               atol=1e-10)
