"""Bad input: one-line KernelscopeError naming the parameter, the value and what is allowed."""

from __future__ import annotations

import numpy as np
import pytest

from kernelscope.errors import KernelscopeError
from kernelscope.ops import convolve2d, correlate2d, output_shape, pad2d

X = np.ones((1, 2, 5, 5))
K = np.ones((4, 2, 3, 3))

BAD_CALLS = [
    ("ragged x", lambda: correlate2d([[1, 2], [3]], [[1]]),
     r"^x must be a rectangular array of numbers; got a ragged nested sequence"),
    ("ragged kernel", lambda: correlate2d([[1, 2], [3, 4]], [[1, 2], [3]]),
     r"^kernel must be a rectangular array of numbers; got a ragged"),
    ("strings", lambda: correlate2d([["a", "b"], ["c", "d"]], [[1]]),
     r"^x must hold real numbers; got dtype <U1 \(e\.g\. np\.str_\('a'\)\)"),
    ("None entries", lambda: correlate2d([[1, None], [2, 3]], [[1]]),
     r"^x must hold real numbers; got non-numeric entries"),
    ("complex", lambda: correlate2d(np.ones((3, 3)) * 1j, [[1]]),
     r"^x must hold real numbers; got dtype complex128"),
    ("empty x", lambda: correlate2d(np.ones((0, 3)), [[1]]),
     r"^x must not be empty; got shape \(0, 3\)"),
    ("empty kernel", lambda: correlate2d(np.ones((3, 3)), np.ones((2, 0))),
     r"^kernel must not be empty; got shape \(2, 0\)"),
    ("nan", lambda: correlate2d([[1.0, np.nan], [0.0, 1.0]], [[1]]),
     r"^x contains nan at index \(0, 1\); only finite numbers are allowed"),
    ("inf kernel", lambda: correlate2d(np.ones((3, 3)), [[np.inf]]),
     r"^kernel contains inf at index \(0, 0\); only finite"),
    ("x 3-D", lambda: correlate2d(np.ones((2, 5, 5)), np.ones((3, 3))),
     r"^x must be 2-D \(H, W\) or 4-D \(N, C, H, W\); got 3-D shape \(2, 5, 5\)"),
    ("x 1-D", lambda: correlate2d(np.ones(5), np.ones((3, 3))),
     r"^x must be 2-D \(H, W\) or 4-D \(N, C, H, W\); got 1-D shape \(5,\)"),
    ("kernel 3-D", lambda: correlate2d(X, np.ones((2, 3, 3))),
     r"^kernel must be 2-D \(kh, kw\) or 4-D \(O, C/groups, kh, kw\); got 3-D"),
    ("too large", lambda: correlate2d(np.ones((4, 4)), np.ones((5, 5))),
     r"^kernel 5x5 is larger than the padded input 4x4 \(input 4x4, padding \(0, 0, 0, 0\)\)"),
    ("too large dilated", lambda: correlate2d(np.ones((4, 4)), np.ones((3, 3)), dilation=2),
     r"^kernel 3x3 \(effective size 5x5 with dilation \(2, 2\)\) is larger than the padded input 4x4"),
    ("channel mismatch", lambda: correlate2d(X, np.ones((4, 3, 3, 3))),
     r"^kernel shape \(4, 3, 3, 3\) needs C/groups = 3 input channels per group, but x has C=2 "
     r"channels and groups=1 \(C/groups = 2\)"),
    ("groups not dividing C", lambda: correlate2d(X, np.ones((4, 1, 3, 3)), groups=3),
     r"^groups=3 must divide the input channels C=2"),
    ("groups not dividing O", lambda: correlate2d(X, np.ones((3, 1, 3, 3)), groups=2),
     r"^groups=2 must divide the output channels O=3"),
    ("groups zero", lambda: correlate2d(X, K, groups=0),
     r"^groups must be a positive int; got 0"),
    ("stride zero", lambda: correlate2d(X, K, stride=0),
     r"^stride must be a positive int or a pair of positive ints; got 0"),
    ("stride negative pair", lambda: correlate2d(X, K, stride=(1, -2)),
     r"^stride must be a positive int or a pair of positive ints; got \(1, -2\)"),
    ("stride float", lambda: correlate2d(X, K, stride=1.5),
     r"^stride must be a positive int or a pair of positive ints; got 1.5"),
    ("dilation zero", lambda: correlate2d(X, K, dilation=0),
     r"^dilation must be a positive int or a pair of positive ints; got 0"),
    ("unknown padding", lambda: correlate2d(X, K, padding="vaild"),
     r"^padding: unknown padding 'vaild'; did you mean 'valid'\? \(valid: full, same, valid\), "
     r"or an int"),
    ("negative padding", lambda: correlate2d(X, K, padding=-1),
     r"^padding must be .* \(no negative amounts\); got -1"),
    ("padding of 3 values", lambda: correlate2d(X, K, padding=(1, 2, 3)),
     r"^padding must be 'valid', 'same', 'full', a non-negative int, \(ph, pw\) or "
     r"\(top, bottom, left, right\); got \(1, 2, 3\)"),
    ("unknown mode", lambda: correlate2d(X, K, padding=1, padding_mode="reflection"),
     r"^padding_mode: unknown padding mode 'reflection'; did you mean 'reflect'\?"),
    ("unknown method", lambda: correlate2d(X, K, method="fast"),
     r"^method: unknown method 'fast'; did you mean 'fft', 'auto'\? \(valid: auto, direct, fft, im2col, shift\)"),
    ("reflect too large", lambda: correlate2d(np.ones((3, 3)), np.ones((3, 3)), padding=3,
                                              padding_mode="reflect"),
     r"^reflect padding of 3 on the top is larger than the input allows: reflect adds at most "
     r"height - 1 = 2 pixels per side"),
    ("bias shape", lambda: correlate2d(X, K, bias=np.ones(3)),
     r"^bias must have shape \(4,\), one value per output channel; got shape \(3,\)"),
    ("bias nan", lambda: correlate2d(X, K, bias=[0, 0, np.nan, 0]),
     r"^bias contains nan at index \(2,\)"),
    ("pad value nan", lambda: correlate2d(X, K, padding=1, padding_mode="constant", pad_value=np.nan),
     r"^pad_value must be a finite real number; got nan"),
    ("pad value text", lambda: correlate2d(X, K, padding=1, padding_mode="constant", pad_value="1"),
     r"^pad_value must be a finite real number; got '1'"),
    ("int64 overflow", lambda: correlate2d(np.full((3, 3), 2**40), np.full((2, 2), 2**21)),
     r"^integer inputs this large could overflow int64 \(max \|x\| = 1099511627776, largest sum of "
     r"\|kernel\| = 8388608\); pass float64 arrays for a rounded result"),
    ("convolve too", lambda: convolve2d(np.ones((2, 2)), np.ones((3, 3))),
     r"^kernel 3x3 is larger than the padded input 2x2"),
    ("pad2d name without kernel", lambda: pad2d(np.ones((3, 3)), "same"),
     r"^padding='same' needs kernel_shape=\(kh, kw\)"),
    ("output_shape too large", lambda: output_shape((2, 2), (3, 3)),
     r"^kernel 3x3 is larger than the padded input 2x2"),
]


