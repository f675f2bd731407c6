"""One cell of a real network's feature map, explained the way the engine explains a 4x4 example.

:func:`explain_cell` answers "where does ``out[channel, row, col]`` of conv ``layer``
come from?" for any ``nn.Conv2d`` reachable in a model's forward pass: the input
window of every input channel (real values; padding marked as padding), the kernel
slice per input channel, the per-channel products and sums, the bias, the total
(pre-activation), and the value after the activation that follows.

The conv's input and outputs are read from the network's own forward pass (the
input by a forward pre-hook on the conv, removed in ``finally``; the outputs through
:func:`~kernelscope.analysis.hooks.capture`); the window's products and sums are the
engine's (:func:`kernelscope.ops.explain` on the window alone, in float64). Two checks
come with every answer: the float64 total equals the network's own conv output at the
cell, and the value after the activation (the modules between the conv and its
:func:`~kernelscope.analysis.hooks.read_point`, applied in float64 to the conv's output
with this cell's total in it) equals the network's own output there.

"After the activation" means what ``read_point(model, layer, at="activation")`` resolves:
the next activation module registered after the conv in the same parent, with norm
layers allowed in between (``conv, bn, relu``: the value is ``relu(bn(total))``, bn in
eval mode). Where no activation module follows (a functional ``F.relu``, the last conv,
a residual block's second conv), the conv's own output is what is read and ``post`` is
the total itself; the result says which.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kernelscope.errors import KernelscopeError
from kernelscope.models.layers import get_layer

if TYPE_CHECKING:
    from torch import nn

__all__ = ["explain_cell", "CellExplanation", "CellChannel", "cell_tolerance"]

#: Products per explained cell (C_in/groups * kh * kw) above which the explanation is refused:
#: it would not be read, and the page would draw megabytes.
MAX_CELL_PRODUCTS = 200_000


@dataclass
class CellChannel:
    """One input channel's part of the explained cell."""

    channel: int  # input channel index (of the conv's input)
    window: list[list[float]]  # (kh, kw) input values under the dilated kernel taps (padding: the padded value)
    kernel: list[list[float]]  # (kh, kw) weight[channel_out, channel - group_start]
    products: list[list[float]]  # (kh, kw) window * kernel
    sum: float  # sum of the products (float64)


