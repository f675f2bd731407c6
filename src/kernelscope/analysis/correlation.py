"""Does a channel measure correlation with a template? Linear templates and raw vs normalised correlation.

Linear templates
----------------
For every channel ``c`` of a layer, the ridge regression from a unit's receptive-field patch ``p``
(the input pixels the unit sees, ``C_in x r_h x r_w`` values, zero outside the image as the first
conv pads) to its response ``y``::

    y ~ <t_c, p> + b_c                      t_c: the channel's linear template, b_c: its offset

fitted over units at a few fixed positions of every image (``positions x positions`` units spread
over the map; one template is shared by the positions, as the conv's weights are). The fit needs
only the sufficient statistics ``X^T X``, ``X^T y`` and ``y^T y`` of each of three image splits
(image ``i`` goes to *fit* when ``i % 5 < 3``, *validation* when ``i % 5 == 3``, *test* when
``i % 5 == 4``), accumulated in float64 in one streaming pass: memory is ``3 (D + 1)^2`` values
whatever the number of images (``D`` the patch size; a patch larger than ``max_features`` values
is averaged over ``f x f`` pixel blocks first, and the template is then drawn at that resolution).

The ridge penalty ``lambda = alpha * trace(A) / D`` (``A`` the centred ``X^T X`` of the fit split;
the offset is not penalised) is chosen per channel from ``ALPHAS`` by the validation split's error;
the template is then refitted on fit + validation and scored on the *test* split:

    R^2 = 1 - SSE_test / SST_test           how much of the channel is a correlation with one template

At the first layer read before the nonlinearity (``at="conv"``) the response *is* ``<kernel, p> +
bias``: the template equals the kernel and R^2 = 1 (pinned by a test). After the ReLU and deeper,
R^2 falls; the network at initialisation is the control.

Raw versus normalised correlation
---------------------------------
A conv output (less the bias) is ``<w, p> = |p| |w| cos(p, w)``: an *unnormalised* correlation, large
for a high-contrast patch that matches only loosely. Template matching normalises it: Pearson's
correlation of patch and template (OpenCV's ``TM_CCOEFF_NORMED``)::

    ncc(p, w) = <p - mean(p), w - mean(w)> / (|p - mean(p)| |w - mean(w)|)

:func:`raw_vs_normalised` ranks the first layer's units by activation and by ``ncc`` and gives,
per channel, Spearman's rank correlation of the two, of activation and contrast ``|p|``, of
activation and match ``cos(p, w)``, and the overlap of the top units by each. Both maps are
computed with the project's engine (:func:`kernelscope.ops.correlate2d`), and
:func:`normalised_cross_correlation` is checked against ``cv2.matchTemplate`` in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kernelscope._display import Displayed, Picture, Summary, kernel_tiles
from kernelscope._io import finite_or_none
from kernelscope.analysis.hooks import (
    capture,
    forward_until,
    iter_batches,
    model_device,
    read_point,
)
from kernelscope.analysis.passes import Batch, Checkpoint, as_images, run_pass
from kernelscope.analysis.receptive import receptive_field, unit_field_box
from kernelscope.errors import KernelscopeError
from kernelscope.models.layers import get_layer
from kernelscope.ops import correlate2d
from kernelscope.ops._threads import single_threaded_blas
from kernelscope.train.distributed import Context

if TYPE_CHECKING:
    from torch import nn

__all__ = ["LinearTemplates", "linear_templates", "layer_templates", "DepthCurve", "correlation_depth",
           "normalised_cross_correlation", "RawVsNormalised", "raw_vs_normalised", "ALPHAS", "SPLITS",
           "MIN_IMAGES"]

#: Ridge penalties, relative to the mean eigenvalue of the centred X^T X (trace / D); chosen per channel.
ALPHAS = tuple(10.0 ** np.arange(-8, 3))
#: Image i goes to split SPLITS[i % 5]: 3/5 fit, 1/5 validation (chooses alpha), 1/5 test (the reported R^2).
SPLITS = ("fit", "fit", "fit", "val", "test")
#: Fewest images: every split needs at least one image.
MIN_IMAGES = 5


@dataclass
class _Stats:
    """Sufficient statistics of one split: ``[X, 1]^T [X, 1]``, ``[X, 1]^T Y``, ``sum Y^2``, rows."""

    xx: Any  # (D+1, D+1) float64 tensor
    xy: Any  # (D+1, C) float64 tensor
    yy: Any  # (C,) float64 tensor
    n: int = 0

    def numpy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        return self.xx.cpu().numpy(), self.xy.cpu().numpy(), self.yy.cpu().numpy(), self.n


@dataclass(repr=False)
class LinearTemplates(Displayed):
    """Linear templates of every channel of one layer (see the module docstring).

    Attributes
    ----------
    layer, read : str
        The layer and what was read (``"features.1 (ReLU after conv features.0)"``).
    at : {"conv", "activation"}
    field_size : (int, int)
        Receptive field of the units, in input pixels.
    pool : int
        Patches were averaged over ``pool x pool`` blocks (1: full resolution).
    templates : ndarray of shape (C_out, C_in, h, w)
        Template per channel, in the units of the model's (normalised) input, at ``pool`` resolution.
    bias : ndarray of shape (C_out,)
    r2 : ndarray of shape (C_out,)
        Held-out (test split) R^2; NaN for a channel that is constant on the test split.
    r2_fit : ndarray of shape (C_out,)
        R^2 on the images the template was fitted to (fit + validation).
    alpha : ndarray of shape (C_out,)
        The chosen relative ridge penalty.
    positions : list of (int, int)
        Unit positions ``(y, x)`` on the layer's map.
    n_images : dict
        Images per split.
    """

    layer: str
    read: str
    at: str
    field_size: tuple[int, int]
    pool: int
    templates: np.ndarray
    bias: np.ndarray
    r2: np.ndarray
    r2_fit: np.ndarray
    alpha: np.ndarray
    positions: list[tuple[int, int]]
    n_images: dict[str, int]
    _test: tuple[np.ndarray, np.ndarray, np.ndarray, int] = field(default=None, repr=False)  # type: ignore[assignment]
    _shift: tuple[np.ndarray, np.ndarray] = field(default=None, repr=False)  # type: ignore[assignment]

    @property
    def median_r2(self) -> float:
        finite = self.r2[np.isfinite(self.r2)]
        return float(np.median(finite)) if finite.size else float("nan")

    @property
    def constant_channels(self) -> int:
        """Channels with no variance on the test split (dead units): no R^2."""
        return int(np.sum(~np.isfinite(self.r2)))

    def score(self, templates: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        """Held-out R^2 of *given* templates (and offsets; default: the best offset on the test split).

        The same test-split statistics as :attr:`r2`: a kernel, a flipped kernel or another layer's
        templates are scored exactly as the fitted ones. Only for ``pool == 1``.

        Parameters
        ----------
        templates : ndarray of shape (C_out, C_in, h, w) like :attr:`templates`
        bias : ndarray of shape (C_out,), optional

        Returns
        -------
        ndarray of shape (C_out,)
        """
        templates = np.asarray(templates, dtype=np.float64)
        if templates.shape != self.templates.shape:
            raise KernelscopeError(f"templates must have shape {self.templates.shape}, got {templates.shape}")
        if self.pool != 1:
            raise KernelscopeError(f"score needs full-resolution templates; layer {self.layer!r} was pooled "
                                   f"{self.pool}x{self.pool}")
        xx, xy, yy, n = self._test  # statistics of X - x_shift and Y - y_shift
        x_shift, y_shift = self._shift
        w = templates.reshape(templates.shape[0], -1).T  # (D, C)
        if bias is None:  # the offset that is best on the test split
            offset = xy[-1] / n - (xx[-1, :-1] / n) @ w  # (C,)
        else:  # y - y_shift = (X - x_shift) w + (bias + x_shift . w - y_shift)
            offset = np.asarray(bias, dtype=np.float64) + x_shift @ w - y_shift
        theta = np.vstack([w, offset[None]])  # (D+1, C)
        return _r2(theta, xx, xy, yy, n)

    def _display_summary(self) -> Summary:
        rows = [{"channel": c, "r2": finite_or_none(self.r2[c]), "r2_fit": finite_or_none(self.r2_fit[c]),
                 "alpha": float(self.alpha[c])} for c in range(self.r2.size)]
        return Summary(f"linear templates of {self.read or self.layer}: {self.r2.size} channels, field "
                       f"{self.field_size[0]}x{self.field_size[1]}", [
                           ("median held-out R^2", finite_or_none(self.median_r2)),
                           ("constant channels", self.constant_channels),
                           ("images (fit, val, test)", tuple(self.n_images.get(k, 0) for k in ("fit", "val", "test")))],
                       rows)

    def _display_picture(self) -> Picture | None:
        return Picture(kernel_tiles(self.templates), caption="each channel's linear template (mid-grey: 0)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer, "read": self.read, "at": self.at, "field_size": list(self.field_size),
            "pool": self.pool, "template_shape": list(self.templates.shape[1:]),
            "positions": [list(p) for p in self.positions], "n_images": self.n_images,
            "median_r2": finite_or_none(self.median_r2), "constant_channels": self.constant_channels,
            "r2": [finite_or_none(v) for v in self.r2], "r2_fit": [finite_or_none(v) for v in self.r2_fit],
            "alpha": [float(a) for a in self.alpha],
        }


def _r2(theta: np.ndarray, xx: np.ndarray, xy: np.ndarray, yy: np.ndarray, n: int) -> np.ndarray:
    """R^2 of predictions ``[X, 1] theta`` from a split's statistics. theta (D+1, C)."""
    sse = yy - 2 * np.sum(theta * xy, axis=0) + np.sum(theta * (xx @ theta), axis=0)  # (C,)
    mean_y = xy[-1] / n
    sst = yy - n * mean_y**2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sst > 1e-12 * np.maximum(yy, 1e-300), 1.0 - sse / sst, np.nan)


