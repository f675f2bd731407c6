"""The engine's backward pass against torch.autograd (property-based) and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernelscope.errors import KernelscopeError
from kernelscope.ops import convolve2d, correlate2d, resolve_padding
from kernelscope.ops.backward import (
    convolve2d_backward,
    correlate2d_backward,
    dilate2d,
    pad2d_adjoint,
)

_TORCH_MODE = {"reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def torch_reference(x, kernel, grad_out, *, bias, stride, padding, padding_mode, pad_value, dilation,
                    groups, flip=False):
    """Gradients by torch.autograd of F.pad + F.conv2d (float64)."""
    x_t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    k_t = torch.tensor(kernel, dtype=torch.float64, requires_grad=True)
    b_t = torch.zeros(kernel.shape[0], dtype=torch.float64, requires_grad=True) if bias else None
    top, bottom, left, right = resolve_padding(padding, x.shape[-2:], kernel.shape[-2:], stride=stride,
                                               dilation=dilation)
    if padding_mode in _TORCH_MODE:
        xp = F.pad(x_t, (left, right, top, bottom), mode=_TORCH_MODE[padding_mode])
    else:
        value = pad_value if padding_mode == "constant" else 0.0
        xp = F.pad(x_t, (left, right, top, bottom), mode="constant", value=value)
    weight = torch.flip(k_t, dims=(-2, -1)) if flip else k_t
    out = F.conv2d(xp, weight, b_t, stride=stride, dilation=dilation, groups=groups)
    out.backward(torch.tensor(grad_out, dtype=torch.float64))
    return out.detach().numpy(), x_t.grad.numpy(), k_t.grad.numpy(), None if b_t is None else b_t.grad.numpy()


@st.composite
def configurations(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg = draw(st.integers(1, 2))
    og = draw(st.integers(1, 2))
    n = draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    h, w = draw(st.integers(3, 9)), draw(st.integers(3, 9))
    mode = draw(st.sampled_from(["zeros", "constant", "reflect", "replicate", "circular"]))
    limit = min(h, w) - 1  # reflect allows at most size - 1; keep every mode inside torch's limits
    padding = draw(st.one_of(
        st.just("valid"),
        st.integers(0, min(limit, 3)),
        st.tuples(*[st.integers(0, min(limit, 3))] * 4),
        st.just("same"),
    ))
    pads = resolve_padding(padding, (h, w), (kh, kw), stride=stride, dilation=dilation)
    # the dilated kernel must fit the padded input, and named paddings must respect torch's pad limits
    if (dilation[0] * (kh - 1) + 1 > h + pads[0] + pads[1] or dilation[1] * (kw - 1) + 1 > w + pads[2] + pads[3]
            or max(pads) > limit):
        padding = "valid"
        kh, kw = min(kh, h), min(kw, w)
        dilation = (1, 1)
    return dict(shape=(n, cg * groups, h, w), kshape=(og * groups, cg, kh, kw), stride=stride,
                dilation=dilation, padding=padding, padding_mode=mode, groups=groups,
                bias=draw(st.booleans()), pad_value=draw(st.sampled_from([0.0, 1.5, -2.0])))


def _random_case(config, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=config["shape"])
    kernel = rng.normal(size=config["kshape"])
    options = {k: config[k] for k in ("stride", "padding", "padding_mode", "pad_value", "dilation", "groups")}
    out = correlate2d(x, kernel, **options)
    grad_out = rng.normal(size=out.shape)
    return x, kernel, grad_out, options


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configurations(), st.integers(0, 2**31 - 1))
def test_correlate2d_backward_matches_torch_autograd(config, seed):
    x, kernel, grad_out, options = _random_case(config, seed)
    out_t, gx_t, gk_t, gb_t = torch_reference(x, kernel, grad_out, bias=config["bias"], **options)
    np.testing.assert_allclose(correlate2d(x, kernel, **options), out_t, rtol=1e-10, atol=1e-10)
    gx, gk, gb = correlate2d_backward(x, kernel, grad_out, bias=config["bias"], **options)
    assert gx.shape == x.shape and gk.shape == kernel.shape
    np.testing.assert_allclose(gx, gx_t, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(gk, gk_t, rtol=1e-9, atol=1e-9)
    if config["bias"]:
        np.testing.assert_allclose(gb, gb_t, rtol=1e-9, atol=1e-9)
    else:
        assert gb is None


@settings(max_examples=40, deadline=None)
@given(configurations(), st.integers(0, 2**31 - 1))
def test_convolve2d_backward_matches_torch_autograd(config, seed):
    x, kernel, grad_out, options = _random_case(config, seed)
    np.testing.assert_allclose(convolve2d(x, kernel, **options),
                               torch_reference(x, kernel, grad_out, bias=False, flip=True, **options)[0],
                               rtol=1e-10, atol=1e-10)
    _, gx_t, gk_t, _ = torch_reference(x, kernel, grad_out, bias=False, flip=True, **options)
    gx, gk, gb = convolve2d_backward(x, kernel, grad_out, bias=False, **options)
    np.testing.assert_allclose(gx, gx_t, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(gk, gk_t, rtol=1e-9, atol=1e-9)
    assert gb is None


@pytest.mark.parametrize("method", ["direct", "im2col", "fft"])
def test_every_engine_method_gives_the_same_gradients(rng, method):
    x = rng.normal(size=(2, 4, 7, 6))
    kernel = rng.normal(size=(6, 2, 3, 2))
    options = dict(stride=(2, 1), padding=(1, 2), padding_mode="reflect", dilation=(1, 2), groups=2)
    grad_out = rng.normal(size=correlate2d(x, kernel, **options).shape)
    _, gx_t, gk_t, _ = torch_reference(x, kernel, grad_out, bias=False, pad_value=0.0, **options)
    gx, gk, _ = correlate2d_backward(x, kernel, grad_out, method=method, **options)
    np.testing.assert_allclose(gx, gx_t, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(gk, gk_t, rtol=1e-9, atol=1e-9)


def _loss(x, kernel, bias, weights, options):
    return float(np.sum(correlate2d(x, kernel, bias, **options) * weights))


@pytest.mark.parametrize("options", [
    dict(),
    dict(stride=2, padding=1, padding_mode="circular"),
    dict(padding="same", padding_mode="replicate", dilation=2),
    dict(padding=(0, 1, 2, 0), padding_mode="reflect", groups=2),
])
def test_gradients_agree_with_central_finite_differences(rng, options):
    x = rng.normal(size=(1, 2, 6, 5))
    kernel = rng.normal(size=(2, 2 // options.get("groups", 1), 3, 3))
    bias = rng.normal(size=2)
    weights = rng.normal(size=correlate2d(x, kernel, bias, **options).shape)  # loss = sum(out * weights)
    gx, gk, gb = correlate2d_backward(x, kernel, weights, **options)
    eps = 1e-6
    for array, grad in ((x, gx), (kernel, gk), (bias, gb)):
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + eps
            up = _loss(x, kernel, bias, weights, options)
            array[index] = saved - eps
            down = _loss(x, kernel, bias, weights, options)
            array[index] = saved
            numeric[index] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)


def test_plain_2d_case_integers_are_exact():
    x = np.arange(25).reshape(5, 5)
    kernel = np.array([[1, 2], [3, 4]])
    grad_out = np.arange(16).reshape(4, 4) - 8
    gx, gk, gb = correlate2d_backward(x, kernel, grad_out)
    assert gx.dtype.kind == "i" and gk.dtype.kind == "i"
    _, gx_t, gk_t, gb_t = torch_reference(x[None, None].astype(float), kernel[None, None].astype(float),
                                          grad_out[None, None].astype(float), bias=True, stride=1,
                                          padding="valid", padding_mode="zeros", pad_value=0.0, dilation=1,
                                          groups=1)
    np.testing.assert_array_equal(gx, gx_t[0, 0])
    np.testing.assert_array_equal(gk, gk_t[0, 0])
    assert gb.shape == () and gb == gb_t[0]


def test_kernel_gradient_is_a_cross_correlation_and_input_gradient_a_true_convolution(rng):
    """The identities stated in the docs, checked directly for stride 1, no padding."""
    x = rng.normal(size=(6, 7))
    kernel = rng.normal(size=(3, 2))
    grad_out = rng.normal(size=(4, 6))
    gx, gk, _ = correlate2d_backward(x, kernel, grad_out, bias=False)
    np.testing.assert_allclose(gk, correlate2d(x, grad_out), rtol=1e-12)
    np.testing.assert_allclose(gx, convolve2d(grad_out, kernel, padding="full"), rtol=1e-12)
    # and it is NOT a cross-correlation with the unflipped kernel (the flip matters)
    assert not np.allclose(gx, correlate2d(grad_out, kernel, padding="full"))


def test_dilate2d_and_pad_adjoint_are_adjoints(rng):
    """<pad(x), g> == <x, pad_adjoint(g)> for every mode: the defining property of an adjoint."""
    from kernelscope.ops import pad2d

    x = rng.normal(size=(2, 4, 5))
    pads = (2, 1, 3, 4)
    for mode in ("zeros", "reflect", "replicate", "circular"):
        g = rng.normal(size=(2, 4 + 3, 5 + 7))
        lhs = np.sum(pad2d(x, pads, mode) * g)
        rhs = np.sum(x * pad2d_adjoint(g, (4, 5), pads, mode))
        assert lhs == pytest.approx(rhs, rel=1e-12), mode
    wide = (6, 0, 7, 1)  # circular padding wider than the input wraps around more than once
    g = rng.normal(size=(2, 4 + 6, 5 + 8))
    assert np.sum(pad2d(x, wide, "circular") * g) == pytest.approx(
        np.sum(x * pad2d_adjoint(g, (4, 5), wide, "circular")), rel=1e-12)
    assert dilate2d(np.ones((2, 3)), (1, 3)).shape == (2, 7)


def test_wrong_grad_out_shape_is_a_one_line_error():
    x = np.zeros((2, 3, 8, 8))
    kernel = np.zeros((4, 3, 3, 3))
    with pytest.raises(KernelscopeError, match=(
            r"^grad_out has shape \(2, 4, 5, 5\), but the forward output for x \(2, 3, 8, 8\) and kernel "
            r"\(4, 3, 3, 3\) \(stride \(1, 1\), padding 'valid', dilation \(1, 1\)\) has shape "
            r"\(2, 4, 6, 6\)$")):
        correlate2d_backward(x, kernel, np.zeros((2, 4, 5, 5)))


def test_mismatched_groups_are_a_one_line_error():
    with pytest.raises(KernelscopeError, match=r"kernel of shape \(4, 2, 3, 3\) with groups=1 does not fit "
                                               r"input of shape \(1, 3, 8, 8\)"):
        correlate2d_backward(np.zeros((1, 3, 8, 8)), np.zeros((4, 2, 3, 3)), np.zeros((1, 4, 6, 6)))
    with pytest.raises(KernelscopeError, match=r"groups must be a positive int; got 0"):
        correlate2d_backward(np.zeros((1, 3, 8, 8)), np.zeros((4, 3, 3, 3)), np.zeros((1, 4, 6, 6)), groups=0)


def test_unknown_padding_mode_suggests_the_valid_ones():
    with pytest.raises(KernelscopeError, match=r"unknown padding mode 'reflekt'; did you mean 'reflect'"):
        correlate2d_backward(np.zeros((4, 4)), np.zeros((2, 2)), np.zeros((3, 3)), padding_mode="reflekt")


def test_non_finite_gradient_is_a_one_line_error_naming_it():
    grad = np.ones((3, 3))
    grad[1, 2] = np.nan
    with pytest.raises(KernelscopeError, match=r"^grad_out contains nan at index \(1, 2\); only finite numbers"):
        correlate2d_backward(np.zeros((4, 4)), np.zeros((2, 2)), grad)


def test_gradients_have_the_shapes_of_what_was_given(rng):
    """A 2-D image with a 4-D kernel bank (and a batch with a 2-D kernel) get gradients of their own shapes."""
    x2, bank = rng.normal(size=(6, 6)), rng.normal(size=(3, 1, 3, 3))
    gx, gk, gb = correlate2d_backward(x2, bank, np.ones((1, 3, 4, 4)))
    assert gx.shape == (6, 6) and gk.shape == (3, 1, 3, 3) and gb.shape == (3,)
    _, gx_t, gk_t, _ = torch_reference(x2[None, None], bank, np.ones((1, 3, 4, 4)), bias=False, stride=1,
                                       padding="valid", padding_mode="zeros", pad_value=0.0, dilation=1, groups=1)
    np.testing.assert_allclose(gx, gx_t[0, 0], rtol=1e-10)
    np.testing.assert_allclose(gk, gk_t, rtol=1e-10)
    batch, k2 = rng.normal(size=(2, 1, 5, 5)), rng.normal(size=(2, 2))
    gx, gk, _ = correlate2d_backward(batch, k2, np.ones((2, 1, 4, 4)))
    assert gx.shape == (2, 1, 5, 5) and gk.shape == (2, 2)
