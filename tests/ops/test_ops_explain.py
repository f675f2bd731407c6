"""Explain traces: structure, agreement with the engine, and the terminal text."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernelscope.errors import KernelscopeError
from kernelscope.ops import convolve2d, correlate2d, flip_kernel
from kernelscope.ops.explain import explain, format_explanation

SEED_X = [[9, 8, 7, 6], [5, 4, 3, 2], [1, 2, 3, 4], [5, 6, 7, 8]]
SEED_K = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_seed_example_trace():
    trace = explain(SEED_X, SEED_K)
    assert trace.output == [[154, 157], [200, 233]]
    assert [(p.row, p.col, p.total) for p in trace.positions] == [
        (0, 0, 154), (0, 1, 157), (1, 0, 200), (1, 1, 233)]
    last = trace.positions[-1]
    assert last.input_rows == [1, 2, 3] and last.input_cols == [1, 2, 3]
    assert last.channels[0].window == [[4, 3, 2], [2, 3, 4], [6, 7, 8]]
    assert last.channels[0].products == [[4, 6, 6], [8, 15, 24], [42, 56, 72]]
    assert trace.engine_agrees and trace.flip_identity is None


def test_trace_is_plain_json():
    trace = explain(np.arange(18.0).reshape(1, 2, 3, 3), np.ones((2, 2, 2, 2)), bias=[0.5, -1],
                    padding=1, padding_mode="reflect")
    data = json.loads(json.dumps(trace.to_dict()))
    assert data["mode"] == "correlate"
    assert len(data["positions"]) == 2 * 4 * 4
    first = data["positions"][0]
    assert set(first) == {"batch", "out_channel", "row", "col", "input_rows", "input_cols",
                          "channels", "bias", "total"}
    assert first["input_rows"] == [-1, 0]  # the first row is padding
    assert set(first["channels"][0]) == {"channel", "window", "kernel", "products", "sum"}


def test_convolve_mode_records_the_flipped_kernel_and_the_identity():
    trace = explain(SEED_X, SEED_K, mode="convolve")
    assert trace.applied_kernel == [[9, 8, 7], [6, 5, 4], [3, 2, 1]]
    assert trace.kernel == SEED_K
    assert trace.flip_identity is True
    assert trace.output == convolve2d(SEED_X, SEED_K).tolist()
    assert trace.output == correlate2d(SEED_X, flip_kernel(np.array(SEED_K))).tolist()
    text = format_explanation(trace)
    assert "flip(K)" in text
    assert text.endswith("check: convolve2d(I, K) == correlate2d(I, flip(K)): True")


def test_channel_sums_add_up_to_the_total():
    x = np.arange(18).reshape(1, 2, 3, 3)
    trace = explain(x, np.ones((1, 2, 2, 2), dtype=int), bias=[5])
    first = trace.positions[0]
    assert [t.sum for t in first.channels] == [0 + 1 + 3 + 4, 9 + 10 + 12 + 13]
    assert first.total == 8 + 44 + 5
    assert "  total: 8 + 44 + bias 5 = 57  (channel sums plus bias)" in format_explanation(trace)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(2, 6), w=st.integers(2, 6), k=st.integers(1, 2), c=st.integers(1, 2),
       stride=st.integers(1, 2), dilation=st.integers(1, 2),
       padding=st.sampled_from(["valid", "same", "full", 1]),
       mode=st.sampled_from(["correlate", "convolve"]),
       padding_mode=st.sampled_from(["zeros", "replicate", "circular"]), seed=st.integers(0, 999))
def test_totals_equal_the_engine(h, w, k, c, stride, dilation, padding, mode, padding_mode, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-9, 10, size=(1, c, h, w))
    kern = rng.integers(-3, 4, size=(2, c, k + 1, k))
    try:
        expected = (convolve2d if mode == "convolve" else correlate2d)(
            x, kern, stride=stride, padding=padding, padding_mode=padding_mode, dilation=dilation)
    except KernelscopeError:
        return
    trace = explain(x, kern, stride=stride, padding=padding, padding_mode=padding_mode,
                    dilation=dilation, mode=mode)
    totals = np.array([p.total for p in trace.positions]).reshape(expected.shape)
    assert (totals == expected).all()
    for p in trace.positions:  # every recorded product is window * kernel
        for term in p.channels:
            assert (np.array(term.products) == np.array(term.window) * np.array(term.kernel)).all()
            assert term.sum == np.array(term.products).sum()


def test_format_shows_window_products_and_sum():
    text = format_explanation(explain(SEED_X, SEED_K))
    assert "  9 8 7   1 2 3    9 16 21\n  5 4 3 * 4 5 6 = 20 20 18\n  1 2 3   7 8 9    7 16 27" in text
    assert "  9*1 + 8*2 + 7*3 + 5*4 + 4*5 + 3*6 + 1*7 + 2*8 + 3*9 = 154" in text
    assert text.splitlines()[-3:] == ["output (2x2):", "  154 157", "  200 233"]


def test_negative_numbers_are_parenthesised():
    text = format_explanation(explain([[1, -2]], [[-1, 3]]))
    assert "  1*(-1) + (-2)*3 = -7" in text


def test_explain_refuses_large_inputs():
    with pytest.raises(KernelscopeError, match=r"^explain is for small inputs: this call has 900 "
                                               r"output positions .* at most 400 positions"):
        explain(np.ones((32, 32)), np.ones((3, 3)))


def test_explain_rejects_unknown_mode():
    with pytest.raises(KernelscopeError, match=r"^mode must be 'correlate' or 'convolve'; got 'conv'"):
        explain(SEED_X, SEED_K, mode="conv")


def test_explain_refuses_integer_overflow():
    with pytest.raises(KernelscopeError, match=r"^integer inputs this large could overflow int64"):
        explain([[2**62, 2**62]], [[2, 2]])
