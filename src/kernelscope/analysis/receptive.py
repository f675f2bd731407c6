"""Receptive fields: theoretical (from the layers), effective (from gradients), and a locality check.

Theoretical receptive field
---------------------------
Along a path of layers, layer ``l`` with kernel ``k_l``, stride ``s_l``, padding
``p_l`` and dilation ``d_l`` (pooling layers count as layers with ``d_l = 1``;
ReLU, batch norm, dropout and other point-wise layers pass through unchanged)::

    j_l     = j_{l-1} * s_l                               jump: input pixels between adjacent units
    r_l     = r_{l-1} + (k_l - 1) * d_l * j_{l-1}         size of the receptive field, in input pixels
    start_l = start_{l-1} + ((k_l - 1) * d_l / 2 - p_l) * j_{l-1}
                                                           centre of unit 0's field, in input pixels

with ``j_0 = 1``, ``r_0 = 1``, ``start_0 = 0`` (pixel ``i`` of the input is centred at ``i``).
Unit ``u`` of layer ``l`` sees input pixels ``start_l + u * j_l +- (r_l - 1) / 2`` (clipped to the
image; padding contributes constants). The two spatial axes are computed separately.

The layers are read from one forward pass on zeros (no gradients, the model's dtype) that
follows the tensors rather than the order of the modules: a ``torch.overrides.TorchFunctionMode``
sees every torch function call, functional ones included, and keeps the field ``(size, jump,
start)`` of every tensor computed from the input:

- ``conv2d``, ``max_pool2d``, ``avg_pool2d`` (modules or functional calls): the formula above;
- ``F.pad``: ``start -= pad_before * j`` (constant, reflect or replicate padding; circular is refused);
  a slice ``x[..., a::s, b:]`` moves ``start`` by ``a * j`` and multiplies ``j`` by ``s``;
- element-wise operations, ``cat`` / ``stack`` over channels: the union of the inputs' fields, unit by
  unit (at the same jump: from the smallest left edge to the largest right edge), which is how a
  residual shortcut, an inverted residual or dlib's padded ``add_prev`` meet their conv path;
- operations that keep the map (ReLU, batch norm, dropout, a mean over channels, ...): unchanged;
- global pooling, ``flatten``, a mean or softmax over space, group/layer/instance norm: every value depends
  on the whole input; where such a value is broadcast back onto a map (squeeze-and-excitation) the
  field grows until every unit covers the whole input. An output that is no map (Linear) has no field.

Each result is attributed to the module that returned it (forward hooks), so a field exists for every
module whose output is a map: a conv, the ReLU module after it, a whole residual block. What cannot be
followed is refused in one line naming the operation: an op that moves positions (upsampling, a transpose
of the spatial axes), maps at different jumps combined, a layer that runs twice with different fields
(torchvision's blocks call one ReLU module twice: that module has no single field, its convs do). As a
last safety net, the support of the gradient of a unit must lie inside the computed field, else the
effective field below refuses the model too.

Effective receptive field (Luo et al., 2016)
--------------------------------------------
The gradient of the centre output unit (all channels, output gradient 1 there and 0
elsewhere) with respect to the input, in absolute value, averaged over input images.
A 2-D Gaussian is fitted by matching moments (the maximum-likelihood fit of a Gaussian
density to the normalised map); its size is reported as ``4 sigma`` (+-2 sigma, ~95% of a
1-D Gaussian's mass) next to the theoretical size.

Locality
--------
A unit of a convolutional layer is a function of the pixels in its receptive field only:
changing every pixel outside it changes the unit by exactly 0 (checked in float64), while
changing the pixels inside it does change it.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kernelscope.errors import KernelscopeError
from kernelscope.models.layers import get_layer
from kernelscope.ops.shapes import as_pair

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "LayerField",
    "receptive_fields",
    "receptive_field",
    "unit_field_box",
    "EffectiveField",
    "effective_receptive_field",
    "LocalityResult",
    "locality_check",
    "FORMULA",
    "MAX_INPUT_VALUES",
    "check_input_shape",
]

#: The largest input one image may have for the receptive-field analyses: C * H * W <= 3 * 1024 * 1024 values
#: (a 1024x1024 RGB image). The effective field runs 16 such inputs in float64 with gradients, so memory grows
#: with every activation of the model; a larger shape is refused before anything is allocated.
MAX_INPUT_VALUES = 3 * 1024 * 1024


def check_input_shape(input_shape: Any, what: str = "input shape") -> tuple[int, int, int]:
    """``(C, H, W)`` as ints, each at least 1 and at most :data:`MAX_INPUT_VALUES` values in all; else one line.

    Examples
    --------
    >>> check_input_shape((3, 32, 32))
    (3, 32, 32)
    >>> check_input_shape((3, 0, 32), "--input-size")
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: --input-size must be C H W, each at least 1; got 3 0 32
    """
    try:
        shape = tuple(int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise KernelscopeError(f"{what} must be C H W (three integers), got {input_shape!r}") from None
    shown = " ".join(map(str, shape))
    if len(shape) != 3:
        raise KernelscopeError(f"{what} must be C H W (three integers), got {shown or 'nothing'}")
    if min(shape) < 1:
        raise KernelscopeError(f"{what} must be C H W, each at least 1; got {shown}")
    if shape[0] * shape[1] * shape[2] > MAX_INPUT_VALUES:
        raise KernelscopeError(f"{what} {shown} is too large: {shape[0] * shape[1] * shape[2]} values; at most "
                               f"{MAX_INPUT_VALUES} (C * H * W, e.g. 3 1024 1024)")
    return shape  # type: ignore[return-value]

FORMULA = (
    "j_l = j_{l-1} * s_l;  r_l = r_{l-1} + (k_l - 1) * d_l * j_{l-1};  "
    "start_l = start_{l-1} + ((k_l - 1) * d_l / 2 - p_l) * j_{l-1}  (j_0 = 1, r_0 = 1, start_0 = 0)"
)

@dataclass
class LayerField:
    """Receptive-field numbers of one layer's output units (per axis: ``(y, x)``)."""

    layer: str
    kind: str
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    size: tuple[int, int]  # r_l
    jump: tuple[int, int]  # j_l
    start: tuple[float, float]  # start_l
    output_size: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Geo:
    """Receptive-field geometry of a traced tensor whose last two axes are spatial, per axis ``(y, x)``."""

    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[float, float]


