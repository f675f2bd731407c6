"""Explain the backward pass of a small cross-correlation: where the flip comes back.

A CNN layer computes a cross-correlation ``out = xcorr(input, K)`` (no flip). Given
the gradient ``g = dL/dout`` arriving at the output, the chain rule gives:

- ``dL/dK`` is a **cross-correlation** of the (padded) input with ``g``: every output
  pixel's gradient ``g[i, j]`` weights the input window that pixel saw, and the
  weighted windows add up to the kernel gradient;
- ``dL/dinput`` is a **true convolution** of ``g`` with ``K``: ``g``, spread out by
  the stride and zero-padded ("full"), slides under ``flip(K)``. This is the
  transposed convolution, and the flip the forward pass left out is back;
- ``dL/dbias`` is the sum of ``g``.

:func:`explain_backward` records every product and sum of the three (reusing the
forward :func:`~kernelscope.ops.explain.explain` traces for the two correlations);
:func:`format_backward` writes them as terminal text. The numbers are checked
against :func:`~kernelscope.ops.backward.correlate2d_backward`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from kernelscope.errors import KernelscopeError
from kernelscope.ops.backward import (
    convolve2d_backward,
    correlate2d_backward,
    dilate2d,
    pad2d_adjoint,
)
from kernelscope.ops.correlate import _prepare, as_matrix, correlate2d, flip_kernel
from kernelscope.ops.explain import (
    MAX_POSITIONS,
    MAX_PRODUCTS,
    Explanation,
    _grid,
    _num,
    _side_by_side,
    _span,
    _term,
    explain,
    format_explanation,
)
from kernelscope.ops.padding import _pad, check_padding_mode, pad2d
from kernelscope.ops.shapes import Padding, as_pair, output_shape, resolve_padding

__all__ = ["explain_backward", "format_backward", "BackwardTrace", "WeightedWindow"]

Number = int | float


@dataclass
class WeightedWindow:
    """One output pixel's share of the kernel gradient: its gradient times the window it saw."""

    batch: int
    out_channel: int
    row: int
    col: int
    channel: int  # input channel of the window
    grad: Number  # g[batch, out_channel, row, col]
    input_rows: list[int]  # (kh,) rows of the original input (< 0 or >= H: padding)
    input_cols: list[int]  # (kw,)
    window: list[list[Number]]  # (kh, kw) padded input under the kernel
    contribution: list[list[Number]]  # (kh, kw) grad * window


@dataclass
class BackwardTrace:
    """Every product and sum of the backward pass of a small cross-correlation or convolution."""

    mode: str  # "correlate" or "convolve" (the forward's mode)
    input: list  # (H, W) or (N, C, H, W)
    kernel: list  # as given
    applied_kernel: list  # what the forward slid: K, or flip(K) in convolve mode
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]  # (top, bottom, left, right)
    padding_mode: str
    pad_value: Number
    dilation: tuple[int, int]
    forward_output: list  # (H', W') or (N, O, H', W')
    grad_output: list  # g = dL/dout, same shape as the output
    grad_output_given: bool  # False: g is all ones (the gradient of sum(out))
    weighted_windows: list[WeightedWindow] = field(default_factory=list)
    kernel_grad_correlation: Explanation | None = None  # xcorr(padded input, g): one position per tap
    kernel_grad: list = field(default_factory=list)  # dL/dK, shape of the kernel as given
    bias_grad: list = field(default_factory=list)  # (O,)
    grad_output_dilated: list = field(default_factory=list)  # g with stride - 1 zeros between entries
    input_grad_convolution: Explanation | None = None  # conv(g dilated, K), "full": the padded input's gradient
    padded_input_grad: list = field(default_factory=list)  # (N, C, Hp, Wp)
    padding_adjoint: list[dict[str, Any]] = field(default_factory=list)  # border pixel -> source pixel
    input_grad: list = field(default_factory=list)  # dL/dinput, shape of the input
    engine_agrees: bool = True  # equal to kernelscope.ops.backward's gradients

    def to_dict(self) -> dict[str, Any]:
        """The trace as plain JSON-able Python (lists, ints, floats, strings)."""
        return asdict(self)