def _unit_positions(out_hw: tuple[int, int], positions: int) -> list[tuple[int, int]]:
    """``positions x positions`` units spread evenly inside the map (the centre for 1)."""
    def axis(size: int) -> list[int]:
        points = np.linspace(0, size - 1, positions + 2)[1:-1] if positions > 1 else [(size - 1) / 2]
        return sorted({int(round(v)) for v in points})

    return [(y, x) for y in axis(out_hw[0]) for x in axis(out_hw[1])]


class _Layer:
    """What one layer accumulates: where its units are, which pixels they see, the three splits' sums."""

    def __init__(self, model: nn.Module, layer: str, at: str, input_shape: tuple[int, int, int],
                 out_shape: tuple[int, ...], positions: int, max_features: int, device: Any) -> None:
        import torch

        self.layer = layer
        self.hook, self.read = read_point(model, layer, at)
        rf = receptive_field(model, self.hook, input_shape)
        self.field_size = (int(rf.size[0]), int(rf.size[1]))
        self.positions = _unit_positions((int(out_shape[2]), int(out_shape[3])), positions)
        self.boxes = [unit_field_box(rf, y, x) for y, x in self.positions]
        c, h, w = input_shape
        rh, rw = self.field_size
        self.pool = max(1, int(np.ceil(np.sqrt(c * rh * rw / max_features))))
        self.patch_shape = (c, -(-rh // self.pool), -(-rw // self.pool))  # (C_in, h, w) after pooling
        d = int(np.prod(self.patch_shape))
        self.pads = (max(0, -min(b[2] for b in self.boxes)), max(0, max(b[3] for b in self.boxes) - (w - 1)),
                     max(0, -min(b[0] for b in self.boxes)), max(0, max(b[1] for b in self.boxes) - (h - 1)))
        channels = int(out_shape[1])
        self.stats = {name: _Stats(torch.zeros(d + 1, d + 1, dtype=torch.float64, device=device),
                                   torch.zeros(d + 1, channels, dtype=torch.float64, device=device),
                                   torch.zeros(channels, dtype=torch.float64, device=device))
                      for name in ("fit", "val", "test")}
        self.shift: tuple[Any, Any] | None = None  # subtracted from X and Y before summing (less cancellation)

    def patches(self, x: Any) -> Any:
        """(B, P, D) receptive-field patches of the units at :attr:`positions`, zero outside the image."""
        import torch
        import torch.nn.functional as F

        left, right, top, bottom = self.pads
        xp = F.pad(x, (left, right, top, bottom)) if any(self.pads) else x  # (B, C, H+, W+)
        rh, rw = self.field_size
        crops = [xp[:, :, t + top: t + top + rh, lft + left: lft + left + rw] for t, _, lft, _ in self.boxes]
        stack = torch.stack(crops, dim=1)  # (B, P, C, rh, rw)
        b, p = stack.shape[:2]
        if self.pool > 1:
            ph = self.patch_shape[1] * self.pool - rh
            pw = self.patch_shape[2] * self.pool - rw
            flat = F.pad(stack.reshape(b * p, *stack.shape[2:]), (0, pw, 0, ph))  # (B*P, C, h*f, w*f)
            stack = F.avg_pool2d(flat, self.pool).reshape(b, p, *self.patch_shape)  # (B, P, C, h, w)
        return stack.reshape(b, p, -1)

    def _rows(self, x: Any, out: Any) -> tuple[Any, Any]:
        """Patches (B, P, D) and responses (B, P, C) of the units, float64."""
        import torch

        if out.dim() != 4:
            raise KernelscopeError(f"layer {self.hook!r} output has shape {tuple(out.shape)}, not (N, C, H, W)")
        patches = self.patches(x).to(torch.float64)  # (B, P, D)
        ys = torch.tensor([p[0] for p in self.positions], device=out.device)
        xs = torch.tensor([p[1] for p in self.positions], device=out.device)
        y = out[:, :, ys, xs].transpose(1, 2).to(torch.float64)  # (B, P, C)
        return patches, y

    def set_shift(self, x: Any, out: Any) -> None:
        """Subtract the means of this batch's X and Y before summing (the data set's first batch)."""
        patches, y = self._rows(x, out)
        self.shift = (patches.reshape(-1, patches.shape[-1]).mean(0), y.reshape(-1, y.shape[-1]).mean(0))

    def add(self, x: Any, out: Any, groups: np.ndarray) -> None:
        import torch

        patches, y = self._rows(x, out)
        if self.shift is None:
            self.shift = (patches.reshape(-1, patches.shape[-1]).mean(0), y.reshape(-1, y.shape[-1]).mean(0))
        patches = patches - self.shift[0]
        y = y - self.shift[1]
        ones = torch.ones(*patches.shape[:2], 1, dtype=torch.float64, device=patches.device)
        xa = torch.cat([patches, ones], dim=2)  # (B, P, D+1)
        for name in ("fit", "val", "test"):
            rows = torch.from_numpy(np.asarray([SPLITS[g] == name for g in groups])).to(patches.device)
            if not bool(rows.any()):
                continue
            xs_, ys_ = xa[rows].reshape(-1, xa.shape[-1]), y[rows].reshape(-1, y.shape[-1])  # (R, D+1), (R, C)
            stats = self.stats[name]
            stats.xx += xs_.T @ xs_
            stats.xy += xs_.T @ ys_
            stats.yy += (ys_**2).sum(0)
            stats.n += xs_.shape[0]

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"shift": [s.cpu().numpy() for s in self.shift] if self.shift is not None else None}
        for name, stats in self.stats.items():
            xx, xy, yy, n = stats.numpy()
            state[name] = {"xx": xx, "xy": xy, "yy": yy, "n": int(n)}
        return state

    def load(self, state: dict[str, Any]) -> None:
        import torch

        device = self.stats["fit"].xx.device
        self.shift = None if state["shift"] is None else tuple(
            torch.from_numpy(np.asarray(v, dtype=np.float64)).to(device) for v in state["shift"])
        for name in ("fit", "val", "test"):
            part = state[name]
            self.stats[name] = _Stats(*(torch.from_numpy(np.asarray(part[k], dtype=np.float64)).to(device)
                                        for k in ("xx", "xy", "yy")), int(part["n"]))

    def solve(self, at: str, alphas: Sequence[float], n_images: dict[str, int]) -> LinearTemplates:
        fit, val, test = (self.stats[k].numpy() for k in ("fit", "val", "test"))
        combined = tuple(a + b for a, b in zip(fit[:3], val[:3], strict=True)) + (fit[3] + val[3],)
        # choose alpha on the validation split, refit on fit + validation with it
        thetas = _ridge_path(fit, alphas)  # (A, D+1, C)
        val_r2 = np.stack([_r2(t, *val) for t in thetas])  # (A, C)
        choice = np.argmax(np.where(np.isfinite(val_r2), val_r2, -np.inf), axis=0)  # (C,)
        final = _ridge_path(combined, alphas)  # (A, D+1, C)
        theta = final[choice, :, np.arange(final.shape[2])].T  # (D+1, C)
        w = theta[:-1]  # (D, C) in shifted units; the offset absorbs the shift
        x_shift, y_shift = (s.cpu().numpy() for s in self.shift)
        bias = theta[-1] + y_shift - x_shift @ w  # (C,)
        templates = w.T.reshape(w.shape[1], *self.patch_shape)
        r2 = _r2(theta, *test)
        r2_fit = _r2(theta, *combined)
        return LinearTemplates(
            layer=self.layer, read=self.read, at=at, field_size=self.field_size, pool=self.pool,
            templates=templates, bias=bias, r2=r2, r2_fit=r2_fit, alpha=np.asarray(alphas)[choice],
            positions=self.positions, n_images=n_images, _test=test, _shift=(x_shift, y_shift))


def _ridge_path(stats: tuple[np.ndarray, np.ndarray, np.ndarray, int], alphas: Sequence[float]) -> np.ndarray:
    """Ridge solutions ``[w; b]`` (offset unpenalised) for every alpha: (A, D+1, C)."""
    xx, xy, _, n = stats
    d = xx.shape[0] - 1
    mean_x, mean_y = xx[-1, :d] / n, xy[-1] / n  # (D,), (C,)
    a = xx[:d, :d] - n * np.outer(mean_x, mean_x)  # (D, D) centred X^T X
    b = xy[:d] - n * np.outer(mean_x, mean_y)  # (D, C) centred X^T y
    evals, evecs = np.linalg.eigh((a + a.T) / 2)  # (D,), (D, D)
    evals = np.clip(evals, 0.0, None)
    scale = max(float(np.trace(a)) / d, 1e-300)
    projected = evecs.T @ b  # (D, C)
    out = np.empty((len(alphas), d + 1, b.shape[1]))
    for i, alpha in enumerate(alphas):
        w = evecs @ (projected / (evals + alpha * scale)[:, None])  # (D, C)
        out[i, :d] = w
        out[i, d] = mean_y - mean_x @ w
    return out


def layer_templates(model: nn.Module, layers: Sequence[str], images: Any, *, at: str = "conv",
                    positions: int = 3, batch_size: int = 64, max_features: int = 2048,
                    alphas: Sequence[float] = ALPHAS, context: Context | None = None,
                    checkpoint: Checkpoint | None = None, name: str = "templates") -> dict[str, LinearTemplates]:
    """Linear templates of several layers in one streaming pass (see :func:`linear_templates`).

    Sharded over ``torchrun`` ranks with ``context`` (:func:`kernelscope.analysis.passes.run_pass`):
    image ``i`` goes to its split by its global index, every rank subtracts the means of the data
    set's first batch, and the ranks' sums are added: the fit is that of one process (to float64
    rounding in the order of the sums).
    """
    layers = list(layers)
    if not layers:
        raise KernelscopeError("give at least one layer")
    if positions < 1:
        raise KernelscopeError(f"positions must be >= 1, got {positions}")
    if max_features < 1:
        raise KernelscopeError(f"max_features must be >= 1, got {max_features}")
    source = as_images(images)
    context = context if context is not None else Context()
    reducer = _Templates(model, layers, at, positions, max_features)
    if source.shardable and (context.rank > 0 or checkpoint is not None):
        reducer.start(source.first(batch_size).inputs)  # shapes and shift from the data set's first batch
    report = run_pass({name: reducer}, source, context=context, batch_size=batch_size, checkpoint=checkpoint,
                      name=name, desc=f"templates {', '.join(layers)}")
    if report.n_used < MIN_IMAGES:
        raise KernelscopeError(f"linear templates need at least {MIN_IMAGES} images (fit, validation and test "
                               f"splits), got {report.n_used}")
    with single_threaded_blas():  # small eigendecompositions: threads fighting over 2 cores cost 40x (measured)
        return {layer: reducer.state_of[layer].solve(at, alphas, dict(reducer.counts)) for layer in layers}


class _Templates:
    """A reducer: the three splits' regression sums of every layer (merge: add them)."""

    def __init__(self, model: nn.Module, layers: list[str], at: str, positions: int, max_features: int):
        self.model, self.layers, self.at, self.positions, self.max_features = model, layers, at, positions, max_features
        self.hooks = {layer: read_point(model, layer, at)[0] for layer in layers}
        self.names = sorted(set(self.hooks.values()))
        self.state_of: dict[str, _Layer] | None = None
        self.counts = {"fit": 0, "val": 0, "test": 0}

    def _forward(self, batch: np.ndarray) -> tuple[Any, dict[str, Any]]:
        import torch

        device = model_device(self.model)
        dtype = next((p.dtype for p in self.model.parameters()), torch.float32)
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(device=device, dtype=dtype)  # (B, C, H, W)
        with torch.no_grad(), capture(self.model, self.names) as out:
            self.model(x)
        return x, dict(out)

    def start(self, first: np.ndarray) -> None:
        """Build the layers (shapes, receptive fields) and their shift from a first batch."""
        self.model.eval()
        _, out = self._forward(first[:1])  # the layers' output shapes, from one image
        shapes = {name: tuple(value.shape) for name, value in out.items()}
        device = model_device(self.model)
        # receptive fields run the model too: built outside any capture
        self.state_of = {layer: _Layer(self.model, layer, self.at, tuple(first.shape[1:]), shapes[self.hooks[layer]],
                                       self.positions, self.max_features, device) for layer in self.layers}
        x, out = self._forward(first)
        for layer in self.layers:
            self.state_of[layer].set_shift(x, out[self.hooks[layer]])

    def update(self, batch: Batch) -> None:
        if self.state_of is None:
            self.start(batch.inputs)
        x, out = self._forward(batch.inputs)
        groups = batch.indices % len(SPLITS)
        for layer in self.layers:
            self.state_of[layer].add(x, out[self.hooks[layer]], groups)
        for g in groups:
            self.counts[SPLITS[g]] += 1

    def state(self) -> dict[str, Any]:
        if self.state_of is None:
            return {"counts": dict(self.counts)}
        return {"counts": dict(self.counts), "layers": {k: v.state() for k, v in self.state_of.items()}}

    def load(self, state: dict[str, Any]) -> None:
        self.counts = {k: int(v) for k, v in state["counts"].items()}
        if "layers" in state:
            if self.state_of is None:
                raise KernelscopeError("templates: a saved state needs the layers built first (internal)")
            for layer, part in state["layers"].items():
                self.state_of[layer].load(part)

    def merge(self, states: list[dict[str, Any]]) -> None:
        held = [s for s in states if "layers" in s]
        counts = {k: sum(int(s["counts"][k]) for s in states) for k in self.counts}
        if not held:
            self.counts = counts
            return
        layers = {}
        for layer in self.layers:
            parts = [s["layers"][layer] for s in held]
            shift = parts[0]["shift"]
            for part in parts[1:]:
                if not all(np.array_equal(a, b) for a, b in zip(part["shift"], shift, strict=True)):
                    raise KernelscopeError("templates: the ranks' shifts differ (the first batch gave other outputs "
                                           "on another rank); run on one device type")
            layers[layer] = {"shift": shift, **{split: {key: sum(np.asarray(p[split][key]) for p in parts)
                                                         for key in ("xx", "xy", "yy", "n")}
                                                 for split in ("fit", "val", "test")}}
        if self.state_of is None:
            raise KernelscopeError("templates: this rank read no image and built no layer; give more images than "
                                   "processes")
        self.load({"counts": counts, "layers": layers})


def linear_templates(model: nn.Module, layer: str, images: Any, *, at: str = "conv", positions: int = 3,
                     batch_size: int = 64, max_features: int = 2048,
                     alphas: Sequence[float] = ALPHAS) -> LinearTemplates:
    """The ridge-regression linear template of every channel of ``layer`` and its held-out R^2.

    Parameters
    ----------
    model : nn.Module
    layer : str
        A layer name (a conv layer is read where ``at`` says).
    images : ndarray of shape (N, C, H, W) or an iterable of batches
        The model's (normalised) inputs; N >= 5 (fit, validation and test splits).
    at : {"conv", "activation"}
        Read the conv output (default: where the first layer's identity holds) or the activation after it.
    positions : int
        ``positions x positions`` unit positions per image share one template.
    max_features : int
        Largest patch size (values) regressed on; larger fields are block-averaged.

    Returns
    -------
    LinearTemplates

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU())
    >>> x = np.random.default_rng(0).normal(size=(20, 1, 8, 8)).astype(np.float32)
    >>> res = linear_templates(net, "0", x)
    >>> bool(np.allclose(res.templates, net[0].weight.detach().numpy(), atol=1e-5)), bool(np.all(res.r2 > 1 - 1e-6))
    (True, True)
    """
    return layer_templates(model, [layer], images, at=at, positions=positions, batch_size=batch_size,
                           max_features=max_features, alphas=alphas)[layer]


@dataclass(repr=False)
class DepthCurve(Displayed):
    """Median held-out R^2 per layer, for the network and its initialisation control."""

    layers: list[str]
    trained: dict[str, LinearTemplates]
    init: dict[str, LinearTemplates] | None
    at: str

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for i, layer in enumerate(self.layers):
            t = self.trained[layer]
            c = self.init[layer] if self.init is not None else None
            out.append({"depth": i + 1, "layer": layer, "read": t.read, "field": f"{t.field_size[0]}x{t.field_size[1]}",
                        "pool": t.pool, "channels": int(t.r2.size),
                        "median_r2": finite_or_none(t.median_r2),
                        "init_median_r2": finite_or_none(c.median_r2) if c is not None else None,
                        "constant_channels": t.constant_channels,
                        "init_constant_channels": c.constant_channels if c is not None else None})
        return out

    def _display_summary(self) -> Summary:
        items: list[tuple[str, Any]] = []
        for row in self.rows():
            items.append((f"{row['layer']} median R^2", row["median_r2"]))
            items.append((f"{row['layer']} init", row["init_median_r2"]))
        return Summary(f"linear templates over depth ({self.at}): {len(self.layers)} layer(s)", items, self.rows())

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "layers": self.rows(),
                "trained": {k: v.to_dict() for k, v in self.trained.items()},
                "init": {k: v.to_dict() for k, v in self.init.items()} if self.init is not None else None}