@dataclass(frozen=True)
class _Stop:
    """A traced tensor without a followable spatial layout, and where that began.

    ``whole`` (global pooling, flatten, a mean over space): every value may depend on the whole
    input, the spatial part of the model has ended. Otherwise an op moved positions in a way the
    tracer does not know (upsampling, a transpose of the spatial axes, ...).
    """

    whole: bool
    where: str  # "layer 'avgpool' (AdaptiveAvgPool2d)" or "the model's own forward (ResNet)"
    detail: str  # "adaptive_avg_pool2d: (1, 512, 7, 7) -> (1, 512, 1, 1)"


_SPATIAL_OPS = {"conv2d", "max_pool2d", "_max_pool2d", "max_pool2d_with_indices", "avg_pool2d"}
# Functions that end the spatial part (their output depends on the whole input) whatever their arguments.
_WHOLE_OPS = {"adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices", "group_norm",
              "layer_norm"}
# Functions that reshape: a map whose last two axes change is no map any more (the spatial part ends).
_RESHAPES = {"flatten", "view", "reshape", "unflatten", "view_as", "reshape_as"}
# Functions that combine values along the axes named by their ``dim`` argument (all axes when it is None);
# where ``dim`` is not the second argument: its position and default.
_DIM_AT = {"norm": (2, None), "quantile": (2, None), "nanquantile": (2, None), "topk": (2, -1),
           "kthvalue": (2, -1), "sort": (1, -1), "argsort": (1, -1), "normalize": (2, 1)}
_REDUCTIONS = {
    "mean", "sum", "nansum", "nanmean", "prod", "amax", "amin", "max", "min", "aminmax", "std", "var",
    "std_mean", "var_mean", "norm", "logsumexp", "median", "nanmedian", "mode", "any", "all", "argmax", "argmin",
    "softmax", "log_softmax", "softmin", "cumsum", "cumprod", "cummax", "cummin", "sort", "argsort", "topk",
    "kthvalue", "count_nonzero", "quantile", "nanquantile", "normalize",
}
# Functions whose output positions are not the input's: followed only when the spatial axes are untouched.
_MOVERS = {"transpose", "swapaxes", "swapdims", "permute", "movedim", "moveaxis", "flip", "fliplr", "flipud",
           "roll", "rot90", "t", "T", "mT", "H", "mH", "interpolate", "upsample", "upsample_nearest",
           "upsample_bilinear", "grid_sample", "pixel_shuffle", "pixel_unshuffle", "unfold", "fold",
           "conv_transpose2d", "matmul", "bmm", "einsum", "max_unpool2d", "__matmul__", "tensordot", "diagonal",
           "index_select", "gather", "take", "take_along_dim", "repeat_interleave", "scatter", "scatter_add",
           "index_put", "index_add", "masked_select", "nonzero", "where"}


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


def _tensors(value: Any) -> list:
    """Every tensor in a (nested) tuple/list/dict of arguments or results."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _tensors(item)]
    return []


def _box(geo: _Geo, axis: int) -> tuple[float, float]:
    half = (geo.size[axis] - 1) / 2
    return geo.start[axis] - half, geo.start[axis] + half


def _union(geos: list[_Geo]) -> _Geo | str:
    """The smallest field that covers every input's field (unit by unit); a reason string where jumps differ."""
    if all(g == geos[0] for g in geos):
        return geos[0]
    if any(g.jump != geos[0].jump for g in geos):
        return "it combines maps at different jumps " + ", ".join(str(g.jump) for g in geos)
    size, start = [], []
    for axis in range(2):
        lo = min(_box(g, axis)[0] for g in geos)
        hi = max(_box(g, axis)[1] for g in geos)
        size.append(int(round(hi - lo)) + 1)
        start.append((lo + hi) / 2)
    return _Geo(tuple(size), geos[0].jump, tuple(start))  # type: ignore[arg-type]