@pytest.mark.parametrize("call,pattern", [(c, p) for _, c, p in BAD_CALLS],
                         ids=[name for name, _, _ in BAD_CALLS])
def test_bad_input_gives_one_line_error(call, pattern):
    with pytest.raises(KernelscopeError, match=pattern) as info:
        call()
    assert "\n" not in str(info.value)


def test_more_padding_makes_a_large_kernel_fit():
    assert correlate2d(np.ones((4, 4)), np.ones((5, 5)), padding=1).shape == (2, 2)


def test_torch_tensors_are_read_or_refused_cleanly():
    import torch

    assert correlate2d(torch.ones(3, 3), [[2]]).tolist() == [[2.0] * 3] * 3
    with pytest.raises(KernelscopeError, match=r"^x cannot be read as a NumPy array: Can't call numpy\(\) "
                                               r"on Tensor that requires grad"):
        correlate2d(torch.ones(3, 3, requires_grad=True), [[1]])


@pytest.mark.parametrize("value,minimum,expected", [
    (0, 0, (0, 0)), ((0, 2), 0, (0, 2)), ([3, 1], 1, (3, 1)), (np.int64(2), 1, (2, 2)), (5, 5, (5, 5)),
])
def test_as_pair_accepts(value, minimum, expected):
    from kernelscope.ops.shapes import as_pair

    assert as_pair(value, "p", minimum=minimum) == expected


@pytest.mark.parametrize("value,minimum,pattern", [
    (-1, 0, r"^padding must be a non-negative int or a pair of non-negative ints; got -1$"),
    ((0, 1), 1, r"^stride must be a positive int or a pair of positive ints; got \(0, 1\)$"),
    ((1, 2, 3), 0, r"^padding must be a non-negative int or a pair of non-negative ints; got \(1, 2, 3\)$"),
    (True, 0, r"^padding must be a non-negative int or a pair of non-negative ints; got True$"),
    (4, 5, r"^size must be an int >= 5 or a pair of ints >= 5; got 4$"),
])
def test_as_pair_refuses(value, minimum, pattern):
    from kernelscope.ops.shapes import as_pair

    name = {0: "padding", 1: "stride"}.get(minimum, "size")
    with pytest.raises(KernelscopeError, match=pattern):
        as_pair(value, name, minimum=minimum)
