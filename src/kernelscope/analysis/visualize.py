"""What each channel wants to see: activation maximisation, with its controls (Olah et al., 2017).

An image is optimised, by gradient ascent, to excite one unit of a layer. Three choices make
the result an image rather than adversarial noise, as in Lucid/Lucent:

- **a decorrelated parameterisation**: the image is the inverse real FFT of a spectrum whose
  frequency ``f`` is scaled by ``1 / max(f, 1/size)``, so that every frequency starts with the
  same gradient step in the spectrum's coordinates (no high-frequency noise wins early);
  for RGB the three channels are mixed by the square root of natural images' colour
  covariance (a channel of the parameter is a decorrelated colour); a sigmoid keeps
  pixels in [0, 1], and the model's own normalisation follows;
- **transformation robustness**: at every step each image is shifted, scaled and rotated
  by a random amount (one affine warp per image; what falls outside is the data's mean
  colour), so the optimum must survive small moves;
- **an optional diversity term**: several images per unit, their Gram matrices at the
  layer pushed apart.

All requested units of a layer are optimised in one batch. The objective is linear in the
layer's activation vector ``a(y, x)`` (one vector of C channels per position), and what is
optimised is what is measured:

====================  ============================================  ==========================
objective             of                                            optimised and reported
====================  ============================================  ==========================
``channel`` c         ``a_c``                                       spatial max
``neuron`` c          ``a_c``                                       the centre position
``direction`` u       ``u . a`` (u: unit vector, default the mean   spatial max
                      activation vector at channel c's top patches)
====================  ============================================  ==========================

**The ratio.** ``ratio = reached / data_max``: the activation the render reaches, on the same
read point and with the same reduction (spatial max, or the centre position for ``neuron``)
as the data-set maximum it is divided by (the channel's top patch; a neuron's data-set maximum
is taken at the same position). It is measured on the final image without transformations, so
it says how far the render goes beyond the best image of the data. ``reduce="mean"``
optimises the mean over positions instead (Lucid's ``channel`` objective, a texture); it is
still *reported* as the spatial max, and on a small network it stays below the data-set
maximum (docs/visualize.md has the numbers). Where ``at="activation"`` reads the
nonlinearity after a conv, the optimisation follows the nonlinearity's *input* (a ReLU's
zero gradient would freeze a unit that starts below zero); the reached value is read after it.
``starts=n`` optimises n images per unit from different random starts and keeps the one that
reaches most (activation maximisation is not convex: a start can end in a poor local optimum).

Controls, with every ratio: the same optimisation on the network at initialisation
(``init_model``: its own data-set maxima) and random unit directions in the layer's
activation space (on the trained network). A channel whose ratio is not above the init
control's is flagged ``beats_init=False`` and is not a finding.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kernelscope._display import Displayed, Picture, Summary
from kernelscope.analysis.hooks import (
    _to_tensor,
    capture,
    forward_until,
    iter_batches,
    model_device,
    read_point,
)
from kernelscope.errors import KernelscopeError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from kernelscope.analysis.toppatches import TopPatches

__all__ = ["OBJECTIVES", "COLOUR_SQRT", "fourier_scale", "FourierImage", "random_affine", "render", "data_max",
           "Evolution", "over_training", "Stability", "patch_stability", "jaccard", "settled_epoch",
           "Renders", "Visualization", "feature_visualization", "visualize_source", "parse_channels"]

OBJECTIVES = ("channel", "neuron", "direction")

#: Square root of the colour covariance of natural images (ImageNet, as Lucid measured it); the
#: columns are decorrelated colour directions. Normalised so the largest column has norm 1.
_COLOUR = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32)
COLOUR_SQRT = _COLOUR / np.linalg.norm(_COLOUR, axis=0).max()


def parse_channels(text: str | None, n_channels: int) -> list[int]:
    """``"0-3,7"`` -> ``[0, 1, 2, 3, 7]``, checked against a layer of ``n_channels`` channels.

    Examples
    --------
    >>> parse_channels("0-3,7", 8)
    [0, 1, 2, 3, 7]
    >>> parse_channels(None, 3)
    [0, 1, 2]
    >>> parse_channels("9", 8)
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: channel 9 is out of range: the layer has 8 channels (0-7)
    """
    if text is None or str(text).strip() == "":
        return list(range(n_channels))
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            if "-" in part.lstrip("-"):
                first, _, last = part.partition("-")
                values = list(range(int(first), int(last) + 1))
                if not values:
                    raise ValueError
            else:
                values = [int(part)]
        except ValueError:
            raise KernelscopeError(f"channels must look like '0-15' or '0,3,7', got {text!r}") from None
        for value in values:
            if not 0 <= value < n_channels:
                raise KernelscopeError(f"channel {value} is out of range: the layer has {n_channels} channels "
                                       f"(0-{n_channels - 1})")
            if value not in out:
                out.append(value)
    return out


# ---------------------------------------------------------------------- the parameterisation


def fourier_scale(h: int, w: int, decay: float = 1.0) -> np.ndarray:
    """Per-frequency scale ``1 / max(f, 1/max(h, w)) ** decay`` of an ``rfft2`` spectrum, shape (h, w//2 + 1).

    Examples
    --------
    >>> s = fourier_scale(4, 4)
    >>> s.shape, float(s[0, 0]), float(s[0, 2])  # the DC term is capped at max(h, w); f = 0.5 -> 2
    ((4, 3), 4.0, 2.0)
    """
    fy = np.fft.fftfreq(h)[:, None]  # (h, 1) cycles per pixel
    fx = np.fft.rfftfreq(w)[None, :]  # (1, w//2 + 1)
    f = np.sqrt(fx**2 + fy**2)  # (h, w//2 + 1)
    return (1.0 / np.maximum(f, 1.0 / max(h, w)) ** decay).astype(np.float32)


class FourierImage:
    """A batch of images ``(B, C, H, W)`` in [0, 1], parameterised by a scaled spectrum (see the module).

    The parameter is ``(B, C, H, W//2 + 1, 2)`` (real and imaginary parts), started at
    ``N(0, sd)``; :meth:`__call__` gives ``sigmoid(colour @ irfft2(scale * spectrum) / 4 + logit(start))``:
    the images start at the colour ``start`` (C,) in [0, 1], default grey 0.5.
    With ``fourier=False`` the parameter is the pre-sigmoid pixels themselves (the plain
    baseline). ``decorrelate`` mixes RGB by :data:`COLOUR_SQRT` (ignored for grey).

    Examples
    --------
    >>> import torch
    >>> image = FourierImage(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> x = image()
    >>> tuple(x.shape), bool(((x > 0) & (x < 1)).all())
    ((2, 3, 8, 8), True)
    """

    def __init__(self, batch: int, channels: int, h: int, w: int, *, fourier: bool = True, decorrelate: bool = True,
                 decay: float = 1.0, sd: float = 0.01, device: Any = "cpu", generator: torch.Generator | None = None,
                 start: Sequence[float] | None = None):
        import torch

        self.shape = (batch, channels, h, w)
        self.fourier = fourier
        self.decorrelate = decorrelate and channels == 3
        if fourier:
            size = (batch, channels, h, w // 2 + 1, 2)
            self.scale = torch.from_numpy(fourier_scale(h, w, decay))[None, None, :, :, None].to(device)
        else:
            size = (batch, channels, h, w)
        self.param = (torch.randn(size, generator=generator) * sd).to(device).requires_grad_(True)
        self.colour = torch.from_numpy(COLOUR_SQRT).to(device)
        p = np.clip(np.full(channels, 0.5) if start is None else np.asarray(start, np.float64), 0.02, 0.98)
        if p.shape != (channels,):
            raise KernelscopeError(f"start colour has {p.size} values but the image has {channels} channels")
        self.offset = torch.from_numpy(np.log(p / (1 - p)).astype(np.float32)).view(1, channels, 1, 1).to(device)

    def parameters(self) -> list[torch.Tensor]:
        return [self.param]

    def __call__(self) -> torch.Tensor:
        import torch

        b, c, h, w = self.shape
        if self.fourier:
            spectrum = torch.view_as_complex(self.scale * self.param)  # (B, C, H, W//2+1) complex
            x = torch.fft.irfft2(spectrum, s=(h, w), norm="ortho") / 4.0  # (B, C, H, W); Lucid's 4 tames saturation
        else:
            x = self.param
        if self.decorrelate:
            x = torch.einsum("ij,bjhw->bihw", self.colour, x)  # (B, 3, H, W): decorrelated -> RGB
        return torch.sigmoid(x + self.offset)


def random_affine(x: torch.Tensor, *, shift: int, scale: float = 0.05, degrees: float = 10.0,
                  fill: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image of ``x`` (B, C, H, W) shifted by up to ``shift`` px, scaled by ``1 +- scale``, rotated by up to
    ``degrees``: one bilinear warp per image. Pixels from outside the image take ``fill`` (C,), default 0.

    Examples
    --------
    >>> import torch
    >>> x = torch.rand(2, 1, 6, 6)
    >>> torch.allclose(random_affine(x, shift=0, scale=0.0, degrees=0.0), x, atol=1e-5)
    True
    """
    import torch
    import torch.nn.functional as F

    b, c, h, w = x.shape
    dev = x.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return (torch.rand(b, generator=generator) * (high - low) + low).to(dev)

    angle = uniform(-degrees, degrees) * (math.pi / 180.0)  # (B,)
    zoom = 1.0 / uniform(1.0 - scale, 1.0 + scale)  # (B,) sampling step: > 1 shrinks the image
    dy = torch.randint(-shift, shift + 1, (b,), generator=generator).to(dev).float()
    dx = torch.randint(-shift, shift + 1, (b,), generator=generator).to(dev).float()
    theta = torch.zeros(b, 2, 3, device=dev)  # maps output to input coordinates in [-1, 1]
    theta[:, 0, 0] = zoom * torch.cos(angle)
    theta[:, 0, 1] = -zoom * torch.sin(angle) * h / w
    theta[:, 1, 0] = zoom * torch.sin(angle) * w / h
    theta[:, 1, 1] = zoom * torch.cos(angle)
    theta[:, 0, 2] = 2.0 * dx / w
    theta[:, 1, 2] = 2.0 * dy / h
    grid = F.affine_grid(theta, [b, c, h, w], align_corners=False)  # (B, H, W, 2)
    base = torch.zeros(c, device=dev) if fill is None else fill.to(dev)
    base = base.view(1, c, 1, 1)
    return F.grid_sample(x - base, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + base


# ---------------------------------------------------------------------- reading a layer with gradients


class _Stop(Exception):
    """Raised in a hook to end the forward pass once the read layer has run."""


@contextmanager
def _reading(model: nn.Module, layer: str, at: str) -> Iterator[dict[str, Any]]:
    """Hooks that keep, with their autograd graph, the read point's output (``"out"``) and, when it is an
    activation module, its input (``"pre"``); the forward pass stops there (:class:`_Stop`).

    The activation's input is kept before an in-place nonlinearity can overwrite it: the
    pre-hook hands the module a copy. Hooks are removed in ``finally``.
    """
    from kernelscope.models.layers import get_layer

    hooked, where = read_point(model, layer, at)
    held: dict[str, Any] = {"read": where, "hooked": hooked}
    handles = []

    def keep_input(module, inputs):
        held["pre"] = inputs[0]
        return (inputs[0].clone(), *inputs[1:])

    def stop(name: str, output: torch.Tensor) -> None:
        held["out"] = output
        raise _Stop

    try:
        if hooked != layer:  # an activation module follows the conv: optimise its input
            handles.append(get_layer(model, hooked).register_forward_pre_hook(keep_input))
        with capture(model, hooked, callback=stop, detach=False):
            yield held
    finally:
        for handle in handles:
            handle.remove()


def _run_to_layer(model: nn.Module, x: torch.Tensor, held: dict[str, Any]) -> None:
    held.pop("pre", None)
    held.pop("out", None)
    try:
        model(x)
    except _Stop:
        pass
    if "out" not in held:
        raise KernelscopeError(f"layer {held['hooked']!r} did not run in the forward pass; choose a layer that does")
    if held["out"].dim() != 4:
        raise KernelscopeError(f"layer {held['hooked']!r} output has shape {tuple(held['out'].shape)}, not "
                               "(N, C, H, W): visualisation needs a conv layer")


def _objective_values(acts: torch.Tensor, weights: torch.Tensor, objective: str, reduce: str) -> torch.Tensor:
    """(B,) value of each image's objective on ``acts`` (B, C, H', W') with ``weights`` (B, C).

    ``reduce="max"``: spatial max (what is reported, as over the data set, and optimised by
    default); ``"mean"``: mean over positions (Lucid's texture objective). A neuron reads the
    centre position either way.
    """
    import torch

    projected = torch.einsum("bc,bchw->bhw", weights, acts)  # (B, H', W')
    if objective == "neuron":
        h, w = projected.shape[1:]
        return projected[:, h // 2, w // 2]
    flat = projected.flatten(1)  # (B, H'*W')
    if reduce not in ("max", "mean"):
        raise KernelscopeError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    return flat.mean(dim=1) if reduce == "mean" else flat.max(dim=1).values


def _diversity(acts: torch.Tensor, groups: int) -> torch.Tensor:
    """Mean cosine similarity of the Gram matrices of images of the same unit (``groups`` units, B/groups each)."""
    import torch

    b, c = acts.shape[:2]
    flat = acts.flatten(2)  # (B, C, H'W')
    gram = torch.einsum("bcn,bdn->bcd", flat, flat).flatten(1)  # (B, C*C)
    gram = torch.nn.functional.normalize(gram, dim=1).view(groups, b // groups, -1)  # (U, n, C*C)
    sim = torch.einsum("uik,ujk->uij", gram, gram)  # (U, n, n)
    n = b // groups
    return (sim.sum(dim=(1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(dim=1)).mean() / max(n * (n - 1), 1)


@dataclass
class Renders:
    """Images optimised for units of a layer (:func:`render`)."""

    images: np.ndarray  # (U * n, C_in, H, W) in [0, 1], n images per unit, unit-major (the best of the starts)
    reached: np.ndarray  # (U * n,) objective on the final untransformed image ("max"/centre statistic)
    history: np.ndarray  # (steps,) mean optimised objective over the batch (all starts) at each step
    read: str
    steps: int


def render(model: nn.Module, layer: str, weights: np.ndarray, *, shape: tuple[int, int, int],
           mean: Sequence[float] | None = None, std: Sequence[float] | None = None, at: str = "activation",
           objective: str = "channel", steps: int = 128, lr: float = 0.1, per_unit: int = 1,
           diversity: float = 0.0, transforms: bool = True, fourier: bool = True, decorrelate: bool = True,
           seed: int = 0, reduce: str = "max", starts: int = 1, start_colour: Sequence[float] | None = None
           ) -> Renders:
    """Optimise ``per_unit`` images for each row of ``weights`` (U, C): one batch, Adam on the parameterisation.

    Parameters
    ----------
    model : nn.Module
        Run on its own device; its parameters are not changed and collect no gradient.
    layer : str
        A conv layer (read as ``at`` says, :func:`~kernelscope.analysis.hooks.read_point`).
    weights : ndarray of shape (U, C)
        One linear objective per unit on the layer's activation vector (a one-hot row is a channel).
    shape : (C_in, H, W)
        The model's input; ``mean``/``std`` its normalisation of [0, 1] images.
    objective : {"channel", "neuron", "direction"}
        ``neuron`` optimises the centre position only; the others the spatial max (``reduce``).
    reduce : {"max", "mean"}
        What is optimised over positions for ``channel``/``direction``: the spatial max (the
        statistic that is reported and that the data-set maximum uses) or the mean (Lucid's texture).
    starts : int
        Random starts per image, optimised in the same batch; the one that reaches most is kept.
    start_colour : sequence of float, optional
        (C_in,) colour in [0, 1] the images start from (and that fills what transforms bring in):
        :func:`feature_visualization` passes the data's mean colour (MNIST: near black, not grey).
        Default: ``mean`` where given, else grey 0.5.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    >>> done = render(net, "0", np.eye(2, dtype=np.float32), shape=(1, 8, 8), steps=5, starts=2)
    >>> done.images.shape, done.reached.shape
    ((2, 1, 8, 8), (2,))
    """
    import torch

    if objective not in OBJECTIVES:
        raise KernelscopeError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if steps < 1:
        raise KernelscopeError(f"steps must be >= 1, got {steps}")
    if per_unit < 1:
        raise KernelscopeError(f"per_unit must be >= 1, got {per_unit}")
    if starts < 1:
        raise KernelscopeError(f"starts must be >= 1, got {starts}")
    if reduce not in ("max", "mean"):
        raise KernelscopeError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    device = model_device(model)
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    c_in, h, w = shape
    units = weights.shape[0]
    batch = units * per_unit * starts  # start-major: start s is rows [s*U*n, (s+1)*U*n)
    generator = torch.Generator().manual_seed(seed)
    if start_colour is None:
        start_colour = list(mean) if mean is not None else [0.5] * c_in
    image = FourierImage(batch, c_in, h, w, fourier=fourier, decorrelate=decorrelate, device=device,
                         generator=generator, start=start_colour)
    m = torch.tensor(list(mean) if mean is not None else [0.0] * c_in, dtype=torch.float32, device=device)
    s = torch.tensor(list(std) if std is not None else [1.0] * c_in, dtype=torch.float32, device=device)
    if m.numel() != c_in or s.numel() != c_in:
        raise KernelscopeError(f"mean/std have {m.numel()}/{s.numel()} values but the input has {c_in} channels")
    fill = torch.tensor(np.clip(np.asarray(start_colour, np.float64), 0, 1), dtype=torch.float32,
                        device=device)  # outside the image: the start (the data's mean) colour
    shift = max(1, round(0.04 * max(h, w)))  # Lucent's 8 + 4 px at 224 px is ~5%; 1 px at 28 px
    rows = np.repeat(np.asarray(weights, np.float32), per_unit, axis=0)  # (U*n, C)
    wt = torch.from_numpy(np.tile(rows, (starts, 1))).to(device)  # (B, C)
    optimiser = torch.optim.Adam(image.parameters(), lr=lr)
    history = np.zeros(steps, dtype=np.float32)
    with _reading(model, layer, at) as held:
        for step in range(steps):
            x = image()  # (B, C_in, H, W) in [0, 1]
            if transforms:
                x = random_affine(x, shift=shift, fill=fill, generator=generator)
            _run_to_layer(model, ((x - m.view(1, -1, 1, 1)) / s.view(1, -1, 1, 1)).to(dtype), held)
            target = held.get("pre", held["out"])  # (B, C, H', W')
            if not target.requires_grad:
                raise KernelscopeError(f"layer {layer!r} gives no gradient with respect to the input (the model "
                                       "runs outside autograd); visualisation needs a differentiable model")
            if step == 0 and target.shape[1] != wt.shape[1]:
                raise KernelscopeError(f"weights have {wt.shape[1]} channels but layer {layer!r} has "
                                       f"{target.shape[1]}")
            values = _objective_values(target.float(), wt, objective, reduce)  # (B,)
            loss = -values.mean()
            if diversity and per_unit > 1:
                loss = loss + diversity * _diversity(held["out"].float(), units * starts)
            optimiser.zero_grad()
            (grad,) = torch.autograd.grad(loss, image.param)  # no gradient lands on the model's parameters
            image.param.grad = grad
            optimiser.step()
            history[step] = float(values.mean().detach())
        with torch.no_grad():
            final = image()  # (B, C_in, H, W)
            _run_to_layer(model, ((final - m.view(1, -1, 1, 1)) / s.view(1, -1, 1, 1)).to(dtype), held)
            reached = _objective_values(held["out"].float(), wt, objective, "max").cpu().numpy()  # (B,)
            read = held["read"]
    images = final.float().cpu().numpy().reshape(starts, units * per_unit, *final.shape[1:])  # (S, U*n, C, H, W)
    reached = reached.reshape(starts, units * per_unit)  # (S, U*n)
    best = np.argmax(np.where(np.isnan(reached), -np.inf, reached), axis=0)  # (U*n,)
    keep = np.arange(units * per_unit)
    return Renders(images[best, keep], reached[best, keep], history, read, steps)


def data_max(model: nn.Module, layer: str, images: Any, weights: np.ndarray, *, at: str = "activation",
             objective: str = "channel", batch_size: int = 64) -> np.ndarray:
    """(U,) the largest value of each objective over ``images`` (statistic as ``render``'s ``reached``).

    For a one-hot row and ``channel`` it is the channel's top-patch value
    (:func:`~kernelscope.analysis.toppatches.top_patches`).
    """
    import torch

    hooked, _ = read_point(model, layer, at)
    wt = torch.from_numpy(np.asarray(weights, np.float32))  # (U, C)
    best = np.full(weights.shape[0], -np.inf, dtype=np.float64)
    for batch in iter_batches(images, batch_size):
        acts = forward_until(model, hooked, _to_tensor(batch, model)).float()  # (B, C, H', W')
        wd = wt.to(acts.device)
        projected = torch.einsum("uc,bchw->buhw", wd, acts)  # (B, U, H', W')
        if objective == "neuron":
            h, w = projected.shape[2:]
            values = projected[:, :, h // 2, w // 2]  # (B, U)
        else:
            values = projected.flatten(2).max(dim=2).values  # (B, U)
        best = np.maximum(best, values.max(dim=0).values.double().cpu().numpy())
    return best


def _mean_colour(images: np.ndarray, mean: Sequence[float] | None, std: Sequence[float] | None) -> list[float]:
    """(C_in,) the mean colour in [0, 1] of normalised ``images`` (N, C_in, H, W): where renders start."""
    colour = images.mean(axis=(0, 2, 3), dtype=np.float64)  # (C_in,) normalised
    if std is not None:
        colour = colour * np.asarray(std, np.float64)
    if mean is not None:
        colour = colour + np.asarray(mean, np.float64)
    return [float(v) for v in colour]


def _top_directions(model: nn.Module, layer: str, images: np.ndarray, top: TopPatches, channels: list[int],
                    at: str) -> np.ndarray:
    """(U, C) unit vectors: the mean activation vector at each channel's top patches (their max positions)."""
    hooked, _ = read_point(model, layer, at)
    rows = []
    for c in channels:
        index = top.image_index[c]  # (k,)
        acts = forward_until(model, hooked, _to_tensor(images[index], model)).float().cpu().numpy()  # (k, C, H', W')
        ys, xs = top.position[c, :, 0], top.position[c, :, 1]
        vectors = acts[np.arange(len(index)), :, ys, xs]  # (k, C)
        v = vectors.mean(axis=0)
        rows.append(v / max(np.linalg.norm(v), 1e-12))
    return np.stack(rows).astype(np.float32)


# ---------------------------------------------------------------------- the analysis, with its controls


def _tiles(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) renders -> (N, H, W) grey or (N, H, W, 3) RGB tiles for :class:`~kernelscope._display.Picture`."""
    images = np.asarray(images)
    return images.transpose(0, 2, 3, 1) if images.shape[1] == 3 else images.mean(axis=1)


@dataclass(repr=False)
class Visualization(Displayed):
    """The result of :func:`feature_visualization` for one layer (see the module for every number).

    In a notebook it shows its headline ratios, a row per unit and the renders; ``repr`` is one line.
    """

    layer: str
    read: str
    at: str
    objective: str
    channels: list[int]
    steps: int
    images: np.ndarray  # (U, C_in, H, W) in [0, 1]
    reached: np.ndarray  # (U,)
    data_max: np.ndarray  # (U,)
    init_images: np.ndarray | None  # (U, C_in, H, W)
    init_reached: np.ndarray | None
    init_data_max: np.ndarray | None
    random_reached: np.ndarray  # (R,) random directions, trained network
    random_data_max: np.ndarray  # (R,)
    top: Any = None  # TopPatches of the layer on the trained network
    history: np.ndarray | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    projections: dict[str, Any] = field(default_factory=dict)  # method -> Projections (:func:`visualize_source`)
    images_description: str = ""  # what the data-set maxima were taken over (:func:`visualize_source`)

    @staticmethod
    def _ratio(reached: np.ndarray | None, top: np.ndarray | None) -> np.ndarray | None:
        if reached is None or top is None:
            return None
        top = np.asarray(top, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(top > 0, np.asarray(reached, np.float64) / top, np.nan)

    @property
    def ratio_definition(self) -> str:
        """What ``ratio`` divides, in words (also in ``to_dict``)."""
        where = "the centre position" if self.objective == "neuron" else "the spatial max"
        return (f"ratio = activation the render reaches / the data-set maximum, both read at {self.read} with the "
                f"same reduction ({where}); init control: the same on the network at initialisation, divided by "
                "its own data-set maximum")

    @property
    def ratio(self) -> np.ndarray:
        """(U,) reached / data-set max (NaN for a unit that never fires on the data)."""
        return self._ratio(self.reached, self.data_max)

    @property
    def init_ratio(self) -> np.ndarray | None:
        return self._ratio(self.init_reached, self.init_data_max)

    @property
    def random_ratio(self) -> np.ndarray:
        return self._ratio(self.random_reached, self.random_data_max)

    @property
    def beats_init(self) -> np.ndarray:
        """(U,) bool: the ratio is above the init control's (True everywhere without an init control)."""
        if self.init_ratio is None:
            return np.ones(len(self.channels), dtype=bool)
        ratio, init = self.ratio, self.init_ratio
        return np.isfinite(ratio) & ((ratio > init) | ~np.isfinite(init))

    def _display_summary(self) -> Summary:
        s = self.summary()
        init = self.init_ratio
        table = [{"channel": c, "ratio": float(self.ratio[i]), "init ratio": None if init is None else float(init[i]),
                  "beats init": bool(self.beats_init[i])} for i, c in enumerate(self.channels)]
        return Summary(f"feature visualisation of {self.read}: {s['units']} unit(s), {self.objective} objective, "
                       f"{self.steps} steps",
                       [("median ratio", s["median_ratio"]), ("init control", s["median_init_ratio"]),
                        ("random directions", s["median_random_direction_ratio"]),
                        ("reach data-set max", s["reach_data_max"]), ("beat init", s["beat_init"]),
                        ("never fire on the data", s["dead_on_data"])],
                       table=table, notes=[self.ratio_definition], brief=4)

    def _display_picture(self) -> Picture:
        return Picture(_tiles(self.images), caption=f"renders of {self.read}, one per unit", signed=False)

    def summary(self) -> dict[str, Any]:
        """Medians over the layer's units and how many beat the init control / reach the data-set max."""
        def median(a):
            a = None if a is None else np.asarray(a, dtype=np.float64)
            return None if a is None or not np.isfinite(a).any() else float(np.nanmedian(a))

        ratio = self.ratio
        return {
            "units": len(self.channels), "median_ratio": median(ratio), "median_init_ratio": median(self.init_ratio),
            "median_random_direction_ratio": median(self.random_ratio),
            "reach_data_max": int(np.sum(ratio >= 1.0)), "beat_init": int(self.beats_init.sum()),
            "dead_on_data": int(np.sum(~(np.asarray(self.data_max) > 0))),
        }

    def to_dict(self) -> dict[str, Any]:
        from kernelscope._io import finite_or_none

        def values(a):
            return None if a is None else [finite_or_none(float(v)) for v in np.asarray(a).ravel()]

        init_ratio = self.init_ratio
        return {
            "layer": self.layer, "read": self.read, "at": self.at, "objective": self.objective, "steps": self.steps,
            "ratio_definition": self.ratio_definition, "settings": self.settings, "summary": self.summary(),
            "units": [
                {"channel": c, "reached": finite_or_none(float(self.reached[i])),
                 "data_max": finite_or_none(float(self.data_max[i])),
                 "ratio": finite_or_none(float(self.ratio[i])),
                 "init_reached": None if self.init_reached is None else finite_or_none(float(self.init_reached[i])),
                 "init_data_max": None if self.init_data_max is None else finite_or_none(float(self.init_data_max[i])),
                 "init_ratio": None if init_ratio is None else finite_or_none(float(init_ratio[i])),
                 "beats_init": bool(self.beats_init[i])}
                for i, c in enumerate(self.channels)
            ],
            "random_directions": {"reached": values(self.random_reached), "data_max": values(self.random_data_max),
                                  "ratio": values(self.random_ratio)},
        }


def feature_visualization(model: nn.Module, layer: str, images: Any, *, channels: Sequence[int] | None = None,
                          shape: tuple[int, int, int] | None = None, mean: Sequence[float] | None = None,
                          std: Sequence[float] | None = None, at: str = "activation", objective: str = "channel",
                          steps: int = 128, lr: float = 0.1, per_unit: int = 1, diversity: float = 0.0,
                          transforms: bool = True, fourier: bool = True, decorrelate: bool = True,
                          init_model: nn.Module | None = None, random_directions: int = 4, k: int = 9,
                          display: Any = None, batch_size: int = 64, seed: int = 0, reduce: str = "max",
                          starts: int = 1) -> Visualization:
    """Render the ``channels`` of ``layer`` and measure each against the data set and the controls.

    Parameters
    ----------
    model : nn.Module
    layer : str
        A Conv2d layer (``at`` as in :func:`~kernelscope.analysis.hooks.read_point`).
    images : ndarray of shape (N, C_in, H, W)
        Data-set images, normalised as the model expects: the data-set maxima and top patches.
    channels : sequence of int, optional
        Default: every channel of the layer.
    shape : (C_in, H, W), optional
        The input to render; default the images' shape.
    init_model : nn.Module, optional
        The network at initialisation (``Source.init_model``): the init control. None: no init control.
    random_directions : int
        Random unit directions in the layer's activation space rendered in the same batch (control).
    k : int
        Top patches per channel (kept for drawing and for ``direction``'s vectors).
    reduce, starts
        As in :func:`render` (the optimised reduction over positions; random starts per image).
        The init control and the random directions are rendered with the same settings.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    >>> _ = net[0].weight.data.abs_(), net[0].bias.data.zero_()  # both channels like bright patches
    >>> data = (0.5 + 0.05 * np.random.default_rng(0).standard_normal((8, 1, 9, 9))).astype(np.float32)
    >>> result = feature_visualization(net, "0", data, steps=30, random_directions=1)
    >>> result.images.shape, bool((result.ratio > 1).all())  # a linear unit is easily pushed past the data
    ((2, 1, 9, 9), True)
    """
    from torch import nn as _nn

    from kernelscope.analysis.toppatches import top_patches
    from kernelscope.models.layers import get_layer

    module = get_layer(model, layer)
    if not isinstance(module, _nn.Conv2d):
        raise KernelscopeError(f"layer {layer!r} is a {type(module).__name__}, not a Conv2d: visualise a conv layer "
                               "(see the model's conv layers)")
    if objective not in OBJECTIVES:
        raise KernelscopeError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if steps < 1:
        raise KernelscopeError(f"steps must be >= 1, got {steps}")
    array = np.asarray(images, dtype=np.float32)
    if array.ndim != 4 or array.shape[0] == 0:
        raise KernelscopeError(f"images must be a non-empty array (N, C, H, W), got shape {array.shape}")
    shape = tuple(shape) if shape is not None else tuple(array.shape[1:])
    n_out = module.out_channels
    channels = list(range(n_out)) if channels is None else [int(c) for c in channels]
    for c in channels:
        if not 0 <= c < n_out:
            raise KernelscopeError(f"channel {c} is out of range: layer {layer!r} has {n_out} channels (0-{n_out - 1})")
    if not channels:
        raise KernelscopeError("no channels to visualise; give at least one")
    top = top_patches(model, layer, array, k=k, display=display, batch_size=batch_size, at=at,
                      desc=f"top patches {layer}")
    if objective == "direction":
        weights = _top_directions(model, layer, array, top, channels, at)
    else:
        weights = np.eye(n_out, dtype=np.float32)[channels]  # (U, C) one-hot
    rng = np.random.default_rng(seed + 1)
    random = rng.normal(size=(random_directions, n_out)).astype(np.float32)
    random /= np.linalg.norm(random, axis=1, keepdims=True).clip(1e-12)
    colour = _mean_colour(array, mean, std)
    options = dict(shape=shape, mean=mean, std=std, at=at, steps=steps, lr=lr, transforms=transforms,
                   fourier=fourier, decorrelate=decorrelate, seed=seed, reduce=reduce, starts=starts,
                   start_colour=colour)
    units = len(channels)
    both = np.concatenate([weights, random])  # (U + R, C)
    if per_unit == 1:  # units and random directions in one batch
        done = render(model, layer, both, objective=objective, **options)
        images_, reached, random_reached = done.images[:units], done.reached[:units], done.reached[units:]
    else:  # several images per unit, pushed apart: the random directions in a batch of their own
        done = render(model, layer, weights, objective=objective, per_unit=per_unit, diversity=diversity, **options)
        images_, reached = done.images, done.reached
        random_reached = (render(model, layer, random, objective=objective, **options).reached
                          if random_directions else np.zeros(0, np.float32))
    maxima = data_max(model, layer, array, both, at=at, objective=objective, batch_size=batch_size)
    unit_max = np.repeat(maxima[:units], per_unit)
    init_images = init_reached = init_max = None
    if init_model is not None:
        init = render(init_model, layer, weights, objective=objective, per_unit=per_unit,
                      diversity=diversity if per_unit > 1 else 0.0, **options)
        init_images, init_reached = init.images, init.reached
        init_max = np.repeat(data_max(init_model, layer, array, weights, at=at, objective=objective,
                                      batch_size=batch_size), per_unit)
    unit_channels = [c for c in channels for _ in range(per_unit)]
    settings = {"steps": steps, "lr": lr, "per_unit": per_unit, "diversity": diversity, "transforms": transforms,
                "reduce": reduce, "starts": starts, "start_colour": [round(v, 4) for v in colour],
                "fourier": fourier, "decorrelate": decorrelate and shape[0] == 3, "seed": seed,
                "shape": list(shape), "random_directions": random_directions, "n_images": int(array.shape[0]), "k": k}
    return Visualization(layer, done.read, at, objective, unit_channels, steps, images_, reached, unit_max,
                         init_images, init_reached, init_max, random_reached, maxima[units:], top, done.history,
                         settings)


def visualize_source(source: Any, *, layer: str | None = None, channels: str | Sequence[int] | None = None,
                     images: str | None = None, limit: int | None = 2000, projections: bool = True,
                     seed: int = 0, batch_size: int = 64, **options: Any) -> Visualization:
    """:func:`feature_visualization` of a SOURCE (run directory, model file, pretrained name or
    :class:`~kernelscope.sources.Source`): its images, normalisation and init control, checked
    input, and (``projections``) the guided-backprop and deconvnet projections of the top patches.

    What ``kernelscope visualize``, the report's section and the demo's stage run.

    Parameters
    ----------
    source : str, PathLike or Source
    layer : str, optional
        A conv layer; default the deepest.
    channels : str or sequence of int, optional
        ``"0-15"``, ``"0,3,7"`` or a list; default all.
    images : str, optional
        The image set (``Source.images``); default ``"test"`` for a run, else ``"faces"``.
    **options
        Passed to :func:`feature_visualization` (``objective``, ``steps``, ``starts``, ``k``, ...).

    Examples
    --------
    >>> import tempfile
    >>> from kernelscope.train import preset, train
    >>> run = train(preset("structure", epochs=1, train_limit=64, n_probe=2, progress=False), tempfile.mkdtemp())
    >>> result = visualize_source(run.path, channels="0-1", steps=4, limit=32, k=2, random_directions=1)
    >>> result.channels, sorted(result.projections)
    ([0, 1], ['deconvnet', 'guided'])
    """
    from torch import nn as _nn

    from kernelscope.analysis.projection import project_top_patches
    from kernelscope.models.layers import get_layer
    from kernelscope.sources import Source, open_source

    src = source if isinstance(source, Source) else open_source(source)
    if not src.runnable:
        raise KernelscopeError(f"{src.label} holds weights without the computation, so it has no gradients to "
                               "optimise an image with; give --arch (a state dict), or --trust-code (TorchScript)")
    layer = src.pick_layer(layer)
    module = get_layer(src.model, layer)
    if not isinstance(module, _nn.Conv2d):
        raise KernelscopeError(f"layer {layer!r} is a {type(module).__name__}, not a Conv2d; conv layers: "
                               f"{', '.join(src.conv_layers[:12])}")
    if channels is None or isinstance(channels, str):
        chosen = parse_channels(channels, module.out_channels)
    else:
        chosen = parse_channels(",".join(str(int(c)) for c in channels), module.out_channels)
    inputs, raw, description = src.images(images or ("test" if src.run is not None else "faces"), limit=limit)
    result = feature_visualization(src.model, layer, inputs, channels=chosen, shape=tuple(inputs.shape[1:]),
                                   mean=src.mean, std=src.std, init_model=src.init_model(seed), display=raw,
                                   batch_size=batch_size, seed=seed, **options)
    result.images_description = description
    if projections:
        for method in ("guided", "deconvnet"):
            result.projections[method] = project_top_patches(src.model, layer, inputs, result.top, method=method,
                                                             channels=chosen, batch_size=batch_size)
    return result


# ---------------------------------------------------------------------- over training (a run directory)


@dataclass(repr=False)
class Evolution(Displayed):
    """Renders of a layer's channels at the recorded epochs (:func:`over_training`)."""

    layer: str
    epochs: list[int]
    channels: list[int]
    images: list[np.ndarray]  # per epoch (U, C_in, H, W)
    ratios: list[np.ndarray]  # per epoch (U,) reached / that epoch's data-set max

    def _display_summary(self) -> Summary:
        medians = [float(np.nanmedian(r)) if np.isfinite(r).any() else None for r in self.ratios]
        return Summary(f"renders of {self.layer} over training: {len(self.channels)} channel(s), "
                       f"{len(self.epochs)} epochs",
                       [("epochs", f"{self.epochs[0]}-{self.epochs[-1]}" if self.epochs else "none"),
                        ("median ratio, last epoch", medians[-1] if medians else None)],
                       table=[{"epoch": e, "median ratio": m} for e, m in zip(self.epochs, medians, strict=True)])

    def _display_picture(self) -> Picture | None:
        if not self.images:
            return None
        return Picture(_tiles(np.concatenate(self.images)), columns=len(self.channels), signed=False,
                       caption="rows: epochs; columns: channels")

    def to_dict(self) -> dict[str, Any]:
        from kernelscope._io import finite_or_none

        return {"layer": self.layer, "epochs": self.epochs, "channels": self.channels,
                "ratios": [[finite_or_none(float(v)) for v in r] for r in self.ratios]}


def over_training(run: Any, layer: str, images: Any, *, channels: Sequence[int] | None = None,
                  epochs: Sequence[int] | None = None, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None, at: str = "activation", objective: str = "channel",
                  steps: int = 128, seed: int = 0, batch_size: int = 64, reduce: str = "max",
                  starts: int = 1) -> Evolution:
    """Render ``channels`` of ``layer`` at every checkpointed epoch of ``run`` (same seed: the same start image).

    Each epoch's ratio is the render's value over that epoch's own data-set maximum (same read point and
    reduction, as in :func:`feature_visualization`); the renders start from the data's mean colour.
    """
    from kernelscope.models.layers import get_layer

    epochs = list(run.checkpoint_epochs if epochs is None else epochs)
    if not epochs:
        raise KernelscopeError("the run has no checkpoints (checkpoints/epoch_*.pt): renders need the weights")
    array = np.asarray(images, dtype=np.float32)
    colour = _mean_colour(array, mean, std)
    renders, ratios, chosen = [], [], None
    for epoch in epochs:
        model = run.model(epoch)
        n_out = get_layer(model, layer).out_channels
        chosen = list(range(n_out)) if channels is None else [int(c) for c in channels]
        weights = np.eye(n_out, dtype=np.float32)[chosen]
        done = render(model, layer, weights, shape=tuple(array.shape[1:]), mean=mean, std=std, at=at,
                      objective=objective, steps=steps, seed=seed, reduce=reduce, starts=starts,
                      start_colour=colour)
        top = data_max(model, layer, array, weights, at=at, objective=objective, batch_size=batch_size)
        renders.append(done.images)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios.append(np.where(top > 0, done.reached / top, np.nan))
    return Evolution(layer, epochs, chosen or [], renders, ratios)


@dataclass(repr=False)
class Stability(Displayed):
    """Per layer and epoch, the mean over channels of the Jaccard overlap of top-k image sets with the final epoch."""

    layers: list[str]
    epochs: list[int]
    k: int
    n_images: int
    jaccard: dict[str, list[float]]
    settled: dict[str, int | None]  # the first epoch from which the overlap stays >= threshold
    threshold: float = 0.8

    def _display_summary(self) -> Summary:
        return Summary(f"top-{self.k} patch stability over {len(self.epochs)} epochs, {self.n_images} images",
                       [(f"{layer} stable from epoch", self.settled[layer]) for layer in self.layers]
                       + [("chance overlap", self.k / max(self.n_images, 1))],
                       table=[{"layer": layer, **{f"e{e}": v for e, v in zip(self.epochs, self.jaccard[layer],
                                                                              strict=True)}}
                              for layer in self.layers],
                       notes=[f"stable: Jaccard overlap with the final epoch >= {self.threshold} from that epoch on"])

    def to_dict(self) -> dict[str, Any]:
        return {"layers": self.layers, "epochs": self.epochs, "k": self.k, "n_images": self.n_images,
                "threshold": self.threshold, "jaccard": self.jaccard, "settled": self.settled,
                "chance": self.k / self.n_images}


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|A & B| / |A | B| of two index sets.

    Examples
    --------
    >>> jaccard(np.array([1, 2, 3]), np.array([2, 3, 4]))
    0.5
    """
    sa, sb = set(np.asarray(a).tolist()), set(np.asarray(b).tolist())
    return len(sa & sb) / max(len(sa | sb), 1)


def settled_epoch(epochs: Sequence[int], overlaps: Sequence[float], threshold: float = 0.8) -> int | None:
    """The first epoch from which every later overlap is >= ``threshold`` (None when the last is below).

    Examples
    --------
    >>> settled_epoch([0, 1, 2, 3], [0.1, 0.9, 0.7, 1.0])
    3
    >>> settled_epoch([0, 1, 2], [0.1, 0.85, 1.0])
    1
    """
    found = None
    for epoch, value in zip(reversed(list(epochs)), reversed(list(overlaps)), strict=True):
        if value >= threshold:
            found = epoch
        else:
            break
    return found


def patch_stability(run: Any, images: Any, *, layers: Sequence[str] | None = None, k: int = 9,
                    epochs: Sequence[int] | None = None, at: str = "activation", threshold: float = 0.8,
                    batch_size: int = 64) -> Stability:
    """For each conv layer, from which epoch its channels' top-k image sets stay (Jaccard >= ``threshold``)
    those of the final epoch. The chance overlap of two random k-sets of N images is about k/N."""
    from kernelscope.analysis.toppatches import top_patches
    from kernelscope.models.layers import conv_layer_names

    epochs = list(run.checkpoint_epochs if epochs is None else epochs)
    if not epochs:
        raise KernelscopeError("the run has no checkpoints (checkpoints/epoch_*.pt): top patches need the weights")
    array = np.asarray(images, dtype=np.float32)
    sets: dict[str, list[np.ndarray]] = {}
    for epoch in epochs:
        model = run.model(epoch)
        names = list(layers) if layers is not None else conv_layer_names(model)
        for name in names:
            top = top_patches(model, name, array, k=k, at=at, batch_size=batch_size, desc=f"epoch {epoch} {name}")
            sets.setdefault(name, []).append(top.image_index)  # (C, k)
    overlap = {name: [float(np.mean([jaccard(a[c], per_epoch[-1][c]) for c in range(a.shape[0])]))
                      for a in per_epoch] for name, per_epoch in sets.items()}
    settled = {name: settled_epoch(epochs, values, threshold) for name, values in overlap.items()}
    return Stability(list(sets), epochs, k, int(array.shape[0]), overlap, settled, threshold)