def _cover(geo: _Geo, out_hw: tuple[int, ...], in_hw: tuple[int, int]) -> _Geo:
    """``geo`` grown (about the same centres) until every one of ``out_hw`` units sees the whole input."""
    size = []
    for axis in range(2):
        half = max((geo.size[axis] - 1) / 2, geo.start[axis] + (out_hw[axis] - 1) * geo.jump[axis],
                   in_hw[axis] - 1 - geo.start[axis])
        size.append(int(round(2 * half)) + 1)
    return _Geo(tuple(size), geo.jump, geo.start)  # type: ignore[arg-type]


def _apply_window(geo: _Geo, k: tuple, s: tuple, p: tuple, d: tuple) -> _Geo:
    """The formula of the module docstring (:data:`FORMULA`), per axis, for one conv/pool window."""
    size, jump, start = list(geo.size), list(geo.jump), list(geo.start)
    for axis in range(2):
        start[axis] += ((k[axis] - 1) * d[axis] / 2 - p[axis]) * jump[axis]
        size[axis] += (k[axis] - 1) * d[axis] * jump[axis]
        jump[axis] *= s[axis]
    return _Geo(tuple(size), tuple(jump), tuple(start))  # type: ignore[arg-type]


def _window(name: str, args: tuple, kwargs: dict) -> tuple[tuple, tuple, tuple, tuple]:
    """Kernel, stride, padding, dilation of a functional conv2d / max_pool2d / avg_pool2d call."""
    if name == "conv2d":
        k = tuple(int(v) for v in args[1].shape[2:])
        s = as_pair(_arg(args, kwargs, 3, "stride", 1), "conv2d stride")
        d = as_pair(_arg(args, kwargs, 5, "dilation", 1), "conv2d dilation")
        padding = _arg(args, kwargs, 4, "padding", 0)
        if isinstance(padding, str):  # "same" (PyTorch puts the odd pixel at the end) or "valid"
            p = tuple((di * (ki - 1)) // 2 if padding == "same" else 0 for ki, di in zip(k, d, strict=True))
        else:
            p = as_pair(padding, "conv2d padding", minimum=0)
        return k, s, p, d
    k = as_pair(_arg(args, kwargs, 1, "kernel_size"), f"{name} kernel_size")
    stride = _arg(args, kwargs, 2, "stride", None)
    s = k if stride is None or (isinstance(stride, (list, tuple)) and not stride) else as_pair(stride, "stride")
    p = as_pair(_arg(args, kwargs, 3, "padding", 0), f"{name} padding", minimum=0)
    d = (1, 1) if name == "avg_pool2d" else as_pair(_arg(args, kwargs, 4, "dilation", 1), f"{name} dilation")
    return k, s, p, d


def _spatial_dims(value: Any, ndim: int) -> bool | None:
    """Whether a ``dim`` argument names one of the last two axes (None: all axes)."""
    if value is None:
        return None
    dims = value if isinstance(value, (tuple, list)) else [value]
    try:
        return any(int(v) % ndim >= ndim - 2 for v in dims)
    except (TypeError, ValueError):  # a named dimension, ...
        return True


def _slice_geo(geo: _Geo, index: Any, shape: tuple[int, ...]) -> _Geo | str | None:
    """``x[index]`` on the spatial axes: basic slices move ``start`` and multiply ``jump``; None: untouched."""
    items = list(index) if isinstance(index, tuple) else [index]
    if any(not (isinstance(i, (int, slice)) or i is None or i is Ellipsis) for i in items):
        return "it indexes the spatial axes with tensors or lists"
    if items.count(Ellipsis) > 1:
        return "it indexes with two ellipses"
    used = sum(1 for i in items if i is not None and i is not Ellipsis)
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items[at : at + 1] = [slice(None)] * (len(shape) - used)
    dims = [i for i in items if i is not None]  # one entry per input axis
    dims += [slice(None)] * (len(shape) - len(dims))
    if len(dims) != len(shape):
        return "it indexes more axes than the tensor has"
    spatial = dims[-2:]
    if any(isinstance(i, int) for i in spatial):
        return "it picks one row or column of the map"
    if all(i == slice(None) for i in spatial):
        return None
    start, jump = list(geo.start), list(geo.jump)
    for axis, piece in enumerate(spatial):
        first, _, step = piece.indices(shape[len(shape) - 2 + axis])
        if step < 1:
            return "it reverses the map"
        start[axis] += first * jump[axis]
        jump[axis] *= step
    return _Geo(geo.size, tuple(jump), tuple(start))  # type: ignore[arg-type]


class _Tracer:
    """Follows the tensors of one forward pass: a :class:`~torch.overrides.TorchFunctionMode` handler.

    ``state[id(t)]`` is the :class:`_Geo` (or :class:`_Stop`) of every tensor that depends on the
    input; tensors that do not (weights, constants) are not tracked. Every tracked tensor is kept alive
    until the pass ends, so an ``id`` is never reused for another tensor.
    """

    def __init__(self, model: nn.Module, in_hw: tuple[int, int]) -> None:
        self.in_hw = in_hw
        self.state: dict[int, _Geo | _Stop] = {}
        self.alive: list = []
        self.stack: list[tuple[str, str]] = [("", type(model).__name__)]  # modules running now

    def track(self, tensor, value: _Geo | _Stop) -> None:
        self.state[id(tensor)] = value
        self.alive.append(tensor)

    def stop(self, whole: bool, detail: str) -> _Stop:
        name, kind = self.stack[-1]
        where = f"layer {name!r} ({kind})" if name else f"the model's own forward ({kind})"
        return _Stop(whole, where, detail)

    def handle(self, func, args: tuple, kwargs: dict, out: Any) -> None:
        name = getattr(func, "__name__", "") or ""
        if name == "__get__":  # a property such as Tensor.T
            name = getattr(getattr(func, "__self__", None), "__name__", name)
        inputs = [t for t in _tensors((args, kwargs)) if id(t) in self.state]
        if name == "__setitem__":
            target = args[0]
            if any(t is not target for t in inputs):
                self.track(target, self.stop(False, "__setitem__: input-dependent values written into a tensor"))
            return
        outputs = _tensors(out)
        if not inputs or not outputs:
            return
        for output in outputs:
            self.track(output, self.rule(name, args, kwargs, inputs, output))

    def rule(self, name: str, args: tuple, kwargs: dict, inputs: list, output) -> _Geo | _Stop:
        states = [self.state[id(t)] for t in inputs]
        shapes = " + ".join(str(tuple(t.shape)) for t in inputs)
        detail = f"{name}: {shapes} -> {tuple(output.shape)}"
        stops = [s for s in states if isinstance(s, _Stop)]
        unknown = [s for s in stops if not s.whole]
        if unknown:
            return unknown[0]
        out_hw = tuple(output.shape[-2:]) if output.dim() >= 3 else None
        first = inputs[0]
        if name in _SPATIAL_OPS:
            if len(inputs) != 1 or first is not args[0] or first.dim() != 4:
                return self.stop(False, f"{detail} (weights computed from the input, or an unbatched map)")
            if stops:
                return stops[0]
            kind = name if name in ("conv2d", "avg_pool2d") else "max_pool2d"
            return _apply_window(states[0], *_window(kind, args, kwargs))  # type: ignore[arg-type]
        if name == "pad" and first is args[0] and len(inputs) == 1 and not stops:
            mode = _arg(args, kwargs, 2, "mode", "constant")
            if mode not in ("constant", "reflect", "replicate"):
                return self.stop(False, f"{detail} ({mode} padding brings in pixels from the far side)")
            pads = list(_arg(args, kwargs, 1, "pad"))
            start, geo = list(states[0].start), states[0]
            for axis, at in ((1, 0), (0, 2)):  # (left, right, top, bottom, ...): x first, then y
                if len(pads) > at:
                    start[axis] -= pads[at] * geo.jump[axis]
            return _Geo(geo.size, geo.jump, tuple(start))  # type: ignore[arg-type]
        whole = name in _WHOLE_OPS
        if name.startswith("adaptive_") and tuple(first.shape[-2:]) == out_hw:
            whole = False  # adaptive pooling to the size it already has: the identity
        if name in _REDUCTIONS and first is args[0]:
            if name in ("max", "min") and hasattr(_arg(args, kwargs, 1, "other"), "shape"):
                pass  # the element-wise maximum of two tensors
            else:
                at, default = _DIM_AT.get(name, (1, None))
                dim = _arg(args, kwargs, at, "dim", default)
                dim = None if isinstance(dim, bool) else dim  # std(x, unbiased): every axis
                whole = _spatial_dims(dim, first.dim()) is not False
        if name == "instance_norm" and _arg(args, kwargs, 5, "use_input_stats", True):
            whole = True  # statistics of this map: every unit depends on the whole map
        if name == "cat" or name == "concatenate" or name == "concat":
            dim = _arg(args, kwargs, 1, "dim", 0)
            if out_hw is not None and _spatial_dims(dim, output.dim()):
                return self.stop(False, f"{detail} (joins maps side by side)")
        if name in _MOVERS and (first is not args[0] or first.dim() < 3
                                or self._moves_spatial(name, args, kwargs, first)):
            return self.stop(False, f"{detail} (moves positions of the map)")
        if name == "__getitem__" and first is args[0] and first.dim() >= 3 and not stops:
            sliced = _slice_geo(states[0], args[1], tuple(first.shape))
            if isinstance(sliced, str):
                return self.stop(False, f"{detail} ({sliced})")
            if sliced is not None:
                return sliced
        if out_hw is None:  # no map any more (flatten, linear, a mean over everything): the spatial part ends
            return stops[0] if stops else self.stop(True, detail)
        geos = []
        for tensor, state in zip(inputs, states, strict=True):
            if isinstance(state, _Stop) or tensor.dim() < 3:
                whole = True  # a value of the whole input broadcast over the map
            elif tuple(tensor.shape[-2:]) == out_hw:
                geos.append(state)
            elif out_hw != (1, 1) and 1 in tuple(tensor.shape[-2:]):
                whole = True  # a map broadcast along a spatial axis
            elif whole or name in _RESHAPES:  # global pooling, a mean over space, a reshape of the map
                return stops[0] if stops else self.stop(True, detail)
            else:
                return self.stop(False, f"{detail} (changes the size of the map)")
        if not geos:
            return stops[0] if stops else self.stop(True, detail)
        union = _union(geos)
        if isinstance(union, str):
            return self.stop(False, f"{detail} ({union})")
        return _cover(union, out_hw, self.in_hw) if whole else union

    @staticmethod
    def _moves_spatial(name: str, args: tuple, kwargs: dict, first) -> bool:
        """Whether a transpose / permute / flip / index_select ... touches the last two axes of ``first``."""
        ndim = first.dim()
        rest = list(args[1:])
        try:
            if name == "permute":
                order = rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else rest
                order = kwargs.get("dims", order)
                return [int(v) % ndim for v in order][-2:] != [ndim - 2, ndim - 1]
            if name in ("transpose", "swapaxes", "swapdims", "movedim", "moveaxis"):
                dims = []
                for value in rest[:2]:
                    dims += list(value) if isinstance(value, (tuple, list)) else [value]
                return bool(_spatial_dims(dims, ndim))
            if name in ("flip", "roll", "rot90", "index_select", "gather", "repeat_interleave", "scatter",
                        "scatter_add", "index_add"):
                at, default = {"flip": (1, None), "roll": (2, None), "rot90": (2, [0, 1]),
                               "repeat_interleave": (2, None)}.get(name, (1, None))
                dim = _arg(args, kwargs, at, "dims" if name in ("flip", "roll", "rot90") else "dim", default)
                return _spatial_dims(dim, ndim) is not False
        except (TypeError, ValueError):
            return True
        return True


@dataclass
class _Call:
    """One finished module call of the traced pass."""

    name: str
    module: Any
    state: _Geo | _Stop | None  # None: the output does not depend on the input (or is no tensor)
    shape: tuple[int, ...] | None  # the output's shape; None when it is not a tensor


def _trace(model: nn.Module, input_shape: tuple[int, int, int]) -> list[_Call]:
    """Run one forward pass on zeros under the tracer; every module call, in the order they finish."""
    import torch
    from torch.overrides import TorchFunctionMode

    parameter = next(model.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    device = parameter.device if parameter is not None else torch.device("cpu")
    x = torch.zeros((1, *input_shape), dtype=dtype, device=device)  # (1, C, H, W)
    tracer = _Tracer(model, tuple(input_shape[1:]))  # type: ignore[arg-type]
    tracer.track(x, _Geo((1, 1), (1, 1), (0.0, 0.0)))
    calls: list[_Call] = []
    names = {module: name for name, module in model.named_modules()}

    class Mode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            tracer.handle(func, args, kwargs, out)
            return out

    def pre_hook(module, inputs):
        tracer.stack.append((names[module], type(module).__name__))

    def hook(module, inputs, output):
        tracer.stack.pop()
        if isinstance(output, torch.Tensor):
            calls.append(_Call(names[module], module, tracer.state.get(id(output)), tuple(output.shape)))
        else:
            calls.append(_Call(names[module], module, None, None))

    handles = []
    try:
        for name, module in model.named_modules():
            if name:
                try:
                    handles.append(module.register_forward_pre_hook(pre_hook))
                    handles.append(module.register_forward_hook(hook))
                except RuntimeError as error:  # a TorchScript model: torch cannot hook its layers
                    from kernelscope.analysis.hooks import scripted_hook_error

                    raise scripted_hook_error(error, [name]) from None
        with torch.no_grad(), Mode():
            try:
                model(x)
            except RuntimeError as error:  # wrong channel count, an input smaller than a kernel, ...
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                raise KernelscopeError(f"the model cannot run on one input of shape {tuple(input_shape)} (C, H, W): "
                                       f"{reason}") from None
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _describe(geo: _Geo) -> str:
    return f"size {geo.size}, jump {geo.jump}, start {geo.start}"


def receptive_fields(model: nn.Module, input_shape: tuple[int, int, int],
                     *, until: str | None = None) -> list[LayerField]:
    """Theoretical receptive field, jump and start of every conv/pool layer, in execution order.

    Parameters
    ----------
    model : nn.Module
        Any network of convolutions, pooling, padding, point-wise and element-wise operations,
        shortcuts and concatenations included (see the module docstring); evaluated once on zeros.
    input_shape : tuple of int
        ``(C, H, W)`` of one input image.
    until : str, optional
        Stop after this layer (a dotted name of any module whose output is a map: a conv, a ReLU
        module, a whole residual block; layers after it may be anything, e.g. Linear).

    Returns
    -------
    list of LayerField
        One row per Conv2d / MaxPool2d / AvgPool2d layer (and ``until`` itself), in the order they
        run, up to the end of the spatial part of the model.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3, padding=1))
    >>> [(f.layer, f.size, f.jump, f.start) for f in receptive_fields(net, (1, 12, 12))]
    [('0', (3, 3), (1, 1), (1.0, 1.0)), ('2', (4, 4), (2, 2), (1.5, 1.5)), ('3', (8, 8), (2, 2), (1.5, 1.5))]
    """
    from torch import nn

    windows = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
    if until is not None:
        get_layer(model, until)  # unknown names list the valid ones
    calls = _trace(model, check_input_shape(input_shape, "input_shape"))
    first: dict[str, _Call] = {}
    for call in calls:
        earlier = first.setdefault(call.name, call)
        if earlier.state != call.state and (call.name == until or isinstance(call.module, windows)):
            shown = [_describe(c.state) if isinstance(c.state, _Geo) else "no field" for c in (earlier, call)]
            raise KernelscopeError(
                f"layer {call.name!r} runs more than once in a forward pass with different receptive fields "
                f"({shown[0]}; then {shown[1]}); kernelscope gives one field per layer"
            )
    rows: list[LayerField] = []
    done: set[str] = set()
    for call in calls:
        if call.name in done:
            continue
        done.add(call.name)
        module, state = call.module, call.state
        if isinstance(module, windows) and isinstance(state, _Geo) and len(call.shape) == 4:
            name, kind = call.name, type(module).__name__
            k = as_pair(module.kernel_size, f"{name}.kernel_size")
            s = as_pair(module.kernel_size if module.stride is None else module.stride, f"{name}.stride")
            d = as_pair(getattr(module, "dilation", 1), f"{name}.dilation")
            if isinstance(module.padding, str):  # Conv2d padding="same" / "valid"
                p = tuple((di * (ki - 1)) // 2 if module.padding == "same" else 0
                          for ki, di in zip(k, d, strict=True))
            else:
                p = as_pair(module.padding, f"{name}.padding", minimum=0)
            rows.append(LayerField(name, kind, k, s, p, d, state.size, state.jump, state.start,
                                   tuple(int(v) for v in call.shape[2:])))
        elif isinstance(module, windows) and isinstance(state, _Stop) and not state.whole and until is None:
            break  # e.g. after an upsampling: what follows cannot be followed
        if call.name != until:
            continue
        if not isinstance(state, _Geo) or call.shape is None or len(call.shape) != 4:
            if isinstance(state, _Stop):
                raise KernelscopeError(
                    f"{state.where} runs before or inside {until!r} and changes the spatial layout in a way "
                    f"kernelscope cannot follow ({state.detail}"
                    + ("; after it every value depends on the whole input" if state.whole else "")
                    + "); receptive fields are computed through convolutions, pooling, padding, point-wise and "
                    "element-wise operations"
                )
            what = ("returned no tensor" if call.shape is None
                    else f"returned a tensor of shape {call.shape}, not a map" if len(call.shape) != 4
                    else "gives an output that does not depend on the input")
            raise KernelscopeError(f"layer {until!r} ({type(module).__name__}) {what}; receptive fields are "
                                   "defined for maps (N, C, H, W) computed from the input")
        if not rows or rows[-1].layer != until:
            rows.append(LayerField(until, type(module).__name__, (1, 1), (1, 1), (0, 0), (1, 1), state.size,
                                   state.jump, state.start, tuple(int(v) for v in call.shape[2:])))
        break
    return rows


def receptive_field(model: nn.Module, layer: str, input_shape: tuple[int, int, int]) -> LayerField:
    """The theoretical receptive field of the output units of ``layer`` (see :func:`receptive_fields`).

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 5), nn.ReLU(), nn.Conv2d(2, 2, 3, dilation=2))
    >>> receptive_field(net, "1", (1, 16, 16)).size
    (5, 5)
    >>> receptive_field(net, "2", (1, 16, 16)).size
    (9, 9)
    """
    rows = receptive_fields(model, input_shape, until=layer)
    if not rows or rows[-1].layer != layer:
        raise KernelscopeError(f"layer {layer!r} did not run in the forward pass; it has no receptive field")
    return rows[-1]


def unit_field_box(field_: LayerField, y: int, x: int) -> tuple[int, int, int, int]:
    """Input rows/cols ``(top, bottom, left, right)`` (inclusive, unclipped) seen by unit ``(y, x)``.

    Examples
    --------
    >>> f = LayerField("c", "Conv2d", (3, 3), (2, 2), (0, 0), (1, 1), (3, 3), (2, 2), (1.0, 1.0), (4, 4))
    >>> unit_field_box(f, 1, 2)
    (2, 4, 4, 6)
    """
    cy = field_.start[0] + y * field_.jump[0]
    cx = field_.start[1] + x * field_.jump[1]
    hy = (field_.size[0] - 1) / 2
    hx = (field_.size[1] - 1) / 2
    return int(np.floor(cy - hy)), int(np.floor(cy + hy)), int(np.floor(cx - hx)), int(np.floor(cx + hx))


def _double_copy(model: nn.Module) -> nn.Module:
    clone = copy.deepcopy(model).double().eval()
    for parameter in clone.parameters():
        parameter.requires_grad_(False)
    return clone


def _unit_output(model: nn.Module, layer: str, x, channel: int | None, y: int, xx: int):
    from kernelscope.analysis.hooks import capture

    with capture(model, layer, detach=False) as out:
        model(x)
    value = out[layer]
    if value.dim() != 4:
        raise KernelscopeError(f"layer {layer!r} output has shape {tuple(value.shape)}, not (N, C, H, W)")
    if channel is None:
        return value[:, :, y, xx].sum(dim=1)  # (N,)
    return value[:, channel, y, xx]  # (N,)


@dataclass
class EffectiveField:
    """Effective receptive field of the centre unit of a layer (see the module docstring)."""

    layer: str
    unit: tuple[int, int]
    grad_map: np.ndarray  # (H, W) mean |d unit / d input|, summed over input channels
    centre: tuple[float, float]  # fitted Gaussian mean (y, x) in input pixels
    sigma: tuple[float, float]  # fitted Gaussian std (y, x)
    effective_size: tuple[float, float]  # 4 * sigma
    theoretical: LayerField
    theoretical_box: tuple[int, int, int, int]
    mass_inside: float  # fraction of the gradient mass inside the theoretical field (1.0 by locality)
    n_images: int
    at: str = "activation"
    read: str = ""  # what was read, e.g. "features.5 (ReLU after conv features.4)"

    @property
    def ratio(self) -> tuple[float, float]:
        """Effective size / theoretical size, per axis."""
        return (self.effective_size[0] / self.theoretical.size[0],
                self.effective_size[1] / self.theoretical.size[1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer, "at": self.at, "read": self.read, "unit": list(self.unit),
            "centre": list(self.centre),
            "sigma": list(self.sigma), "effective_size": list(self.effective_size),
            "theoretical_size": list(self.theoretical.size), "ratio": list(self.ratio),
            "theoretical_box": list(self.theoretical_box), "mass_inside": self.mass_inside,
            "n_images": self.n_images, "fit": "2-D Gaussian by moments of the normalised |gradient| map",
            "size_definition": "4 sigma (+-2 sigma)",
        }


def gaussian_moments(weights: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    """Mean ``(y, x)`` and std ``(y, x)`` of a non-negative 2-D map taken as a density.

    Examples
    --------
    >>> w = np.zeros((5, 5)); w[2, 1] = w[2, 3] = 1.0
    >>> gaussian_moments(w)
    ((2.0, 2.0), (0.0, 1.0))
    """
    weights = np.asarray(weights, dtype=np.float64)
    total = weights.sum()
    if not total > 0:
        raise KernelscopeError("the gradient map is all zero: the unit does not depend on the input here")
    ys, xs = np.indices(weights.shape)
    my, mx = (weights * ys).sum() / total, (weights * xs).sum() / total
    vy = (weights * (ys - my) ** 2).sum() / total
    vx = (weights * (xs - mx) ** 2).sum() / total
    return (float(my), float(mx)), (float(np.sqrt(vy)), float(np.sqrt(vx)))


def effective_receptive_field(model: nn.Module, layer: str, images: Any = None, *,
                              input_shape: tuple[int, int, int] | None = None, n_random: int = 16,
                              seed: int = 0, batch_size: int = 32, at: str = "activation") -> EffectiveField:
    """Effective receptive field of the centre unit of ``layer`` (Luo et al. 2016).

    Parameters
    ----------
    model : nn.Module
    layer : str
        Dotted name of the layer.
    images : ndarray of shape (N, C, H, W), optional
        Inputs to average over (as the model expects them, normalised). Default:
        ``n_random`` standard-normal images of ``input_shape``.
    input_shape : tuple (C, H, W), optional
        Needed when ``images`` is None.
    at : {"activation", "conv"}
        The unit after the nonlinearity that follows a conv ``layer``, or the conv's own
        output (:func:`~kernelscope.analysis.hooks.read_point`).

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3))
    >>> erf = effective_receptive_field(net, "1", input_shape=(1, 9, 9), n_random=2)
    >>> erf.theoretical.size, erf.unit, erf.mass_inside
    ((5, 5), (2, 2), 1.0)
    """
    import torch

    from kernelscope.analysis.hooks import read_point

    hooked, read = read_point(model, layer, at)
    if images is None:
        if input_shape is None:
            raise KernelscopeError("give images or input_shape for the effective receptive field")
        input_shape = check_input_shape(input_shape, "input_shape")
        images = np.random.default_rng(seed).standard_normal((n_random, *input_shape)).astype(np.float32)
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 4 or images.shape[0] == 0:
        raise KernelscopeError(f"images must be a non-empty (N, C, H, W) array, got shape {images.shape}")
    theory = receptive_field(model, layer, tuple(images.shape[1:]))
    net = _double_copy(model)
    oy, ox = theory.output_size
    unit = (oy // 2, ox // 2)
    grad_sum = np.zeros(images.shape[2:], dtype=np.float64)
    for start in range(0, images.shape[0], batch_size):
        x = torch.from_numpy(images[start : start + batch_size].copy()).requires_grad_(True)
        value = _unit_output(net, hooked, x, None, *unit)
        (grad,) = torch.autograd.grad(value.sum(), x)
        grad_sum += grad.abs().sum(dim=1).sum(dim=0).numpy()
    grad_map = grad_sum / images.shape[0]
    centre, sigma = gaussian_moments(grad_map)
    box = unit_field_box(theory, *unit)
    inside = _box_mask(grad_map.shape, box)
    outside_mass = float(grad_map[~inside].sum())  # exactly 0 for a network of local layers
    mass_inside = 1.0 - outside_mass / float(grad_map.sum())
    if outside_mass > 0.0:
        raise KernelscopeError(
            f"the gradient of layer {layer!r} reaches outside its computed receptive field "
            f"(fraction inside {mass_inside:.4f}); the model does something to positions kernelscope cannot follow"
        )
    return EffectiveField(layer, unit, grad_map, centre, sigma, (4 * sigma[0], 4 * sigma[1]), theory,
                          box, mass_inside, int(images.shape[0]), at, read)


def _box_mask(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    top, bottom, left, right = box
    mask = np.zeros(shape, dtype=bool)
    mask[max(top, 0) : max(bottom + 1, 0), max(left, 0) : max(right + 1, 0)] = True
    return mask


@dataclass
class LocalityResult:
    """Outcome of :func:`locality_check` for one unit."""

    layer: str
    channel: int
    unit: tuple[int, int]
    box: tuple[int, int, int, int]  # inclusive input rows/cols of the theoretical field (unclipped)
    max_change_outside: float  # exactly 0.0 for a local unit
    changed_inside: int  # trials in which perturbing the inside changed the unit
    n_trials: int
    support_box: tuple[int, int, int, int] | None  # bounding box of nonzero gradient (clipped)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.max_change_outside == 0.0 and self.changed_inside > 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return data


def locality_check(model: nn.Module, layer: str, input_shape: tuple[int, int, int] | None = None, *,
                   images: Any = None, channel: int = 0, unit: tuple[int, int] | None = None,
                   n_trials: int = 8, seed: int = 0) -> LocalityResult:
    """Perturb pixels outside / inside a unit's theoretical receptive field and measure the change.

    In float64 on a copy of the model: every pixel outside the field is replaced by
    random noise (``n_trials`` times), and the unit's value must not change at all
    (``max_change_outside == 0.0``); replacing the pixels inside must change it.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3))
    >>> result = locality_check(net, "3", (1, 16, 16))
    >>> result.max_change_outside, result.changed_inside, result.box
    (0.0, 8, (4, 11, 4, 11))
    """
    import torch

    rng = np.random.default_rng(seed)
    if images is None:
        if input_shape is None:
            raise KernelscopeError("give images or input_shape for the locality check")
        input_shape = check_input_shape(input_shape, "input_shape")
        base = rng.standard_normal((1, *input_shape))
    else:
        base = np.asarray(images, dtype=np.float64)[:1]
        if base.ndim != 4 or base.shape[0] == 0:
            raise KernelscopeError(f"images must be a non-empty (N, C, H, W) array, got {base.shape}")
    theory = receptive_field(model, layer, tuple(base.shape[1:]))
    oy, ox = theory.output_size
    if unit is None:
        unit = (oy // 2, ox // 2)
    if not (0 <= unit[0] < oy and 0 <= unit[1] < ox):
        raise KernelscopeError(f"unit must lie in the {oy}x{ox} output of {layer!r}, got {unit}")
    net = _double_copy(model)
    box = unit_field_box(theory, *unit)
    inside = _box_mask(base.shape[2:], box)
    notes = []
    with torch.no_grad():
        reference = _unit_output(net, layer, torch.from_numpy(base), channel, *unit).item()
        outside_changes, inside_changed = [], 0
        for _ in range(n_trials):
            noise = rng.standard_normal(base.shape) * 3.0
            x_out = np.where(inside, base, noise)
            x_in = np.where(inside, noise, base)
            v_out = _unit_output(net, layer, torch.from_numpy(x_out), channel, *unit).item()
            v_in = _unit_output(net, layer, torch.from_numpy(x_in), channel, *unit).item()
            outside_changes.append(abs(v_out - reference))
            inside_changed += int(v_in != reference)
    x = torch.from_numpy(base.copy()).requires_grad_(True)
    value = _unit_output(net, layer, x, channel, *unit)
    (grad,) = torch.autograd.grad(value.sum(), x)
    support = np.nonzero(grad[0].abs().sum(dim=0).numpy())
    support_box = None
    if support[0].size:
        support_box = (int(support[0].min()), int(support[0].max()), int(support[1].min()), int(support[1].max()))
    else:
        notes.append("the gradient at the base image is zero (e.g. a dead ReLU); support not measured")
    if inside.all():
        notes.append("the receptive field covers the whole input: nothing lies outside")
    return LocalityResult(layer, int(channel), tuple(unit), box, float(max(outside_changes)),
                          inside_changed, n_trials, support_box, notes)
