"""The engine against PyTorch and SciPy, on random shapes, and on cases with a known answer."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kernelscope.errors import KernelscopeError
from kernelscope.ops import convolve2d, correlate2d, flip_kernel, output_shape, pad2d
from kernelscope.ops.shapes import resolve_padding

METHODS = ["direct", "im2col", "shift", "fft", "auto"]
TORCH_MODE = {"zeros": "constant", "constant": "constant", "reflect": "reflect",
              "replicate": "replicate", "circular": "circular"}


def torch_reference(x, kernel, bias, *, stride, pads, mode, pad_value, dilation, groups):
    """F.pad + F.conv2d in float64: what a PyTorch layer computes."""
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64))
    kt = torch.from_numpy(np.asarray(kernel, dtype=np.float64))
    bt = None if bias is None else torch.from_numpy(np.asarray(bias, dtype=np.float64))
    top, bottom, left, right = pads
    if any(pads):
        value = pad_value if mode == "constant" else 0.0
        if TORCH_MODE[mode] == "constant":
            xt = F.pad(xt, (left, right, top, bottom), mode="constant", value=value)
        else:
            xt = F.pad(xt, (left, right, top, bottom), mode=TORCH_MODE[mode])
    return F.conv2d(xt, kt, bt, stride=stride, dilation=dilation, groups=groups).numpy()


@st.composite
def layer_cases(draw):
    n = draw(st.integers(1, 2))
    groups = draw(st.integers(1, 3))
    cg = draw(st.integers(1, 3))
    og = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = draw(st.one_of(
        st.sampled_from(["valid", "same", "full"]),
        st.integers(0, 2),
        st.tuples(st.integers(0, 2), st.integers(0, 2)),
        st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
    ))
    mode = draw(st.sampled_from(["zeros", "constant", "reflect", "replicate", "circular"]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    use_bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    return dict(n=n, groups=groups, cg=cg, og=og, kh=kh, kw=kw, h=h, w=w, stride=stride,
                dilation=dilation, padding=padding, mode=mode, dtype=dtype, use_bias=use_bias,
                seed=seed)


def _fits(case) -> tuple[int, int, int, int] | None:
    try:
        output_shape((case["h"], case["w"]), (case["kh"], case["kw"]), stride=case["stride"],
                     padding=case["padding"], dilation=case["dilation"])
    except KernelscopeError:
        return None
    pads = resolve_padding(case["padding"], (case["h"], case["w"]), (case["kh"], case["kw"]),
                           stride=case["stride"], dilation=case["dilation"])
    top, bottom, left, right = pads
    if case["mode"] == "reflect" and max(top, bottom) >= case["h"] or \
            case["mode"] == "reflect" and max(left, right) >= case["w"]:
        return None
    if case["mode"] == "circular" and (max(top, bottom) > case["h"] or max(left, right) > case["w"]):
        return None  # torch's circular pad allows at most one period
    return pads


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(case=layer_cases())
def test_matches_torch_conv2d_for_every_method(case):
    pads = _fits(case)
    assume(pads is not None)
    rng = np.random.default_rng(case["seed"])
    dtype = case["dtype"]
    c, o = case["groups"] * case["cg"], case["groups"] * case["og"]
    x = rng.standard_normal((case["n"], c, case["h"], case["w"])).astype(dtype)
    kernel = rng.standard_normal((o, case["cg"], case["kh"], case["kw"])).astype(dtype)
    bias = rng.standard_normal(o).astype(dtype) if case["use_bias"] else None
    pad_value = 0.75
    expected = torch_reference(x, kernel, bias, stride=case["stride"], pads=pads,
                               mode=case["mode"], pad_value=pad_value,
                               dilation=case["dilation"], groups=case["groups"])
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for method in METHODS:
        got = correlate2d(x, kernel, bias, stride=case["stride"], padding=case["padding"],
                          padding_mode=case["mode"], pad_value=pad_value,
                          dilation=case["dilation"], groups=case["groups"], method=method)
        assert got.dtype == dtype, method
        assert got.shape == expected.shape, method
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol, err_msg=method)
        flipped = convolve2d(x, flip_kernel(kernel), bias, stride=case["stride"],
                             padding=case["padding"], padding_mode=case["mode"],
                             pad_value=pad_value, dilation=case["dilation"],
                             groups=case["groups"], method=method)
        np.testing.assert_allclose(flipped, expected, rtol=tol, atol=tol, err_msg=method)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(3, 12), w=st.integers(3, 12), kh=st.sampled_from([1, 3, 5]),
       kw=st.sampled_from([1, 3]), seed=st.integers(0, 2**31 - 1),
       scipy_mode=st.sampled_from(["valid", "same", "full"]), boundary=st.sampled_from(["fill", "wrap"]))
def test_matches_scipy_signal(h, w, kh, kw, seed, scipy_mode, boundary):
    # odd kernels: scipy centres 'same' the way we do; 'wrap' is our circular padding
    assume(kh <= h and kw <= w)
    assume(not (boundary == "wrap" and scipy_mode == "valid"))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((h, w))
    k = rng.standard_normal((kh, kw))
    mode = "circular" if boundary == "wrap" else "zeros"
    for method in METHODS:
        got = correlate2d(x, k, padding=scipy_mode, padding_mode=mode, method=method)
        np.testing.assert_allclose(
            got, scipy.signal.correlate2d(x, k, mode=scipy_mode, boundary=boundary), atol=1e-10)
        got = convolve2d(x, k, padding=scipy_mode, padding_mode=mode, method=method)
        np.testing.assert_allclose(
            got, scipy.signal.convolve2d(x, k, mode=scipy_mode, boundary=boundary), atol=1e-10)


def test_full_convolution_matches_scipy_for_even_kernels(rng):
    x = rng.standard_normal((7, 6))
    k = rng.standard_normal((2, 4))
    np.testing.assert_allclose(convolve2d(x, k, padding="full"),
                               scipy.signal.convolve2d(x, k, mode="full"), atol=1e-12)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("kh,kw", [(2, 2), (4, 3), (2, 5)])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_same_padding_matches_torch_padding_same_for_even_kernels(kh, kw, mode, rng):
    x = rng.standard_normal((1, 2, 7, 8))
    k = rng.standard_normal((3, 2, kh, kw))
    conv = torch.nn.Conv2d(2, 3, (kh, kw), padding="same", padding_mode=mode, bias=False,
                           dtype=torch.float64)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(k))
        expected = conv(torch.from_numpy(x)).numpy()
    for method in METHODS:
        np.testing.assert_allclose(correlate2d(x, k, padding="same", padding_mode=mode,
                                               method=method), expected, atol=1e-12)


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("size", [7, 8, 28])
def test_same_padding_gives_ceil_of_size_over_stride(stride, size):
    for k in (1, 2, 3, 4, 5):
        assert output_shape((size, size), (k, k), padding="same", stride=stride) == \
            (-(-size // stride),) * 2


@pytest.mark.parametrize("method", METHODS)
def test_integer_inputs_are_exact(method, rng):
    # values whose products and sums overflow float64's 53-bit mantissa
    x = rng.integers(-2**28, 2**28, size=(2, 2, 6, 7))
    k = rng.integers(-2**28, 2**28, size=(3, 2, 3, 2))
    b = rng.integers(-2**40, 2**40, size=3)
    got = correlate2d(x, k, b, padding=1, stride=(1, 2), method=method)
    assert got.dtype == np.int64
    # an independent computation with Python ints
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))).astype(object)
    ko = k.astype(object)
    expected = np.empty(got.shape, dtype=object)
    for n_ in range(2):
        for o in range(3):
            for i in range(got.shape[2]):
                for j in range(got.shape[3]):
                    window = xp[n_, :, i:i + 3, 2 * j:2 * j + 2]
                    expected[n_, o, i, j] = int((window * ko[o]).sum()) + int(b[o])
    assert (got.astype(object) == expected).all()
    assert np.abs(expected.astype(np.float64)).max() > 2**53  # the float path would round
    as_float = correlate2d(x.astype(np.float64), k.astype(np.float64), b.astype(np.float64),
                           padding=1, stride=(1, 2), method=method)
    assert (as_float.astype(object) != expected).any()  # so the test can tell exact from close


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(case=layer_cases())
def test_integer_methods_agree_exactly_on_random_layers(case):
    pads = _fits(case)
    assume(pads is not None)
    rng = np.random.default_rng(case["seed"])
    c, o = case["groups"] * case["cg"], case["groups"] * case["og"]
    x = rng.integers(-1000, 1000, size=(case["n"], c, case["h"], case["w"]))
    kernel = rng.integers(-50, 50, size=(o, case["cg"], case["kh"], case["kw"]))
    bias = rng.integers(-99, 99, size=o) if case["use_bias"] else None
    common = dict(stride=case["stride"], padding=case["padding"], padding_mode=case["mode"],
                  pad_value=7, dilation=case["dilation"], groups=case["groups"])
    reference = correlate2d(x, kernel, bias, method="direct", **common)
    assert reference.dtype == np.int64
    expected = torch_reference(x, kernel, bias, stride=case["stride"], pads=pads, mode=case["mode"],
                               pad_value=7, dilation=case["dilation"], groups=case["groups"])
    assert (reference == expected).all()  # small integers are exact in float64 too
    for method in ("im2col", "shift", "fft", "auto"):
        got = correlate2d(x, kernel, bias, method=method, **common)
        assert got.dtype == np.int64, method
        assert (got == reference).all(), method


def test_float16_is_computed_in_float32(rng):
    x = rng.standard_normal((1, 1, 6, 6)).astype(np.float16)
    out = correlate2d(x, np.ones((1, 1, 3, 3), np.float16))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, correlate2d(x.astype(np.float64), np.ones((1, 1, 3, 3))), atol=1e-5)


def test_small_integers_through_fft_are_exact_and_integer(rng):
    x = rng.integers(-50, 50, size=(40, 40))
    k = rng.integers(-5, 5, size=(13, 13))
    got = correlate2d(x, k, method="fft")
    assert got.dtype == np.int64
    assert (got == correlate2d(x, k, method="im2col")).all()


def test_mixed_int_and_float_gives_float64():
    out = correlate2d(np.ones((3, 3), dtype=np.int32), np.ones((2, 2), dtype=np.float32))
    assert out.dtype == np.float64


def test_float32_stays_float32():
    out = correlate2d(np.ones((1, 1, 5, 5), np.float32), np.ones((1, 1, 3, 3), np.float32))
    assert out.dtype == np.float32


# ---- analytic cases ---------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_delta_kernel_returns_the_input(method, rng):
    x = rng.standard_normal((2, 3, 9, 11))
    delta = np.zeros((3, 1, 3, 3))
    delta[:, :, 1, 1] = 1.0
    out = correlate2d(x, delta, padding="same", groups=3, method=method)
    np.testing.assert_allclose(out, x, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_difference_kernel_on_a_step_edge_gives_a_line(method):
    x = np.zeros((8, 10), dtype=np.int64)
    x[:, 5:] = 1  # step between columns 4 and 5
    out = correlate2d(x, np.array([[-1, 1]]), method=method)  # x[j+1] - x[j]
    expected = np.zeros((8, 9), dtype=np.int64)
    expected[:, 4] = 1
    assert (out == expected).all()
    vertical = correlate2d(x.T.copy(), np.array([[-1], [1]]), method=method)
    assert (vertical == expected.T).all()


@pytest.mark.parametrize("method", METHODS)
def test_convolution_of_two_deltas_lands_at_the_sum_of_offsets(method):
    x = np.zeros((9, 9), dtype=np.int64)
    x[2, 3] = 1
    k = np.zeros((4, 3), dtype=np.int64)
    k[1, 2] = 1
    out = convolve2d(x, k, padding="full", method=method)  # full output index = offsets summed
    expected = np.zeros((12, 11), dtype=np.int64)
    expected[2 + 1, 3 + 2] = 1
    assert (out == expected).all()


def test_zeros_give_zeros():
    assert not correlate2d(np.zeros((6, 6)), np.ones((3, 3)), padding="same").any()


def test_seed_example_top_left_is_154_not_146():
    # The seed text sums 1*9+2*8+3*7+4*5+5*4+6*3+7*1+8*1+9*3 = 146, but the window's
    # bottom row is (1, 2, 3): the 8th term is 8*2, so the true value is 154.
    x = [[9, 8, 7, 6], [5, 4, 3, 2], [1, 2, 3, 4], [5, 6, 7, 8]]
    k = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert correlate2d(x, k).tolist() == [[154, 157], [200, 233]]
    assert 1 * 9 + 2 * 8 + 3 * 7 + 4 * 5 + 5 * 4 + 6 * 3 + 7 * 1 + 8 * 2 + 9 * 3 == 154
    assert convolve2d(x, k).tolist() == [[266, 233], [160, 157]]


# ---- padding ----------------------------------------------------------------

@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular", "constant"])
def test_pad2d_matches_torch_pad(mode, rng):
    x = rng.standard_normal((2, 3, 5, 6))
    pads = (1, 3, 2, 0)  # top, bottom, left, right
    top, bottom, left, right = pads
    expected = F.pad(torch.from_numpy(x), (left, right, top, bottom), mode=mode,
                     **({"value": 2.5} if mode == "constant" else {})).numpy()
    np.testing.assert_array_equal(pad2d(x, pads, mode, pad_value=2.5), expected)


def test_circular_padding_is_periodic_beyond_one_period():
    x = np.arange(3).reshape(1, 3)
    assert pad2d(x, (0, 0, 4, 5), "circular").tolist() == [[2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1]]


def test_integer_padded_with_fractional_value_becomes_float():
    out = pad2d(np.ones((2, 2), dtype=np.int64), 1, "constant", pad_value=0.5)
    assert out.dtype == np.float64 and out[0, 0] == 0.5


# ---- chunks and threads -----------------------------------------------------

@pytest.mark.parametrize("threads", ["1", "3"])
@pytest.mark.parametrize("stride", [1, 2])
def test_many_chunks_on_several_threads_match_torch(threads, stride, monkeypatch, rng):
    from kernelscope.ops import _fft, _im2col

    monkeypatch.setenv("KERNELSCOPE_THREADS", threads)
    monkeypatch.setattr(_im2col, "CHUNK_BYTES", 3000)  # a few images per chunk, a ragged last one
    monkeypatch.setattr(_fft, "CHUNK_BYTES", 30000)
    x = rng.standard_normal((11, 4, 9, 10)).astype(np.float32)
    k = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    expected = torch_reference(x, k, None, stride=stride, pads=(1, 1, 1, 1), mode="zeros",
                               pad_value=0, dilation=1, groups=2)
    for method in ("im2col", "shift", "fft"):
        got = correlate2d(x, k, padding=1, stride=stride, groups=2, method=method)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4, err_msg=method)


def test_blas_thread_limit_is_restored():
    from threadpoolctl import threadpool_info

    from kernelscope.ops._threads import single_threaded_blas

    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    with single_threaded_blas(), single_threaded_blas():
        inside = [i["num_threads"] for i in threadpool_info()
                  if i["user_api"] == "blas" and i["prefix"] == "libscipy_openblas"]
        assert inside and set(inside) == {1}
    correlate2d(np.ones((8, 3, 20, 20)), np.ones((4, 3, 3, 3)))
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == before


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_engine_works_in_a_forked_child(monkeypatch):
    # a forked child inherits the pool object but not its threads: it must build its own
    import multiprocessing

    monkeypatch.setenv("KERNELSCOPE_THREADS", "2")
    x = np.ones((6, 2, 8, 8))
    k = np.ones((3, 2, 3, 3))
    expected = correlate2d(x, k, method="im2col")  # the parent's pool now has threads
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        result = pool.apply_async(correlate2d, (x, k), {"method": "im2col"})
        np.testing.assert_array_equal(result.get(timeout=60), expected)
