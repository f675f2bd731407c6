"""Explain a small cross-correlation or convolution, one output pixel at a time.

:func:`explain` records, for every output position, which input pixels the kernel
covers (the window), the element-wise products, their sum per input channel, the
bias and the total: the provenance of every number. :func:`format_explanation`
draws that record as terminal text; ``trace.to_dict()`` is plain JSON for
programs and the HTML report. In convolution mode the trace holds the flipped
kernel that is actually slid, and checks that ``conv(I, K) == xcorr(I, flip(K))``.

The totals are computed from the recorded products, independently of
:func:`~kernelscope.ops.correlate2d`, and the trace checks that they agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from kernelscope.errors import KernelscopeError
from kernelscope.ops.correlate import (
    _check_int64_range,
    _prepare,
    convolve2d,
    correlate2d,
    flip_kernel,
)
from kernelscope.ops.padding import _pad, check_padding_mode
from kernelscope.ops.shapes import Padding, as_pair, output_shape, resolve_padding

__all__ = ["explain", "format_explanation", "Explanation", "OutputPosition", "ChannelTerm",
           "MAX_POSITIONS", "MAX_PRODUCTS"]

#: explain is for inputs a person reads: at most this many output positions ...
MAX_POSITIONS = 400
#: ... and this many products in total.
MAX_PRODUCTS = 20_000

Number = int | float


@dataclass
class ChannelTerm:
    """One input channel's part of one output pixel."""

    channel: int  # input channel index
    window: list[list[Number]]  # (kh, kw) the (padded) input values under the kernel
    kernel: list[list[Number]]  # (kh, kw) the kernel as slid (flipped in convolve mode)
    products: list[list[Number]]  # (kh, kw) window * kernel
    sum: Number  # sum of the products


@dataclass
class OutputPosition:
    """How one output pixel ``out[batch, out_channel, row, col]`` comes about."""

    batch: int
    out_channel: int
    row: int
    col: int
    input_rows: list[int]  # (kh,) rows of the original input; < 0 or >= H means padding
    input_cols: list[int]  # (kw,) columns of the original input
    channels: list[ChannelTerm]
    bias: Number | None
    total: Number  # sum of the channel sums, plus the bias


@dataclass
class Explanation:
    """The full trace of a small 2-D cross-correlation or convolution."""

    mode: str  # "correlate" or "convolve"
    input: list  # as given: (H, W) or (N, C, H, W)
    kernel: list  # as given: (kh, kw) or (O, C/groups, kh, kw)
    applied_kernel: list  # what slides over the input: the kernel, or flip(kernel) in convolve mode
    bias: list | None
    padded_input: list  # (N, C, Hp, Wp)
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]  # (top, bottom, left, right)
    padding_mode: str
    pad_value: Number
    dilation: tuple[int, int]
    groups: int
    output: list  # (H_out, W_out) or (N, O, H_out, W_out), from the engine
    positions: list[OutputPosition] = field(default_factory=list)
    engine_agrees: bool = True  # the totals equal correlate2d/convolve2d's output
    flip_identity: bool | None = None  # convolve mode: convolve2d(I, K) == correlate2d(I, flip(K))

    def to_dict(self) -> dict[str, Any]:
        """The trace as plain JSON-able Python (lists, ints, floats, strings)."""
        return asdict(self)