def correlation_depth(model: nn.Module, layers: Sequence[str], images: Any, *, init_model: nn.Module | None = None,
                      at: str = "activation", **options: Any) -> DepthCurve:
    """:func:`layer_templates` of every layer, for ``model`` and (the control) ``init_model``."""
    trained = layer_templates(model, layers, images, at=at, **options)
    init = layer_templates(init_model, layers, images, at=at, **options) if init_model is not None else None
    return DepthCurve(list(layers), trained, init, at)


# ---------------------------------------------------------------------------------------- raw vs normalised
def normalised_cross_correlation(image: np.ndarray, template: np.ndarray, *, stride: int | tuple[int, int] = 1,
                                 dilation: int | tuple[int, int] = 1) -> np.ndarray:
    """Pearson correlation of every valid patch of ``image`` with ``template`` (OpenCV's TM_CCOEFF_NORMED).

    Three correlations with the engine: the patch with the zero-mean template, the patch with ones
    (its sum) and the squared patch with ones (its sum of squares)::

        ncc = <p, w - mean(w)> / (sqrt(sum p^2 - (sum p)^2 / n) |w - mean(w)|)

    A flat patch (zero variance) gives 0, as OpenCV does.

    Parameters
    ----------
    image : ndarray of shape (H, W) or (N, C, H, W)
    template : ndarray of shape (kh, kw) or (O, C, kh, kw)
        Each template's ``C x kh x kw`` values are one vector (one mean over all of them).

    Returns
    -------
    ndarray of shape (H-kh+1, W-kw+1) for 2-D inputs, else (N, O, H_out, W_out), float64

    Examples
    --------
    >>> img = np.arange(25.0).reshape(5, 5) % 7
    >>> ncc = normalised_cross_correlation(img, img[1:4, 1:4])
    >>> round(float(ncc[1, 1]), 6), bool(np.all(np.abs(ncc) <= 1 + 1e-9))
    (1.0, True)
    """
    image = np.asarray(image, dtype=np.float64)
    template = np.asarray(template, dtype=np.float64)
    two_d = image.ndim == 2 and template.ndim == 2
    x = image[None, None] if image.ndim == 2 else image
    w = template[None, None] if template.ndim == 2 else template
    if x.ndim != 4 or w.ndim != 4 or x.shape[1] != w.shape[1]:
        raise KernelscopeError(f"image (N, C, H, W) and template (O, C, kh, kw) must agree, got {image.shape} and "
                               f"{template.shape}")
    n = w[0].size
    centred = w - w.mean(axis=(1, 2, 3), keepdims=True)  # (O, C, kh, kw)
    norm_w = np.sqrt(np.sum(centred**2, axis=(1, 2, 3)))  # (O,)
    ones = np.ones((1, *w.shape[1:]))
    numerator = correlate2d(x, centred, stride=stride, dilation=dilation)  # (N, O, Ho, Wo)
    total = correlate2d(x, ones, stride=stride, dilation=dilation)  # (N, 1, Ho, Wo)
    squares = correlate2d(x**2, ones, stride=stride, dilation=dilation)  # (N, 1, Ho, Wo)
    var = np.clip(squares - total**2 / n, 0.0, None)
    denominator = np.sqrt(var) * norm_w[None, :, None, None]  # (N, O, Ho, Wo)
    tiny = 1e-12 * np.sqrt(np.maximum(squares, 1e-300)) * norm_w[None, :, None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        ncc = np.where(denominator > tiny, numerator / np.where(denominator > 0, denominator, 1.0), 0.0)
    return ncc[0, 0] if two_d else ncc


@dataclass(repr=False)
class RawVsNormalised(Displayed):
    """Per channel of a conv layer: how the ranking by activation relates to contrast, match and NCC.

    Attributes (arrays of shape (C_out,))
    ----------
    rho_ncc : Spearman rank correlation of activation and Pearson NCC (TM_CCOEFF_NORMED).
    rho_contrast : of activation and the patch norm ``|p|``.
    rho_cos : of activation and the (uncentred) cosine ``cos(p, w)``.
    top_overlap : fraction of the top-``k`` units by activation that are also top-``k`` by NCC.
    top_contrast_percentile, top_cos_percentile : median percentile (0-100), among all sampled units,
        of the patch norm and of the cosine of the top-``k`` units by activation.
    """

    layer: str
    rho_ncc: np.ndarray
    rho_contrast: np.ndarray
    rho_cos: np.ndarray
    top_overlap: np.ndarray
    top_contrast_percentile: np.ndarray
    top_cos_percentile: np.ndarray
    n_units: int
    k: int
    n_images: int

    def _display_summary(self) -> Summary:
        rows = [{"channel": c, "rho_ncc": float(self.rho_ncc[c]), "rho_contrast": float(self.rho_contrast[c]),
                 "rho_cos": float(self.rho_cos[c]), "top_overlap": float(self.top_overlap[c])}
                for c in range(len(self.rho_ncc))]
        return Summary(f"raw vs normalised correlation of {self.layer}: {len(self.rho_ncc)} channels, {self.n_units} "
                       f"units of {self.n_images} images", list(self.medians().items()), rows)

    def medians(self) -> dict[str, float | None]:
        return {name: finite_or_none(np.nanmedian(getattr(self, name))) if np.any(np.isfinite(getattr(self, name)))
                else None for name in ("rho_ncc", "rho_contrast", "rho_cos", "top_overlap",
                                       "top_contrast_percentile", "top_cos_percentile")}

    def to_dict(self) -> dict[str, Any]:
        per = {name: [finite_or_none(v) for v in getattr(self, name)]
               for name in ("rho_ncc", "rho_contrast", "rho_cos", "top_overlap", "top_contrast_percentile",
                            "top_cos_percentile")}
        return {"layer": self.layer, "n_units": self.n_units, "k": self.k, "n_images": self.n_images,
                "median": self.medians(), "per_channel": per}


def raw_vs_normalised(model: nn.Module, layer: str, images: Any, *, batch_size: int = 64,
                      max_units: int = 50_000, k: int = 100, seed: int = 0) -> RawVsNormalised:
    """Rank the units of a conv layer by activation and by normalised cross-correlation (see the module docstring).

    The activation is the conv's own output, read from the model (``at="conv"``) at the positions
    whose patch lies inside the image (no padding); contrast, cosine and NCC are computed from the
    same patches with :func:`kernelscope.ops.correlate2d`. Up to ``max_units`` units (image, y, x)
    are sampled uniformly (seeded) for the rank correlations.
    """
    import torch
    from scipy.stats import rankdata
    from torch import nn as _nn

    conv = get_layer(model, layer)
    if not isinstance(conv, _nn.Conv2d) or conv.groups != 1:
        raise KernelscopeError(f"raw vs normalised correlation needs a Conv2d layer with groups=1; {layer!r} is "
                               f"{type(conv).__name__}")
    weight = conv.weight.detach().cpu().double().numpy()  # (O, C, kh, kw)
    bias = conv.bias.detach().cpu().double().numpy() if conv.bias is not None else np.zeros(weight.shape[0])
    ph, pw = (conv.padding, conv.padding) if isinstance(conv.padding, int) else conv.padding
    if isinstance(ph, str):
        raise KernelscopeError(f"conv {layer!r} uses padding={conv.padding!r}; give a conv with numeric padding")
    stride, dilation = tuple(conv.stride), tuple(conv.dilation)
    norm_w = np.sqrt(np.sum(weight**2, axis=(1, 2, 3)))  # (O,)
    ones = np.ones((1, *weight.shape[1:]))
    device = model_device(model)
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    rng = np.random.default_rng(seed)
    kept: dict[str, list[np.ndarray]] = {"act": [], "ncc": [], "norm": []}
    n_images = 0
    batches = list(iter_batches(images, batch_size))
    total_units = None
    oy, ox = -(-ph // stride[0]), -(-pw // stride[1])  # first output unit whose patch has no padding
    shift_y, shift_x = oy * stride[0] - ph, ox * stride[1] - pw  # where that patch starts in the image
    for batch in batches:
        x = torch.from_numpy(batch).to(device=device, dtype=dtype)
        act = forward_until(model, layer, x).double().cpu().numpy()  # (B, O, Hp, Wp) with the conv's padding
        xb = batch.astype(np.float64)[:, :, shift_y:, shift_x:]  # (B, C, H', W')
        ncc = normalised_cross_correlation(xb, weight, stride=stride, dilation=dilation)  # (B, O, Ho, Wo)
        ho, wo = min(ncc.shape[2], act.shape[2] - oy), min(ncc.shape[3], act.shape[3] - ox)
        act, ncc = act[:, :, oy:oy + ho, ox:ox + wo], ncc[:, :, :ho, :wo]
        sq = correlate2d(xb**2, ones, stride=stride, dilation=dilation)[:, :, :ho, :wo]  # (B, 1, Ho, Wo)
        norm = np.sqrt(np.clip(sq, 0.0, None))[:, 0]  # (B, Ho, Wo)
        if total_units is None:
            total_units = sum(b.shape[0] for b in batches) * ho * wo
        rate = min(1.0, max_units / total_units)
        pick = rng.random(act.shape[0] * ho * wo) < rate  # (B*Ho*Wo,)
        kept["act"].append(act.transpose(0, 2, 3, 1).reshape(-1, act.shape[1])[pick])
        kept["ncc"].append(ncc.transpose(0, 2, 3, 1).reshape(-1, ncc.shape[1])[pick])
        kept["norm"].append(norm.reshape(-1)[pick])
        n_images += batch.shape[0]
    act = np.concatenate(kept["act"])  # (U, O)
    ncc = np.concatenate(kept["ncc"])  # (U, O)
    norm = np.concatenate(kept["norm"])  # (U,)
    if act.shape[0] < 3:
        raise KernelscopeError(f"too few units sampled ({act.shape[0]}) for rank correlations; give more images")
    raw = act - bias[None]  # <w, p>
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = raw / (norm[:, None] * norm_w[None])  # (U, O)
    kk = min(k, act.shape[0])
    out = {name: np.full(weight.shape[0], np.nan) for name in ("ncc", "contrast", "cos", "overlap", "pc", "pcos")}
    norm_rank = rankdata(norm) / norm.size * 100
    for c in range(weight.shape[0]):
        a = act[:, c]
        if np.ptp(a) == 0:
            continue
        out["ncc"][c] = _spearman(a, ncc[:, c])
        out["contrast"][c] = _spearman(a, norm)
        finite = np.isfinite(cos[:, c])
        out["cos"][c] = _spearman(a[finite], cos[finite, c])
        top = np.argsort(-a)[:kk]
        top_ncc = np.argsort(-ncc[:, c])[:kk]
        out["overlap"][c] = np.intersect1d(top, top_ncc).size / kk
        out["pc"][c] = np.median(norm_rank[top])
        cos_rank = rankdata(np.where(finite, cos[:, c], -np.inf)) / cos.shape[0] * 100
        out["pcos"][c] = np.median(cos_rank[top])
    return RawVsNormalised(layer, out["ncc"], out["contrast"], out["cos"], out["overlap"], out["pc"], out["pcos"],
                           int(act.shape[0]), kk, n_images)



def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho; NaN when either side is constant (no ranking to compare) or too short.

    Values whose spread is below 1e-6 of their scale count as constant: the float32 images leave
    rounding differences of that size in quantities that are equal (the NCC of one pattern at two
    contrasts), and ranking rounding noise would give a random rho.
    """
    from scipy.stats import spearmanr

    def constant(v: np.ndarray) -> bool:
        return bool(np.ptp(v) <= 1e-6 * np.max(np.abs(v)))

    if a.size < 3 or constant(a) or constant(b):
        return float("nan")
    return float(spearmanr(a, b).statistic)
