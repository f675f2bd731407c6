"""Receptive fields: theoretical (from the layers), effective (from gradients), and a locality check.

Theoretical receptive field
---------------------------
For a chain of layers, layer ``l`` with kernel ``k_l``, stride ``s_l``, padding
``p_l`` and dilation ``d_l`` (pooling layers count as layers with ``d_l = 1``;
ReLU, batch norm, dropout and other point-wise layers pass through unchanged)::

    j_l     = j_{l-1} * s_l                               jump: input pixels between adjacent units
    r_l     = r_{l-1} + (k_l - 1) * d_l * j_{l-1}         size of the receptive field, in input pixels
    start_l = start_{l-1} + ((k_l - 1) * d_l / 2 - p_l) * j_{l-1}
                                                           centre of unit 0's field, in input pixels

with ``j_0 = 1``, ``r_0 = 1``, ``start_0 = 0`` (pixel ``i`` of the input is centred at ``i``).
Unit ``u`` of layer ``l`` sees input pixels ``start_l + u * j_l +- (r_l - 1) / 2`` (clipped to the
image; padding contributes constants). The two spatial axes are computed separately.

The chain is read from a forward pass (forward hooks record the order in which leaf
modules run and their input/output sizes), so custom ``forward`` methods are fine as
long as the layers form a chain. A model that branches (a residual block with a
down-sampling shortcut, pooling done with a functional call) is detected and
rejected with a clear error; as a last safety net, the support of the gradient of
a unit must lie inside the computed field, else the model is rejected too.

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

# Leaf modules that never mix pixels (the field passes through them unchanged).
_POINTWISE = (
    "ReLU", "ReLU6", "LeakyReLU", "PReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish", "Sigmoid",
    "Tanh", "Hardtanh", "Hardswish", "Hardsigmoid", "Softplus", "Identity", "Dropout", "Dropout2d",
    "AlphaDropout", "BatchNorm2d", "InstanceNorm2d", "GroupNorm", "Softmax2d", "LogSigmoid",
    "Threshold", "FeatureAlphaDropout", "SyncBatchNorm", "LocalResponseNorm",
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


def _trace_leaves(model: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[str, nn.Module, tuple, tuple]]:
    """Run a forward pass and record (name, module, input shape, output shape) of each leaf call."""
    import torch

    names = {module: name for name, module in model.named_modules()}
    calls: list[tuple[str, nn.Module, tuple, tuple]] = []
    handles = []

    def hook(module, inputs, output):
        in_shape = tuple(inputs[0].shape) if inputs and hasattr(inputs[0], "shape") else ()
        out_shape = tuple(output.shape) if hasattr(output, "shape") else ()
        calls.append((names[module], module, in_shape, out_shape))

    try:
        for name, module in model.named_modules():
            if name and not list(module.children()):
                try:
                    handles.append(module.register_forward_hook(hook))
                except RuntimeError as error:  # a TorchScript model: torch cannot hook its layers
                    from kernelscope.analysis.hooks import scripted_hook_error

                    raise scripted_hook_error(error, [name]) from None
        parameter = next(model.parameters(), None)
        dtype = parameter.dtype if parameter is not None else torch.float32
        device = parameter.device if parameter is not None else torch.device("cpu")
        with torch.no_grad():
            try:
                model(torch.zeros((1, *input_shape), dtype=dtype, device=device))
            except RuntimeError as error:  # wrong channel count, an input smaller than a kernel, ...
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                raise KernelscopeError(f"the model cannot run on one input of shape {tuple(input_shape)} (C, H, W): "
                                       f"{reason}") from None
    finally:
        for handle in handles:
            handle.remove()
    return calls


def receptive_fields(model: nn.Module, input_shape: tuple[int, int, int],
                     *, until: str | None = None) -> list[LayerField]:
    """Theoretical receptive field, jump and start of every conv/pool layer, in execution order.

    Parameters
    ----------
    model : nn.Module
        A chain of layers (see the module docstring); evaluated once on zeros.
    input_shape : tuple of int
        ``(C, H, W)`` of one input image.
    until : str, optional
        Stop after this layer (a dotted name; layers after it may be anything, e.g. Linear).

    Returns
    -------
    list of LayerField
        One row per Conv2d / MaxPool2d / AvgPool2d layer (and ``until`` itself).

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3, padding=1))
    >>> [(f.layer, f.size, f.jump, f.start) for f in receptive_fields(net, (1, 12, 12))]
    [('0', (3, 3), (1, 1), (1.0, 1.0)), ('2', (4, 4), (2, 2), (1.5, 1.5)), ('3', (8, 8), (2, 2), (1.5, 1.5))]
    """
    from torch import nn

    if until is not None:
        get_layer(model, until)  # unknown names list the valid ones
    calls = _trace_leaves(model, check_input_shape(input_shape, "input_shape"))
    size, jump, start = [1, 1], [1, 1], [0.0, 0.0]
    spatial = tuple(int(v) for v in input_shape[1:])
    previous = "the input"
    rows: list[LayerField] = []
    seen: set[str] = set()
    inside_until = (lambda n: n == until or n.startswith(until + ".")) if until is not None else None
    last_leaf = None
    if inside_until is not None:
        matching = [c[0] for c in calls if inside_until(c[0])]
        last_leaf = matching[-1] if matching else None
    for name, module, in_shape, out_shape in calls:
        if name in seen:
            raise KernelscopeError(
                f"layer {name!r} runs more than once in a forward pass; receptive fields need a chain "
                "of layers each used once"
            )
        seen.add(name)
        kind = type(module).__name__
        is_spatial = isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d))
        followable = is_spatial or kind in _POINTWISE or (
            len(in_shape) == 4 and len(out_shape) == 4 and tuple(out_shape[2:]) == tuple(in_shape[2:])
        )
        if not followable:
            if until is None:
                break  # e.g. Flatten / Linear / adaptive pooling: the spatial part of the model ends here
            raise KernelscopeError(
                f"layer {name!r} ({kind}) runs before or inside {until!r} and changes the spatial "
                "layout in a way kernelscope cannot follow; receptive fields are computed through "
                "Conv2d, MaxPool2d, AvgPool2d and point-wise layers"
            )
        if is_spatial or kind not in _POINTWISE:
            if tuple(in_shape[2:]) != spatial:
                raise KernelscopeError(
                    f"the model is not a chain: layer {name!r} gets a {in_shape[2]}x{in_shape[3]} input "
                    f"but {previous} gives {spatial[0]}x{spatial[1]} (a branch, a shortcut or a "
                    "functional pooling call); receptive fields need a chain of Conv2d, pooling and "
                    "point-wise layers"
                )
        if is_spatial:
            k = as_pair(module.kernel_size, f"{name}.kernel_size")
            s = as_pair(module.kernel_size if module.stride is None else module.stride, f"{name}.stride")
            d = as_pair(getattr(module, "dilation", 1), f"{name}.dilation")
            if isinstance(module.padding, str):  # Conv2d padding="same" / "valid"
                p = tuple((di * (ki - 1)) // 2 if module.padding == "same" else 0
                          for ki, di in zip(k, d, strict=True))
            else:
                p = as_pair(module.padding, f"{name}.padding", minimum=0)
            for axis in range(2):
                start[axis] += ((k[axis] - 1) * d[axis] / 2 - p[axis]) * jump[axis]
                size[axis] += (k[axis] - 1) * d[axis] * jump[axis]
                jump[axis] *= s[axis]
            spatial = tuple(int(v) for v in out_shape[2:])
            previous = repr(name)
            rows.append(LayerField(name, kind, k, s, p, d, tuple(size), tuple(jump), tuple(start),
                                   spatial))
        if name == last_leaf:
            if not rows or rows[-1].layer != until:
                rows.append(LayerField(until, type(get_layer(model, until)).__name__, (1, 1), (1, 1),
                                       (0, 0), (1, 1), tuple(size), tuple(jump), tuple(start), spatial))
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
    outside_mass = float(grad_map[~inside].sum())  # exactly 0 for a chain of local layers
    mass_inside = 1.0 - outside_mass / float(grad_map.sum())
    if outside_mass > 0.0:
        raise KernelscopeError(
            f"the gradient of layer {layer!r} reaches outside its computed receptive field "
            f"(fraction inside {mass_inside:.4f}); the model is not a chain kernelscope can follow"
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