def explain(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None = None, *,
            stride: int | tuple[int, int] = 1, padding: Padding = "valid",
            padding_mode: str = "zeros", pad_value: float = 0.0,
            dilation: int | tuple[int, int] = 1, groups: int = 1,
            mode: str = "correlate") -> Explanation:
    """Trace a small cross-correlation (or convolution) position by position.

    Parameters
    ----------
    x : ndarray of shape (H, W) or (N, C, H, W)
    kernel : ndarray of shape (kh, kw) or (O, C/groups, kh, kw)
    bias : ndarray of shape (O,), optional
    stride, padding, padding_mode, pad_value, dilation, groups
        As for :func:`~kernelscope.ops.correlate2d`.
    mode : {"correlate", "convolve"}
        ``"convolve"`` flips the kernel first (true convolution).

    Returns
    -------
    Explanation
        ``.positions`` has one :class:`OutputPosition` per output pixel, in the order
        batch, output channel, row, column. ``.to_dict()`` gives JSON.

    Raises
    ------
    KernelscopeError
        Invalid arguments, or more than ``MAX_POSITIONS`` output positions or
        ``MAX_PRODUCTS`` products (explain is for inputs a person reads).

    Examples
    --------
    >>> trace = explain([[9, 8, 7, 6], [5, 4, 3, 2], [1, 2, 3, 4], [5, 6, 7, 8]],
    ...                 [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    >>> trace.output
    [[154, 157], [200, 233]]
    >>> first = trace.positions[0]
    >>> first.channels[0].window
    [[9, 8, 7], [5, 4, 3], [1, 2, 3]]
    >>> first.channels[0].products
    [[9, 16, 21], [20, 20, 18], [7, 16, 27]]
    >>> first.total
    154
    """
    if mode not in ("correlate", "convolve"):
        raise KernelscopeError(f"mode must be 'correlate' or 'convolve'; got {mode!r}")
    check_padding_mode(padding_mode)
    x4, k4, bias_arr, groups, squeeze, integer = _prepare(x, kernel, bias, groups)
    strides, dilations = as_pair(stride, "stride"), as_pair(dilation, "dilation")
    n, c, h, w = x4.shape
    o, cg, kh, kw = k4.shape
    h_out, w_out = output_shape((h, w), (kh, kw), stride=strides, padding=padding,
                                dilation=dilations)
    positions = n * o * h_out * w_out
    products = positions * cg * kh * kw
    if positions > MAX_POSITIONS or products > MAX_PRODUCTS:
        raise KernelscopeError(
            f"explain is for small inputs: this call has {positions} output positions and "
            f"{products} products (N*O*H_out*W_out = {n}*{o}*{h_out}*{w_out}); at most "
            f"{MAX_POSITIONS} positions and {MAX_PRODUCTS} products are allowed; crop the input, "
            f"or use correlate2d for the numbers alone")
    pads = resolve_padding(padding, (h, w), (kh, kw), stride=strides, dilation=dilations)
    if padding_mode == "constant" and (not isinstance(pad_value, (int, float, np.number))
                                       or isinstance(pad_value, bool) or not np.isfinite(pad_value)):
        raise KernelscopeError(f"pad_value must be a finite real number; got {pad_value!r}")
    if integer and padding_mode == "constant" and not float(pad_value).is_integer():
        integer = False
    if integer:
        _check_int64_range(x4, k4, bias_arr, pad_value if padding_mode == "constant" else 0)
    dtype = np.dtype(np.int64) if integer else np.dtype(np.float64)
    xp = _pad(x4, pads, padding_mode, pad_value).astype(dtype)  # (N, C, Hp, Wp)
    applied = flip_kernel(k4) if mode == "convolve" else k4  # (O, Cg, kh, kw)
    applied = applied.astype(dtype)
    (sh, sw), (dh, dw) = strides, dilations
    top, _, left, _ = pads
    per_group = o // groups
    records: list[OutputPosition] = []
    totals = np.zeros((n, o, h_out, w_out), dtype=dtype)
    for b in range(n):
        for f in range(o):
            g = f // per_group
            for i in range(h_out):
                for j in range(w_out):
                    rows = [i * sh + u * dh for u in range(kh)]  # padded coordinates
                    cols = [j * sw + v * dw for v in range(kw)]
                    terms = []
                    for ci in range(cg):
                        channel = g * cg + ci
                        window = xp[b, channel][np.ix_(rows, cols)]  # (kh, kw)
                        prod = window * applied[f, ci]  # (kh, kw)
                        terms.append(ChannelTerm(channel=channel, window=window.tolist(),
                                                 kernel=applied[f, ci].tolist(),
                                                 products=prod.tolist(), sum=prod.sum().item()))
                    total = sum(t.sum for t in terms)
                    bias_value = None
                    if bias_arr is not None:
                        bias_value = bias_arr[f].astype(dtype).item()
                        total = total + bias_value
                    totals[b, f, i, j] = total
                    records.append(OutputPosition(
                        batch=b, out_channel=f, row=i, col=j,
                        input_rows=[r - top for r in rows], input_cols=[q - left for q in cols],
                        channels=terms, bias=bias_value, total=total))
    engine = convolve2d if mode == "convolve" else correlate2d
    common = dict(stride=strides, padding=pads, padding_mode=padding_mode, pad_value=pad_value,
                  dilation=dilations, groups=groups, method="direct")
    out = engine(x4, k4, bias_arr, **common)  # (N, O, H_out, W_out)
    agrees = bool(np.allclose(out, totals, rtol=1e-12, atol=0) if not integer
                  else (out == totals).all())
    flip_identity = None
    if mode == "convolve":
        flip_identity = bool(np.array_equal(out, correlate2d(x4, flip_kernel(k4), bias_arr,
                                                             **common)))
    return Explanation(
        mode=mode, input=np.asarray(x4[0, 0] if squeeze else x4).tolist(),
        kernel=np.asarray(k4[0, 0] if squeeze else k4).tolist(),
        applied_kernel=(applied[0, 0] if squeeze else applied).tolist(),
        bias=None if bias_arr is None else bias_arr.tolist(), padded_input=xp.tolist(),
        stride=strides, padding=pads, padding_mode=padding_mode,
        pad_value=pad_value, dilation=dilations, groups=groups,
        output=(out[0, 0] if squeeze else out).tolist(), positions=records,
        engine_agrees=agrees, flip_identity=flip_identity)