def explain_backward(x: np.ndarray, kernel: np.ndarray, grad_out: np.ndarray | None = None, *,
                     stride: int | tuple[int, int] = 1, padding: Padding = "valid",
                     padding_mode: str = "zeros", pad_value: float = 0.0,
                     dilation: int | tuple[int, int] = 1, mode: str = "correlate") -> BackwardTrace:
    """Trace the gradients of a small cross-correlation (or convolution) with respect to kernel, bias and input.

    Parameters
    ----------
    x : ndarray of shape (H, W) or (N, C, H, W)
        The forward's input.
    kernel : ndarray of shape (kh, kw) or (O, C, kh, kw)
        The forward's kernel (groups are not supported here).
    grad_out : ndarray of shape (H', W') or (N, O, H', W'), optional
        ``g = dL/dout``; default all ones (the gradient of ``sum(out)``).
    stride, padding, padding_mode, pad_value, dilation
        As for :func:`~kernelscope.ops.correlate2d`.
    mode : {"correlate", "convolve"}
        The forward's mode.

    Returns
    -------
    BackwardTrace

    Examples
    --------
    >>> trace = explain_backward([[1, 2, 3], [4, 5, 6], [7, 8, 9]], [[1, 0], [0, -1]])
    >>> trace.kernel_grad          # each tap sums the 2x2 input block it slid over
    [[12, 16], [24, 28]]
    >>> trace.input_grad           # g = ones convolved with K: the taps that touched each pixel
    [[1, 1, 0], [1, 0, -1], [0, -1, -1]]
    >>> trace.bias_grad, trace.engine_agrees
    ([4], True)
    """
    if mode not in ("correlate", "convolve"):
        raise KernelscopeError(f"mode must be 'correlate' or 'convolve'; got {mode!r}")
    check_padding_mode(padding_mode)
    x4, k4, _, _, squeeze, integer = _prepare(x, kernel, None, 1)
    strides, dilations = as_pair(stride, "stride"), as_pair(dilation, "dilation")
    n, c, h, w = x4.shape
    o, cg, kh, kw = k4.shape
    out_hw = output_shape((h, w), (kh, kw), stride=strides, padding=padding, dilation=dilations)
    positions = n * o * out_hw[0] * out_hw[1]
    products = positions * c * kh * kw
    if positions > MAX_POSITIONS or products > MAX_PRODUCTS:
        raise KernelscopeError(
            f"explain --backward is for small inputs: this call has {positions} output positions and "
            f"{products} products (N*O*H_out*W_out = {n}*{o}*{out_hw[0]}*{out_hw[1]}); at most "
            f"{MAX_POSITIONS} positions and {MAX_PRODUCTS} products are allowed; crop the input, or use "
            f"kernelscope.ops.backward.correlate2d_backward for the numbers alone")
    expected = out_hw if squeeze else (n, o) + out_hw
    if grad_out is None:
        g4 = np.ones((n, o) + out_hw, dtype=np.int64)  # (N, O, H', W')
    else:
        g = as_matrix(grad_out, "grad_out")
        if g.shape == out_hw and n * o == 1:
            g4 = g[None, None]
        elif g.shape == (n, o) + out_hw:
            g4 = g
        else:
            raise KernelscopeError(
                f"grad_out has shape {g.shape}, but the forward output of this call has shape {expected}: "
                f"give one gradient value per output pixel")
        integer = integer and g4.dtype.kind == "i"
    pads = resolve_padding(padding, (h, w), (kh, kw), stride=strides, dilation=dilations)
    if integer and padding_mode == "constant" and not float(pad_value).is_integer():
        integer = False
    dtype = np.dtype(np.int64) if integer else np.dtype(np.float64)
    g4 = g4.astype(dtype)
    xp = _pad(x4, pads, padding_mode, pad_value).astype(dtype)  # (N, C, Hp, Wp)
    applied = (flip_kernel(k4) if mode == "convolve" else k4).astype(dtype)  # (O, C, kh, kw)
    (sh, sw), (dh, dw) = strides, dilations
    top, _, left, _ = pads
    forward = correlate2d(x4, applied, stride=strides, padding=pads, padding_mode=padding_mode,
                          pad_value=pad_value, dilation=dilations, method="direct")  # (N, O, H', W')

    # 1. kernel gradient: each output pixel's gradient weights the window it saw
    windows: list[WeightedWindow] = []
    grad_applied = np.zeros(applied.shape, dtype=dtype)  # (O, C, kh, kw)
    for b in range(n):
        for f in range(o):
            for i in range(out_hw[0]):
                for j in range(out_hw[1]):
                    rows = [i * sh + u * dh for u in range(kh)]  # padded coordinates
                    cols = [j * sw + v * dw for v in range(kw)]
                    gval = g4[b, f, i, j]
                    for ci in range(c):
                        window = xp[b, ci][np.ix_(rows, cols)]  # (kh, kw)
                        contribution = gval * window  # (kh, kw)
                        grad_applied[f, ci] += contribution
                        windows.append(WeightedWindow(
                            batch=b, out_channel=f, row=i, col=j, channel=ci, grad=gval.item(),
                            input_rows=[r - top for r in rows], input_cols=[q - left for q in cols],
                            window=window.tolist(), contribution=contribution.tolist()))
    # ... and the same numbers as one cross-correlation: g slides over the padded input
    # (stride -> spacing of g's entries, dilation -> step between taps); batch acts as channels
    if squeeze:
        corr = explain(xp[0, 0], g4[0, 0], stride=dilations, dilation=strides)
    else:
        corr = explain(xp.swapaxes(0, 1), g4.swapaxes(0, 1), stride=dilations, dilation=strides)
    corr.positions = [p for p in corr.positions if p.row < kh and p.col < kw]  # taps beyond the kernel: unused
    corr_out = np.asarray(corr.output)
    corr_out = corr_out[:kh, :kw] if squeeze else corr_out[:, :, :kh, :kw]
    corr.output = corr_out.tolist()
    from_corr = corr_out[None, None] if squeeze else corr_out.swapaxes(0, 1)  # (O, C, kh, kw)
    agrees = bool(np.allclose(from_corr, grad_applied, rtol=1e-12, atol=1e-12))
    grad_kernel = flip_kernel(grad_applied) if mode == "convolve" else grad_applied  # (O, C, kh, kw)

    # 2. bias gradient
    grad_bias = g4.sum(axis=(0, 2, 3))  # (O,)

    # 3. input gradient: g dilated by the stride, padded "full", convolved with the applied kernel
    g_s = dilate2d(g4, strides)  # (N, O, (H'-1)*sh+1, (W'-1)*sw+1)
    full = (dh * (kh - 1), dh * (kh - 1), dw * (kw - 1), dw * (kw - 1))
    k_t = applied.swapaxes(0, 1)  # (C, O, kh, kw): channels in and out swap roles
    if squeeze:
        conv = explain(g_s[0, 0], k_t[0, 0], padding=full, dilation=dilations, mode="convolve")
        core = np.asarray(conv.output)[None, None]
    else:
        conv = explain(g_s, np.ascontiguousarray(k_t), padding=full, dilation=dilations, mode="convolve")
        core = np.asarray(conv.output)
    hp, wp = xp.shape[-2:]
    grad_xp = np.zeros((n, c, hp, wp), dtype=dtype)  # (N, C, Hp, Wp)
    grad_xp[:, :, :core.shape[2], :core.shape[3]] = core
    grad_x = pad2d_adjoint(grad_xp, (h, w), pads, padding_mode)  # (N, C, H, W)
    adjoint = _adjoint_records(grad_xp, (h, w), pads, padding_mode)

    engine = convolve2d_backward if mode == "convolve" else correlate2d_backward
    ex, ek, eb = engine(x4, k4, g4, stride=strides, padding=pads, padding_mode=padding_mode,
                        pad_value=pad_value, dilation=dilations, method="direct")
    agrees = agrees and all(np.allclose(a, b, rtol=1e-12, atol=1e-12)
                            for a, b in ((ex, grad_x), (ek, grad_kernel), (eb, grad_bias)))

    def shaped(array: np.ndarray) -> list:
        return (array[0, 0] if squeeze else array).tolist()

    return BackwardTrace(
        mode=mode, input=shaped(x4), kernel=shaped(k4), applied_kernel=shaped(applied), stride=strides,
        padding=pads, padding_mode=padding_mode, pad_value=pad_value, dilation=dilations,
        forward_output=shaped(forward), grad_output=shaped(g4), grad_output_given=grad_out is not None,
        weighted_windows=windows, kernel_grad_correlation=corr, kernel_grad=shaped(grad_kernel),
        bias_grad=grad_bias.tolist(), grad_output_dilated=shaped(g_s), input_grad_convolution=conv,
        padded_input_grad=grad_xp.tolist(), padding_adjoint=adjoint, input_grad=shaped(grad_x),
        engine_agrees=agrees)


