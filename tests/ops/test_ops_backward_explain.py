"""explain_backward: the traced gradients are the true gradients, and the text says which is which."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kernelscope.errors import KernelscopeError
from kernelscope.ops.explain_backward import explain_backward, format_backward


def _torch_grads(x, kernel, g, *, stride, pads, padding_mode, dilation, convolve=False):
    x_t = torch.tensor(np.asarray(x, float), requires_grad=True)
    k_t = torch.tensor(np.asarray(kernel, float), requires_grad=True)
    b_t = torch.zeros(k_t.shape[0], dtype=torch.float64, requires_grad=True)
    top, bottom, left, right = pads
    mode = {"zeros": "constant"}.get(padding_mode, padding_mode)
    xp = F.pad(x_t, (left, right, top, bottom), mode=mode)
    weight = torch.flip(k_t, (-2, -1)) if convolve else k_t
    out = F.conv2d(xp, weight, b_t, stride=stride, dilation=dilation)
    out.backward(torch.tensor(np.asarray(g, float)))
    return x_t.grad.numpy(), k_t.grad.numpy(), b_t.grad.numpy()


@pytest.mark.parametrize("options", [
    dict(),
    dict(stride=2, padding=1),
    dict(padding=(1, 0, 2, 1), padding_mode="reflect"),
    dict(padding=1, padding_mode="circular", dilation=2),
    dict(padding="same", padding_mode="replicate", mode="convolve"),
    dict(stride=(1, 2), mode="convolve"),
])
def test_traced_gradients_equal_torch_autograd(rng, options):
    x = rng.integers(-4, 5, size=(1, 2, 5, 6))
    kernel = rng.integers(-2, 3, size=(2, 2, 3, 2))
    probe = explain_backward(x, kernel, **options)  # to learn the output shape
    g = rng.integers(-3, 4, size=np.asarray(probe.forward_output).shape)
    trace = explain_backward(x, kernel, g, **options)
    assert trace.engine_agrees
    gx, gk, gb = _torch_grads(x, kernel, g, stride=trace.stride, pads=trace.padding,
                              padding_mode=trace.padding_mode, dilation=trace.dilation,
                              convolve=trace.mode == "convolve")
    np.testing.assert_array_equal(trace.input_grad, gx)  # integers: exact
    np.testing.assert_array_equal(trace.kernel_grad, gk)
    np.testing.assert_array_equal(trace.bias_grad, gb)
    json.dumps(trace.to_dict())  # plain JSON


def test_weighted_windows_add_up_to_the_kernel_gradient(rng):
    x = rng.normal(size=(4, 5))
    kernel = rng.normal(size=(2, 3))
    g = rng.normal(size=(3, 3))
    trace = explain_backward(x, kernel, g)
    total = sum(np.asarray(ww.contribution) for ww in trace.weighted_windows)
    np.testing.assert_allclose(total, trace.kernel_grad, rtol=1e-12)
    assert len(trace.weighted_windows) == 9
    first = trace.weighted_windows[0]
    np.testing.assert_allclose(first.contribution, g[0, 0] * x[:2, :3])


def test_text_states_which_gradient_is_a_correlation_and_which_a_convolution():
    text = format_backward(explain_backward([[1, 2, 3], [4, 5, 6], [7, 8, 9]], [[1, 0], [0, -1]]))
    assert "dL/dK     is a CROSS-CORRELATION of the input with g" in text
    assert "dL/dinput is a TRUE CONVOLUTION of g with K: g, zero-padded, slides under flip(K)" in text
    assert "  dL/dK[0, 0] = 1*1 + 2*1 + 4*1 + 5*1 = 12" in text
    assert "  dL/dbias = 1 + 1 + 1 + 1 = 4" in text
    assert "check: equal to kernelscope.ops.backward.correlate2d_backward: True" in text
    assert text.rstrip().endswith("True")


def test_text_shows_the_stride_dilation_and_the_padding_adjoint():
    text = format_backward(explain_backward(np.arange(16).reshape(4, 4), [[1, 2], [3, 4]], stride=2,
                                            padding=1, padding_mode="replicate"))
    assert "g is first spread out with stride - 1 zeros between its entries" in text
    assert "border (-1, -1) copied input (0, 0): adds " in text
    conv_text = format_backward(explain_backward([[1, 2], [3, 4]], [[1, 0], [0, 2]], mode="convolve"))
    assert "flipped back because the forward slid flip(K)" in conv_text


def test_grad_out_of_the_wrong_shape_is_a_one_line_error():
    with pytest.raises(KernelscopeError, match=r"^grad_out has shape \(2, 3\), but the forward output of this "
                                               r"call has shape \(2, 2\): give one gradient value per output pixel$"):
        explain_backward(np.zeros((3, 3)), np.zeros((2, 2)), np.zeros((2, 3)))


def test_large_inputs_are_refused_with_the_sizes():
    with pytest.raises(KernelscopeError, match=r"^explain --backward is for small inputs: this call has 784 output "
                                               r"positions"):
        explain_backward(np.zeros((30, 30)), np.zeros((3, 3)))


def test_cli_explain_backward(cli_runner):
    result = cli_runner("explain", "--input", "1 2 3; 4 5 6; 7 8 9", "--kernel", "1 0; 0 -1", "--backward",
                        "--grad-output", "1 0; 0 2")
    assert result.exit_code == 0, result.output
    assert "output gradient g (given):" in result.output
    # g convolved with K: dX[1, 1] = g[0, 0]*K[1, 1] + g[1, 1]*K[0, 0] = -1 + 2
    assert "dL/dinput:\n   1  0  0\n   0  1  0\n   0  0 -2\n" in result.output
    as_json = cli_runner("explain", "--input", "1 2; 3 4", "--kernel", "1", "--backward", "--json")
    assert as_json.exit_code == 0
    assert json.loads(as_json.output)["kernel_grad"] == [[10]]


def test_cli_explain_backward_bad_gradient_shape(cli_runner):
    result = cli_runner("explain", "--input", "1 2 3; 4 5 6; 7 8 9", "--kernel", "1 0; 0 -1", "--backward",
                        "--grad-output", "1 2 3")
    assert result.exit_code == 2
    assert result.output == ("Error: grad_out has shape (1, 3), but the forward output of this call has shape "
                             "(2, 2): give one gradient value per output pixel\n")


def test_cli_explain_backward_with_stride_padding_and_convolve(cli_runner):
    result = cli_runner("explain", "--input", "1 2 3 4; 5 6 7 8; 9 10 11 12; 13 14 15 16", "--kernel", "1 2; 3 4",
                        "--backward", "--stride", "2", "--padding", "1", "--padding-mode", "reflect",
                        "--mode", "convolve")
    assert result.exit_code == 0, result.output
    assert "g is first spread out with stride - 1 zeros between its entries" in result.output
    assert "every border pixel was a copy of an input pixel" in result.output
    assert result.output.rstrip().endswith("check: equal to kernelscope.ops.backward.convolve2d_backward: True")