# ---- terminal text -----------------------------------------------------------

def _num(value: Number) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _grid(matrix: list[list[Number]]) -> list[str]:
    cells = [[_num(v) for v in row] for row in matrix]
    width = max(len(cell) for row in cells for cell in row)
    return [" ".join(cell.rjust(width) for cell in row) for row in cells]


def _side_by_side(blocks: list[list[str]], joiners: list[str], indent: str = "  ") -> list[str]:
    """Place text blocks next to each other, with ``joiners[k]`` on the middle row between k and k+1."""
    height = max(len(b) for b in blocks)
    widths = [max(len(line) for line in b) for b in blocks]
    middle = (height - 1) // 2
    lines = []
    for r in range(height):
        parts = []
        for k, block in enumerate(blocks):
            parts.append((block[r] if r < len(block) else "").ljust(widths[k]))
            if k < len(joiners):
                parts.append(f" {joiners[k]} " if r == middle else " " * (len(joiners[k]) + 2))
        lines.append(indent + "".join(parts).rstrip())
    return lines


def _term(a: Number, b: Number) -> str:
    sa, sb = _num(a), _num(b)
    sa = f"({sa})" if sa.startswith("-") else sa
    sb = f"({sb})" if sb.startswith("-") else sb
    return f"{sa}*{sb}"