def _adjoint_records(grad_xp: np.ndarray, hw: tuple[int, int], pads: tuple[int, int, int, int],
                     mode: str) -> list[dict[str, Any]]:
    """For every border pixel of the padded gradient: the input pixel it was a copy of (None: a constant)."""
    h, w = hw
    top, bottom, left, right = pads
    if not any(pads):
        return []
    source = None
    if mode not in ("zeros", "constant"):
        source = pad2d(np.arange(h * w).reshape(h, w), pads, mode)  # (Hp, Wp): which pixel was copied
    records = []
    n, c, hp, wp = grad_xp.shape
    for b in range(n):
        for ch in range(c):
            for r in range(hp):
                for q in range(wp):
                    if top <= r < top + h and left <= q < left + w:
                        continue
                    to = None if source is None else [int(source[r, q]) // w, int(source[r, q]) % w]
                    records.append({"batch": b, "channel": ch, "from": [r - top, q - left], "to": to,
                                    "value": grad_xp[b, ch, r, q].item()})
    return records


# ---- terminal text -----------------------------------------------------------

def _label(name: str, index: tuple[int, ...], squeeze: bool) -> str:
    return name if squeeze else f"{name}[{', '.join(map(str, index))}]"


def format_backward(trace: BackwardTrace) -> str:
    """Readable terminal text for a :class:`BackwardTrace`: every product and sum, and which is which.

    Examples
    --------
    >>> text = format_backward(explain_backward([[1, 2], [3, 4]], [[1, 0], [0, -1]]))
    >>> print(text.splitlines()[0])
    backward pass of a cross-correlation of a 2x2 input with a 2x2 kernel (stride 1, padding none, dilation 1) -> 1x1 output
    >>> "dL/dinput is a TRUE CONVOLUTION of g with K" in text
    True
    """
    x = np.asarray(trace.input)
    squeeze = x.ndim == 2
    x4 = x[None, None] if squeeze else x
    k4 = np.asarray(trace.kernel)
    k4 = k4[None, None] if squeeze else k4
    g4 = np.asarray(trace.grad_output)
    g4 = g4[None, None] if squeeze else g4
    n, c, h, w = x4.shape
    o, _, kh, kw = k4.shape
    h_out, w_out = g4.shape[-2:]
    convolve = trace.mode == "convolve"
    name = "convolution" if convolve else "cross-correlation"
    pad = trace.padding
    pad_text = "none" if not any(pad) else (
        f"{pad} (top, bottom, left, right), {trace.padding_mode}"
        + (f" {_num(trace.pad_value)}" if trace.padding_mode == "constant" else ""))
    stride = trace.stride[0] if trace.stride[0] == trace.stride[1] else trace.stride
    dilation = trace.dilation[0] if trace.dilation[0] == trace.dilation[1] else trace.dilation
    shape_in = f"{h}x{w}" if squeeze else f"{n}x{c}x{h}x{w}"
    shape_k = f"{kh}x{kw}" if squeeze else f"{o}x{c}x{kh}x{kw}"
    shape_out = f"{h_out}x{w_out}" if squeeze else f"{n}x{o}x{h_out}x{w_out}"
    slid = "flip(K)" if convolve else "K"
    lines = [
        f"backward pass of a {name} of a {shape_in} input with a {shape_k} kernel (stride {stride}, "
        f"padding {pad_text}, dilation {dilation}) -> {shape_out} output",
        "",
        f"The forward slid {slid} over the input without flipping it: out = correlate2d(input, {slid}).",
        "Given g = dL/dout, the chain rule gives three gradients:",
        "  dL/dK     is a CROSS-CORRELATION of the input with g (g slides over the input like a kernel)"
        + (", flipped back because the forward slid flip(K)" if convolve else ""),
        "  dL/dbias  is the sum of g",
        ("  dL/dinput is a TRUE CONVOLUTION of g with K: g, zero-padded, slides under flip(K) "
         "(a transposed convolution)") if not convolve else
        ("  dL/dinput is a TRUE CONVOLUTION of g with the slid kernel flip(K), which is a "
         "cross-correlation with K itself"),
        "",
    ]
    for b in range(n):
        for ci in range(c):
            lines.append(_label("input", (b, ci), squeeze) + ":")
            lines += ["  " + row for row in _grid(x4[b, ci].tolist())]
    applied = np.asarray(trace.applied_kernel)
    applied = applied[None, None] if squeeze else applied
    for f in range(o):
        for ci in range(c):
            lines.append(_label("kernel K", (f, ci), squeeze) + (" and flip(K), which the forward slid:"
                                                                if convolve else ":"))
            blocks = [_grid(k4[f, ci].tolist())] + ([_grid(applied[f, ci].tolist())] if convolve else [])
            lines += _side_by_side(blocks, ["->"] if convolve else [])
    how = "given" if trace.grad_output_given else "all ones: the gradient of L = sum(out)"
    for b in range(n):
        for f in range(o):
            lines.append(_label("output gradient g", (b, f), squeeze) + f" ({how}):")
            lines += ["  " + row for row in _grid(g4[b, f].tolist())]

    # 1. kernel gradient
    lines += ["", "== 1. dL/dK: a CROSS-CORRELATION of the input with g ==",
              "Each output pixel's gradient g[i, j] weights the input window that pixel saw:"]
    for ww in trace.weighted_windows:
        where = (f"g[{ww.row}, {ww.col}]" if squeeze
                 else f"g[{ww.batch}, {ww.out_channel}, {ww.row}, {ww.col}], input channel {ww.channel}")
        lines.append(f"  {where} = {_num(ww.grad)} times the window at rows {_span(ww.input_rows)}, "
                     f"columns {_span(ww.input_cols)}:")
        lines += _side_by_side([[_num(ww.grad)], _grid(ww.window), _grid(ww.contribution)], ["*", "="], "    ")
    grad_slid = "dL/d(flip K)" if convolve else "dL/dK"
    lines.append(f"The weighted windows add up to {grad_slid}. Tap by tap, that is the cross-correlation of the "
                 "input with g (taps are the kernel's entries; g's entries are one stride apart):")
    corr = trace.kernel_grad_correlation
    for pos in corr.positions if corr is not None else []:
        for term in pos.channels:
            if squeeze:
                where = f"{grad_slid}[{pos.row}, {pos.col}]"
            else:  # the correlation ran with the batch as channels: batch=input channel, out_channel=O
                where = f"{grad_slid}[{pos.out_channel}, {pos.batch}, {pos.row}, {pos.col}] (image {term.channel})"
            pairs = [_term(a, bb) for wr, kr in zip(term.window, term.kernel, strict=True)
                     for a, bb in zip(wr, kr, strict=True)]
            lines.append(f"  {where} = " + " + ".join(pairs) + f" = {_num(term.sum)}")
        if not squeeze and len(pos.channels) > 1:
            lines.append(f"    sum over the batch: {_num(pos.total)}")
    kg = np.asarray(trace.kernel_grad)
    kg = kg[None, None] if squeeze else kg
    if convolve:
        lines.append("The forward slid flip(K), so dL/dK is that gradient flipped back (rotated 180 degrees):")
    for f in range(o):
        for ci in range(c):
            lines.append(_label("dL/dK", (f, ci), squeeze) + ":")
            lines += ["  " + row for row in _grid(kg[f, ci].tolist())]

    # 2. bias
    lines += ["", "== 2. dL/dbias: the sum of g (each output pixel adds the bias once) =="]
    for f in range(o):
        values = [_num(v) for v in g4[:, f].ravel().tolist()]
        lines.append(f"  {_label('dL/dbias', (f,), squeeze)} = " + " + ".join(values)
                     + f" = {_num(trace.bias_grad[f])}")

    # 3. input gradient
    lines += ["", "== 3. dL/dinput: a TRUE CONVOLUTION of g with " + ("flip(K) (= a cross-correlation with K)"
                                                                    if convolve else "K") + " =="]
    if tuple(trace.stride) != (1, 1):
        lines.append(f"The stride {stride} skipped input positions, so g is first spread out with "
                     f"stride - 1 zeros between its entries:")
        gs = np.asarray(trace.grad_output_dilated)
        gs = gs[None, None] if squeeze else gs
        for b in range(n):
            for f in range(o):
                lines.append("  " + _label("g dilated", (b, f), squeeze) + ":")
                lines += ["    " + row for row in _grid(gs[b, f].tolist())]
    lines.append(f"g is padded 'full' ((kh-1)*dilation zeros on every side) and convolved with {slid}: "
                 f"the kernel is flipped as it slides. Here the 'input' is g and the 'output' is dL/d(padded input).")
    if not squeeze:
        lines.append("Channels swap roles: the forward's output channels are the input channels here, and the "
                     "kernel shown as K[c, o] is the forward's K[o, c].")
    conv_text = format_explanation(trace.input_grad_convolution) if trace.input_grad_convolution else ""
    lines += ["  " + line if line else "" for line in conv_text.splitlines()]
    if any(pad):
        if trace.padding_mode in ("zeros", "constant"):
            lines.append(f"The forward padded the input with constants ({trace.padding_mode}): the gradient of the "
                         f"border pixels is dropped, dL/dinput is the interior (rows {pad[0]}..{pad[0] + h - 1}, "
                         f"columns {pad[2]}..{pad[2] + w - 1} of the padded gradient).")
        else:
            lines.append(f"The forward padded the input ({trace.padding_mode}): every border pixel was a copy of an "
                         "input pixel, so its gradient is added back onto that pixel:")
            for rec in trace.padding_adjoint:
                prefix = "" if squeeze else f"[{rec['batch']}, {rec['channel']}] "
                lines.append(f"  {prefix}border ({rec['from'][0]}, {rec['from'][1]}) copied input "
                             f"({rec['to'][0]}, {rec['to'][1]}): adds {_num(rec['value'])}")
    gx = np.asarray(trace.input_grad)
    gx = gx[None, None] if squeeze else gx
    for b in range(n):
        for ci in range(c):
            lines.append(_label("dL/dinput", (b, ci), squeeze) + ":")
            lines += ["  " + row for row in _grid(gx[b, ci].tolist())]
    lines += ["", "check: equal to kernelscope.ops.backward."
              + ("convolve2d_backward" if convolve else "correlate2d_backward") + f": {trace.engine_agrees}"]
    return "\n".join(lines)