@dataclass
class CellExplanation:
    """How ``out[0, channel, row, col]`` of conv ``layer`` comes about, with its two checks."""

    layer: str
    channel: int  # output channel
    row: int
    col: int
    input_shape: list[int]  # (C_in, H, W) of the conv's input
    output_shape: list[int]  # (C_out, H_out, W_out)
    kernel_size: list[int]
    stride: list[int]
    dilation: list[int]
    padding: list[int]  # (top, bottom, left, right)
    padding_mode: str  # the conv's: "zeros" windows hold 0 at padding; others a copy (reflect, ...)
    groups: int
    group: int  # which group the output channel is in
    input_rows: list[int]  # (kh,) rows of the conv's input; < 0 or >= H is padding
    input_cols: list[int]  # (kw,)
    padding_mask: list[list[bool]]  # (kh, kw) True where the tap falls on padding
    channels: list[CellChannel]
    bias: float | None
    total: float  # sum of the channel sums, plus the bias (float64): the pre-activation value
    network_total: float  # the network's own conv output at the cell (its dtype, as float)
    total_agrees: bool
    tolerance: float  # |total - network_total| allowed: float32 rounding of the products summed
    after: list[str]  # the modules applied after the conv up to the read point ("bn1 (BatchNorm2d)", "relu (ReLU)")
    read_at: str  # read_point's description: what "after the activation" reads
    post: float  # the value after the activation, computed from ``total`` in float64
    network_post: float  # the network's own output at the read point and cell
    post_agrees: bool
    post_note: str = ""  # e.g. a norm that uses the whole map, or a read point that is not this conv's chain
    engine_agrees: bool = True  # kernelscope.ops.explain's own check of the window's arithmetic
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able Python (lists, ints, floats, strings)."""
        return asdict(self)


def cell_tolerance(products_abs_sum: float, bias: float | None, precision: str = "float32") -> float:
    """The difference allowed between a float64 sum and the network's own output at a cell.

    ``precision`` is how the network computed the conv: ``"float32"`` (a float32 dot product of
    ``n`` terms errs by at most about ``n * eps * sum |terms|``, in practice by a few ``eps *
    sum |terms|``: we allow ``64 * 2**-23``), ``"tf32"`` (CUDA convolutions with
    ``torch.backends.cudnn.allow_tf32``, torch's default: inputs rounded to 10 mantissa bits, so
    ``4 * 2**-10``), ``"float16"`` (``4 * 2**-10``) or ``"bfloat16"`` (``4 * 2**-7``), each times
    ``sum |products| + |bias|``, plus ``1e-6``. In float32 this is tight enough that a wrong window, a
    wrong kernel tap or a missing bias (each at least one whole term) fails.

    Examples
    --------
    >>> round(cell_tolerance(1.0, None), 9)
    8.63e-06
    >>> round(cell_tolerance(1.0, None, "tf32"), 6)
    0.003907
    """
    factors = {"float32": 64.0 * 2.0 ** -23, "tf32": 4.0 * 2.0 ** -10, "float16": 4.0 * 2.0 ** -10,
               "bfloat16": 4.0 * 2.0 ** -7}
    if precision not in factors:
        raise KernelscopeError(f"precision must be one of {', '.join(factors)}; got {precision!r}")
    scale = float(products_abs_sum) + (abs(float(bias)) if bias is not None else 0.0)
    return factors[precision] * scale + 1e-6


def explain_cell(model: nn.Module, layer: str, image: Any, channel: int, row: int, col: int) -> CellExplanation:
    """Explain one cell ``(channel, row, col)`` of conv ``layer``'s output map for one input image.

    Parameters
    ----------
    model : nn.Module
        Any PyTorch model (eval mode is set by the caller; BatchNorm in train mode would
        change the numbers between passes).
    layer : str
        Dotted name of an ``nn.Conv2d`` that runs in the forward pass (its first call is read).
    image : ndarray or Tensor of shape (1, C, H, W) or (C, H, W)
        The model's input, normalised as the model expects.
    channel, row, col : int
        Output channel and position in the layer's output map.

    Returns
    -------
    CellExplanation
        ``.channels`` holds one :class:`CellChannel` per input channel of the output
        channel's group; ``.total_agrees`` and ``.post_agrees`` are the checks.

    Raises
    ------
    KernelscopeError
        ``layer`` is not a Conv2d or does not run, the image is not one image, or the cell
        is outside the output map.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.ReLU())
    >>> with torch.no_grad():
    ...     _ = net[0].weight.fill_(1.0); _ = net[0].bias.fill_(-1.0)
    >>> cell = explain_cell(net, "0", np.ones((1, 1, 4, 4), dtype=np.float32), 0, 0, 0)
    >>> cell.channels[0].window
    [[0.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 1.0, 1.0]]
    >>> cell.padding_mask[0], cell.total, cell.post, cell.total_agrees, cell.post_agrees
    ([True, True, True], 3.0, 3.0, True, True)
    >>> cell.read_at
    '1 (ReLU after conv 0)'
    """
    import torch
    from torch import nn

    from kernelscope.analysis.hooks import _to_tensor, capture, read_point
    from kernelscope.ops import explain

    conv = get_layer(model, layer)
    if not isinstance(conv, nn.Conv2d):
        raise KernelscopeError(f"layer {layer!r} is a {type(conv).__name__}, not a Conv2d; "
                               "a cell is explained for conv layers only")
    x = _to_tensor(image, model)
    if x.ndim != 4 or x.shape[0] != 1:
        raise KernelscopeError(f"image must be one image (1, C, H, W) or (C, H, W); got shape {tuple(image.shape)}")
    read_name, read_at = read_point(model, layer, at="activation")
    between = _chain(model, layer, read_name)  # [(name, module)] after the conv, up to and including the read point

    kept: list[torch.Tensor] = []

    def keep(module, inputs):
        if not kept:
            kept.append(inputs[0].detach())

    names = [layer] + [name for name, _ in between]

    def stop(module, inputs, output):  # everything needed is read: the rest of the network need not run
        if kept and all(name in outputs for name in names):
            raise _Stop

    handles = [conv.register_forward_pre_hook(keep)]
    try:
        with torch.no_grad(), capture(model, names) as outputs:
            handles.append(get_layer(model, read_name).register_forward_hook(stop))  # after capture's own hook
            try:
                model(x)
            except _Stop:
                pass
    finally:
        for handle in handles:
            handle.remove()
    if not kept or layer not in outputs:
        raise KernelscopeError(f"layer {layer!r} did not run in the forward pass; choose a layer that does")
    conv_in = kept[0][0].double().cpu().numpy()  # (C_in, H, W)
    conv_out = outputs[layer][0]  # (C_out, H_out, W_out), the network's dtype
    n_out, h_out, w_out = conv_out.shape
    for name, value, size in (("channel", channel, n_out), ("row", row, h_out), ("col", col, w_out)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 0 <= int(value) < size:
            raise KernelscopeError(f"{name} must be 0..{size - 1} for layer {layer!r} (output map "
                                   f"{n_out}x{h_out}x{w_out}); got {value!r}")
    channel, row, col = int(channel), int(row), int(col)

    # ---- the window: the conv's input padded exactly as torch pads it, then the dilated taps
    kh, kw = conv.kernel_size
    (sh, sw), (dh, dw) = conv.stride, conv.dilation
    left, right, top, bottom = [int(p) for p in conv._reversed_padding_repeated_twice]  # torch's own amounts
    c_in, h, w = conv_in.shape
    per_group_in, per_group_out = c_in // conv.groups, n_out // conv.groups
    group = channel // per_group_out
    first = group * per_group_in
    products = per_group_in * kh * kw
    if products > MAX_CELL_PRODUCTS:
        raise KernelscopeError(f"layer {layer!r} has {products} products per cell (more than {MAX_CELL_PRODUCTS}); "
                               "choose a narrower layer")
    rows = [row * sh + u * dh - top for u in range(kh)]  # (kh,) in input coordinates; outside: padding
    cols = [col * sw + v * dw - left for v in range(kw)]  # (kw,)
    part = conv_in[first:first + per_group_in]  # (Cg, H, W)
    mode = conv.padding_mode
    if any((top, bottom, left, right)) and mode != "zeros":
        torch_mode = {"reflect": "reflect", "replicate": "replicate", "circular": "circular"}[mode]
        padded = torch.nn.functional.pad(torch.from_numpy(part)[None], (left, right, top, bottom),
                                         mode=torch_mode)[0].numpy()  # (Cg, H+top+bottom, W+left+right)
    else:
        padded = np.pad(part, ((0, 0), (top, bottom), (left, right)))  # (Cg, Hp, Wp) zeros
    window = padded[:, [r + top for r in rows]][:, :, [q + left for q in cols]]  # (Cg, kh, kw)
    weight = conv.weight.detach()[channel].double().cpu().numpy()  # (Cg, kh, kw)
    bias = None if conv.bias is None else float(conv.bias.detach()[channel].double().cpu())
    trace = explain(window[None], weight[None], None if bias is None else np.array([bias]))  # one position
    position = trace.positions[0]
    terms = [CellChannel(channel=first + t.channel, window=t.window, kernel=t.kernel, products=t.products,
                         sum=float(t.sum)) for t in position.channels]
    total = float(position.total)
    network_total = float(conv_out[channel, row, col])
    precision = _precision(conv_out)
    tol = cell_tolerance(float(np.abs(window * weight).sum()), bias, precision)
    mask = [[not (0 <= r < h and 0 <= q < w) for q in cols] for r in rows]

    # ---- after the conv: the chain applied in float64 to the conv's output with this cell's total in it
    post, network_post, post_note, after = total, float(conv_out[channel, row, col]), "", []
    post_tol = tol
    if between:
        value = conv_out.double().clone()[None]  # (1, C_out, H_out, W_out)
        value[0, channel, row, col] = total
        for name, module in between:
            after.append(f"{name} ({type(module).__name__})")
            twin = copy.deepcopy(module).double().eval()
            with torch.no_grad():
                value = twin(value)
        post = float(value[0, channel, row, col])
        read = outputs[read_name][0]
        network_post = float(read[channel, row, col]) if tuple(read.shape) == tuple(conv_out.shape) else float("nan")
        kinds = {type(m).__name__ for _, m in between}
        if kinds & {"GroupNorm", "InstanceNorm2d", "LayerNorm"}:
            post_note = "a norm between the conv and the activation uses statistics of the whole map"
        scale = 1.0
        for _, module in between:  # a BatchNorm scales the conv's rounding error by |gamma| / sqrt(var + eps)
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_var is not None:
                gamma = 1.0 if module.weight is None else abs(float(module.weight.detach()[channel]))
                scale *= gamma / float(np.sqrt(float(module.running_var[channel]) + module.eps))
        post_tol = tol * max(scale, 1.0) + 1e-6
    post_agrees = bool(abs(post - network_post) <= post_tol)
    if between and not post_agrees:
        post_note = (f"the network's output at {read_name} is not this conv's chain ({', '.join(after)}) of its "
                     "output: something else runs before it (a shortcut added, a shared module)")
    notes = []
    if precision != "float32":
        notes.append(f"the network computed this conv in {precision}: the check allows its rounding "
                     f"({tol:.3g})")
    if mode != "zeros" and any(any(m) for m in mask):
        notes.append(f"padding mode {mode!r}: the padded taps hold copies of input values, marked as padding")
    return CellExplanation(
        layer=layer, channel=channel, row=row, col=col, input_shape=[c_in, h, w], output_shape=[n_out, h_out, w_out],
        kernel_size=[kh, kw], stride=[sh, sw], dilation=[dh, dw], padding=[top, bottom, left, right],
        padding_mode=mode, groups=int(conv.groups), group=group, input_rows=rows, input_cols=cols,
        padding_mask=mask, channels=terms, bias=bias, total=total, network_total=network_total,
        total_agrees=bool(abs(total - network_total) <= tol), tolerance=tol, after=after, read_at=read_at,
        post=post, network_post=network_post, post_agrees=post_agrees, post_note=post_note,
        engine_agrees=bool(trace.engine_agrees), notes=notes)


def _precision(output) -> str:
    """How the conv that gave ``output`` computed: float32, tf32 (CUDA with cuDNN's TF32 on), float16, bfloat16."""
    import torch

    if output.dtype in (torch.float16, torch.bfloat16):
        return str(output.dtype).removeprefix("torch.")
    if output.is_cuda and output.dtype == torch.float32 and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "float32"


class _Stop(Exception):
    """Raised by a hook to end the forward pass once the cell's layers are read."""


def _chain(model: nn.Module, layer: str, read_name: str) -> list[tuple[str, nn.Module]]:
    """The sibling modules after conv ``layer`` up to and including ``read_name`` (empty when it reads the conv)."""
    if read_name == layer:
        return []
    parent_name, _, own = layer.rpartition(".")
    parent = get_layer(model, parent_name) if parent_name else model
    siblings = list(parent.named_children())
    index = next(i for i, (name, _) in enumerate(siblings) if name == own)
    chain = []
    for name, child in siblings[index + 1:]:
        full = f"{parent_name}.{name}" if parent_name else name
        chain.append((full, child))
        if full == read_name:
            return chain
    return []  # pragma: no cover - read_point only names a later sibling