def format_explanation(trace: Explanation) -> str:
    """Readable terminal text for an :class:`Explanation`.

    For each output position: the window, the kernel and the products side by
    side, then ``a*b + ... = sum``; with several input channels, one such block per
    channel and a line adding the channel sums (and the bias) to the total.

    Examples
    --------
    >>> text = format_explanation(explain([[1, 2], [3, 4]], [[1, 0], [0, -1]]))
    >>> print(text.splitlines()[0])
    cross-correlation of a 2x2 input with a 2x2 kernel (stride 1, padding none, dilation 1) -> 1x1 output
    >>> print(text.splitlines()[-4])
      1*1 + 2*0 + 3*0 + 4*(-1) = -3
    """
    squeeze = isinstance(trace.input[0][0], (int, float))
    x4 = np.asarray(trace.input)
    if squeeze:
        x4 = x4[None, None]
    k_given = np.asarray(trace.kernel)
    if k_given.ndim == 2:
        k_given = k_given[None, None]
    n, c, h, w = x4.shape
    o, cg, kh, kw = k_given.shape
    out = np.asarray(trace.output)
    h_out, w_out = out.shape[-2:]
    name = "convolution" if trace.mode == "convolve" else "cross-correlation"
    pad = trace.padding
    pad_text = "none" if not any(pad) else (
        f"{pad} (top, bottom, left, right), {trace.padding_mode}"
        + (f" {_num(trace.pad_value)}" if trace.padding_mode == "constant" else ""))
    stride = trace.stride[0] if trace.stride[0] == trace.stride[1] else trace.stride
    dilation = trace.dilation[0] if trace.dilation[0] == trace.dilation[1] else trace.dilation
    shape_in = f"{h}x{w}" if squeeze else f"{n}x{c}x{h}x{w}"
    shape_k = f"{kh}x{kw}" if squeeze else f"{o}x{cg}x{kh}x{kw}"
    shape_out = f"{h_out}x{w_out}" if squeeze else f"{n}x{o}x{h_out}x{w_out}"
    groups = f", groups {trace.groups}" if trace.groups > 1 else ""
    lines = [f"{name} of a {shape_in} input with a {shape_k} kernel (stride {stride}, padding "
             f"{pad_text}, dilation {dilation}{groups}) -> {shape_out} output", ""]
    # the inputs
    for b in range(n):
        for ci in range(c):
            label = "input" if squeeze else f"input[{b}, {ci}]"
            lines.append(f"{label}:")
            lines += ["  " + row for row in _grid(x4[b, ci].tolist())]
    if any(pad):
        padded = np.asarray(trace.padded_input)
        for b in range(n):
            for ci in range(c):
                label = "padded input" if squeeze else f"padded input[{b}, {ci}]"
                lines.append(f"{label} ({trace.padding_mode}):")
                lines += ["  " + row for row in _grid(padded[b, ci].tolist())]
    applied = np.asarray(trace.applied_kernel)
    if squeeze:
        applied = applied[None, None]
    for f in range(o):
        for ci in range(cg):
            label = "kernel K" if squeeze else f"kernel K[{f}, {ci}]"
            if trace.mode == "convolve":
                lines.append(f"{label} and flip(K), rotated 180 degrees: convolution slides flip(K)")
                lines += _side_by_side([_grid(k_given[f, ci].tolist()),
                                        _grid(applied[f, ci].tolist())], ["->"])
            else:
                lines.append(f"{label}:")
                lines += ["  " + row for row in _grid(applied[f, ci].tolist())]
    if trace.bias is not None:
        lines.append(f"bias: {' '.join(_num(v) for v in trace.bias)}")
    # every output position
    for pos in trace.positions:
        where = (f"out[{pos.row}, {pos.col}]" if squeeze
                 else f"out[{pos.batch}, {pos.out_channel}, {pos.row}, {pos.col}]")
        rows, cols = pos.input_rows, pos.input_cols
        rows_text = _span(rows)
        cols_text = _span(cols)
        lines += ["", f"{where}: input rows {rows_text}, columns {cols_text}"]
        indent = "  " if squeeze else "    "
        for term in pos.channels:
            if not squeeze:
                lines.append(f"  input channel {term.channel}:")
            lines += _side_by_side([_grid(term.window), _grid(term.kernel), _grid(term.products)],
                                   ["*", "="], indent)
            pairs = [_term(a, b) for wr, kr in zip(term.window, term.kernel, strict=True)
                     for a, b in zip(wr, kr, strict=True)]
            lines.append(indent + " + ".join(pairs) + f" = {_num(term.sum)}")
        if len(pos.channels) > 1 or pos.bias is not None:
            parts = [_num(t.sum) for t in pos.channels]
            if pos.bias is not None:
                parts.append(f"bias {_num(pos.bias)}")
            lines.append("  total: " + " + ".join(parts) + f" = {_num(pos.total)}"
                         + ("  (channel sums" + (" plus bias)" if pos.bias is not None else ")")))
    lines += ["", f"output ({shape_out}):"]
    planes = [(None, out)] if squeeze else [((b, f), out[b, f]) for b in range(n) for f in range(o)]
    for label, plane in planes:
        if label is not None:
            lines.append(f"  out[{label[0]}, {label[1]}]:")
        indent = "  " if label is None else "    "
        lines += [indent + row for row in _grid(np.asarray(plane).tolist())]
    if trace.mode == "convolve":
        lines.append(f"check: convolve2d(I, K) == correlate2d(I, flip(K)): {trace.flip_identity}")
    if not trace.engine_agrees:
        lines.append("WARNING: the traced totals differ from the engine's output")
    return "\n".join(lines)


def _span(indices: list[int]) -> str:
    if len(indices) == 1:
        return str(indices[0])
    step = indices[1] - indices[0]
    text = f"{indices[0]}..{indices[-1]}"
    return text + (f" step {step}" if step != 1 else "")
