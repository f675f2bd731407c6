"""Part detectors: which channels respond to the eyes, the nose, the mouth, measured by occlusion.

The protocol (in the spirit of Zeiler & Fergus's occlusion experiments):

1. For every image, cover a part (the eyes, say) with a fill value and record,
   for every channel of a layer, the spatial maximum of its non-negative response
   (``max(0, max_{y,x} a[y, x])``); do the same with the intact image and with
   ``n_controls`` *control* occlusions: the same mask shape shifted to random places
   of the same image where it does not overlap the part (equal area, elsewhere on
   the face).
2. Per channel, the relative drop of the summed spatial maxima,
   ``part_drop = 1 - sum_i a_part[i] / sum_i a_intact[i]`` and the same for the
   controls (averaged over placements), and their difference
   ``selectivity = part_drop - control_drop``, with a percentile bootstrap
   interval over images. The maxima are non-negative, so no drop exceeds 100%
   (a signed map whose maximum turns negative under occlusion would give more).
3. A channel is a *part detector* when ``selectivity > margin`` (default 0.15)
   and the interval excludes zero; a **gated** part detector also needs its part drop
   beyond the upper end of the equal-area controls' own bootstrap interval
   (``control_drop_ci_high``): every summary reports both counts. Channels whose mean intact maximum is below
   ``activity_floor`` (1%) of the layer's most active channel are marked
   inactive (ratios of near-zero numbers mean nothing).

Where a conv layer is read is explicit (``at``, see
:func:`kernelscope.analysis.hooks.read_point`): ``"activation"`` (default) reads the
activation module that follows the conv, ``"conv"`` the conv's own, signed output.
Results stay keyed by the conv layer's name and record ``at`` and what was read.

The network's output is measured on the same variants: the probability of the
target class (face) intact, with the part occluded and with the controls.

All variants of a batch of images (intact, each part, each control placement)
go through the network in one forward pass.

The occlusion geometry (part masks from ONet's landmarks, control placements, fill
values) is :mod:`kernelscope.analysis.occlusion`; the four-network experiment built
on this protocol is :mod:`kernelscope.analysis.part_contrast`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kernelscope._display import Displayed, Summary
from kernelscope._io import finite_or_none
from kernelscope.analysis.occlusion import check_part_masks, control_masks, fill_values, occlude
from kernelscope.analysis.passes import Batch, Checkpoint, run_pass
from kernelscope.errors import KernelscopeError

if TYPE_CHECKING:  # torch is imported by the functions that run models
    from torch import nn

    from kernelscope.train.distributed import Context

__all__ = [
    "PartSelectivity",
    "part_selectivity",
    "part_selectivity_layers",
    "part_maps",
    "detector_panels",
]


# ----------------------------------------------------------------------------- the protocol


@dataclass(repr=False)
class PartSelectivity(Displayed):
    """Occlusion part selectivity of every channel of one layer.

    Attributes
    ----------
    layer : str
        The layer as the caller named it (a conv layer, whatever module was read for it).
    parts : list of str
    channels : int
    intact : ndarray of shape (N, C)
        Spatial maximum of each channel's map on the intact images, at least 0.
    occluded : dict of str to ndarray of shape (N, C)
        The same with the part occluded.
    controls : dict of str to ndarray of shape (N, K, C)
        The same with each of the K control occlusions.
    output_intact, output_occluded, output_controls
        Target-class probability, ``(N,)``, ``{part: (N,)}``, ``{part: (N, K)}``;
        ``None`` when the model's output was not measured.
    settings : dict
        fill, margin, n_controls, n_boot, ci, seed, activity_floor, target.
    at : "activation" or "conv"
        Where the conv layer was read (:func:`kernelscope.analysis.hooks.read_point`).
    read : str
        What was read, e.g. ``"1 (ReLU after conv 0)"``.
    data : dict, optional
        What the pass read (images used, processes; :class:`kernelscope.analysis.passes.PassReport`).
    """

    layer: str
    parts: list[str]
    intact: np.ndarray
    occluded: dict[str, np.ndarray]
    controls: dict[str, np.ndarray]
    output_intact: np.ndarray | None = None
    output_occluded: dict[str, np.ndarray] = field(default_factory=dict)
    output_controls: dict[str, np.ndarray] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    output_stats: dict[str, dict[str, float]] = field(default_factory=dict)
    at: str = "activation"
    read: str = ""
    data: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.stats:
            self.stats = {part: self._channel_stats(part) for part in self.parts}
        if not self.output_stats and self.output_intact is not None:
            self.output_stats = {part: self._output_stats(part) for part in self.parts}

    @property
    def channels(self) -> int:
        return int(self.intact.shape[1])

    @property
    def n_images(self) -> int:
        return int(self.intact.shape[0])

    def _bootstrap_weights(self, salt: int) -> np.ndarray:
        rng = np.random.default_rng([int(self.settings.get("seed", 0)), salt])
        n = self.n_images
        return rng.multinomial(n, np.full(n, 1.0 / n), size=int(self.settings.get("n_boot", 1000))).astype(
            np.float64)  # (B, N)

    def _channel_stats(self, part: str) -> dict[str, np.ndarray]:
        a0 = self.intact.astype(np.float64)  # (N, C)
        ap = self.occluded[part].astype(np.float64)  # (N, C)
        ac = self.controls[part].astype(np.float64).mean(axis=1)  # (N, C)
        s0, sp, sc = a0.sum(0), ap.sum(0), ac.sum(0)  # (C,)
        mean0 = a0.mean(0)
        floor = float(self.settings.get("activity_floor", 0.01))
        active = mean0 > floor * max(float(mean0.max(initial=0.0)), 0.0)
        active &= mean0 > 0
        safe = np.where(active, s0, 1.0)
        part_drop = np.where(active, 1.0 - sp / safe, np.nan)
        control_drop = np.where(active, 1.0 - sc / safe, np.nan)
        diff = part_drop - control_drop
        w = self._bootstrap_weights(salt=self.parts.index(part))  # (B, N)
        b0, bp, bc = w @ a0, w @ ap, w @ ac  # (B, C)
        alpha = (1.0 - float(self.settings.get("ci", 0.95))) / 2
        low = np.full(self.channels, np.nan)
        high = np.full(self.channels, np.nan)
        control_high = np.full(self.channels, np.nan)
        if active.any():
            with np.errstate(divide="ignore", invalid="ignore"):
                boot = (bc[:, active] - bp[:, active]) / b0[:, active]  # (B, C_active): diff per resample
                control_boot = 1.0 - bc[:, active] / b0[:, active]  # (B, C_active): control drop per resample
            low[active], high[active] = np.quantile(boot, [alpha, 1 - alpha], axis=0)
            control_high[active] = np.quantile(control_boot, 1 - alpha, axis=0)
        margin = float(self.settings.get("margin", 0.15))
        detector = active & (diff > margin) & (low > 0)
        # gated: the part's drop also lies beyond the equal-area controls' own bootstrap interval
        gated = detector & (part_drop > np.nan_to_num(control_high, nan=np.inf))
        return {"mean_intact": mean0, "active": active, "part_drop": part_drop, "control_drop": control_drop,
                "selectivity": diff, "ci_low": low, "ci_high": high, "detector": detector,
                "control_drop_ci_high": control_high, "detector_gated": gated}

    def _output_stats(self, part: str) -> dict[str, float]:
        s0 = self.output_intact.astype(np.float64)  # (N,)
        sp = self.output_occluded[part].astype(np.float64)  # (N,)
        sc = self.output_controls[part].astype(np.float64).mean(axis=1)  # (N,)
        w = self._bootstrap_weights(salt=100 + self.parts.index(part))  # (B, N)
        boot = w @ (sc - sp) / self.n_images  # (B,)
        alpha = (1.0 - float(self.settings.get("ci", 0.95))) / 2
        return {"intact": float(s0.mean()), "occluded": float(sp.mean()), "control": float(sc.mean()),
                "effect": float((sc - sp).mean()), "ci_low": float(np.quantile(boot, alpha)),
                "ci_high": float(np.quantile(boot, 1 - alpha))}

    def detectors(self, part: str, *, gated: bool = False) -> list[int]:
        """Channels that are detectors of ``part``, most selective first.

        ``gated=True``: only those whose part drop also exceeds the upper end of the
        equal-area controls' bootstrap interval (``control_drop_ci_high``).
        """
        st = self.stats[part]
        idx = np.flatnonzero(st["detector_gated" if gated else "detector"])
        return [int(i) for i in idx[np.argsort(-st["selectivity"][idx], kind="stable")]]

    def ranking(self, part: str) -> list[int]:
        """Active channels ordered by selectivity for ``part``, highest first."""
        st = self.stats[part]
        idx = np.flatnonzero(st["active"])
        return [int(i) for i in idx[np.argsort(-st["selectivity"][idx], kind="stable")]]

    def best(self, part: str) -> dict[str, Any]:
        """The most selective active channel for ``part`` and its numbers."""
        ranked = self.ranking(part)
        if not ranked:
            return {"channel": None}
        c = ranked[0]
        st = self.stats[part]
        return {"channel": c, "part_drop": float(st["part_drop"][c]), "control_drop": float(st["control_drop"][c]),
                "selectivity": float(st["selectivity"][c]), "ci": [float(st["ci_low"][c]), float(st["ci_high"][c])],
                "detector": bool(st["detector"][c])}

    def table(self) -> list[dict[str, Any]]:
        """One row per (part, channel): the per-channel table written as CSV/JSON."""
        rows = []
        for part in self.parts:
            st = self.stats[part]
            for c in range(self.channels):
                rows.append({
                    "layer": self.layer, "part": part, "channel": c,
                    "mean_intact_max": float(st["mean_intact"][c]), "active": bool(st["active"][c]),
                    "part_drop": finite_or_none(st["part_drop"][c]), "control_drop": finite_or_none(st["control_drop"][c]),
                    "selectivity": finite_or_none(st["selectivity"][c]), "ci_low": finite_or_none(st["ci_low"][c]),
                    "ci_high": finite_or_none(st["ci_high"][c]), "detector": bool(st["detector"][c]),
                    "control_drop_ci_high": finite_or_none(st["control_drop_ci_high"][c]),
                    "detector_gated": bool(st["detector_gated"][c]),
                })
        return rows

    def summary(self) -> dict[str, Any]:
        """Per part: number of detectors, the best channel, the output effect, where the layer was read."""
        out: dict[str, Any] = {}
        for part in self.parts:
            out[part] = {"n_detectors": len(self.detectors(part)), "detectors": self.detectors(part),
                         "n_detectors_gated": len(self.detectors(part, gated=True)),
                         "detectors_gated": self.detectors(part, gated=True),
                         "best": self.best(part), "at": self.at, "read": self.read}
            if part in self.output_stats:
                out[part]["output"] = self.output_stats[part]
        return out

    def _display_summary(self) -> Summary:
        items: list[tuple[str, Any]] = []
        for part, info in self.summary().items():
            items.append((f"{part}: detectors / gated", f"{info['n_detectors']} / {info['n_detectors_gated']}"))
            items.append((f"{part}: best selectivity", info["best"].get("selectivity")))
        return Summary(f"part selectivity of {self.read or self.layer}: {self.channels} channels, {self.n_images} "
                       f"images, parts {', '.join(self.parts)}", items, self.table())

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: where the layer was read, settings, summary and the per-channel table."""
        return {"layer": self.layer, "at": self.at, "read": self.read, "parts": list(self.parts),
                "n_images": self.n_images, "channels": self.channels, "settings": dict(self.settings), "summary": self.summary(),
                "table": self.table(), **({"data": self.data} if self.data is not None else {})}


def _target_probability(output: Any, target: int):
    """(N,) probability of class ``target`` from a model output (logits, or ONet's tuple)."""
    import torch

    probabilities = False
    if isinstance(output, (tuple, list)):
        output = output[-1]  # ONet: (box, landmarks, probabilities)
        probabilities = bool(output.ndim == 2 and (output >= 0).all()
                             and torch.allclose(output.sum(1), torch.ones_like(output[:, 0]), atol=1e-4))
    if output.ndim != 2:
        raise KernelscopeError(f"model output: expected (N, classes) logits, got shape {tuple(output.shape[1:])} "
                               "per image; use target=None to skip the output effect")
    if output.shape[1] == 1:
        return torch.sigmoid(output[:, 0])
    if not 0 <= target < output.shape[1]:
        raise KernelscopeError(f"target: expected a class index in [0, {output.shape[1] - 1}], got {target}")
    return output[:, target] if probabilities else torch.softmax(output, dim=1)[:, target]


class _OcclusionPass:
    """A reducer: per image, the channel maxima (and the target probability) of the intact image and
    of every occluded variant; gathered in image order by the merge."""

    def __init__(self, model: nn.Module, layers: list[str], points: dict[str, tuple[str, str]],
                 masks: dict[str, np.ndarray], controls: dict[str, np.ndarray], fill: str | float,
                 target: int | None):
        self.model, self.layers, self.points, self.masks, self.controls = model, layers, points, masks, controls
        self.fill, self.target = fill, target
        self.hooks = list(dict.fromkeys(hook for hook, _ in points.values()))  # two names may read one module
        self.n_controls = next(iter(controls.values())).shape[1]
        self.n_variants = 1 + len(masks) * (1 + self.n_controls)
        self.parts: dict[str, list[np.ndarray]] = {"index": [], "scores": [], **{f"m:{n}": [] for n in layers}}

    def update(self, batch: Batch) -> None:
        import torch

        from kernelscope.analysis.hooks import capture, model_device
        from kernelscope.models.layers import conv_layer_names, get_layer

        model, index, xb = self.model, batch.indices, batch.inputs  # (b, C, H, W)
        b, _, h, w = xb.shape
        fb = fill_values(xb, self.fill)  # (b, C, 1, 1) or (b, C, H, W): per image
        variant_masks = [np.zeros((b, h, w), dtype=bool)]
        for part in self.masks:
            variant_masks.append(self.masks[part][index])
            variant_masks.extend(self.controls[part][index, k] for k in range(self.n_controls))
        vm = np.stack(variant_masks, axis=1)  # (b, V, H, W)
        x = np.where(vm[:, :, None], fb[:, None], xb[:, None])  # (b, V, C, H, W)
        dtype = next((p.dtype for p in model.parameters()), torch.float32)
        x = torch.from_numpy(np.ascontiguousarray(x.reshape(b * self.n_variants, *xb.shape[1:])))
        x = x.to(device=model_device(model), dtype=dtype)  # (b * V, C, H, W)
        with torch.no_grad(), capture(model, self.hooks) as outs:
            output = model(x)
        for name in self.layers:
            hook = self.points[name][0]
            maps = outs[hook]  # (b * V, C, H', W')
            if maps.ndim != 4:
                raise KernelscopeError(
                    f"layer {hook!r} ({type(get_layer(model, hook)).__name__}) gives outputs of shape "
                    f"{tuple(maps.shape[1:])} per image, not spatial maps (C, H, W); choose a convolution "
                    f"or pooling layer (conv layers: {', '.join(conv_layer_names(model)) or 'none'})"
                )
            peak = maps.amax(dim=(2, 3)).clamp(min=0)  # (b * V, C): the non-negative response's max
            self.parts[f"m:{name}"].append(peak.float().cpu().reshape(b, self.n_variants, -1).numpy())
        if self.target is not None:
            probability = _target_probability(output, self.target)
            self.parts["scores"].append(probability.float().cpu().reshape(b, self.n_variants).numpy())
        self.parts["index"].append(np.asarray(index, dtype=np.int64))

    def state(self) -> dict[str, Any]:
        return {key: np.concatenate(parts) for key, parts in self.parts.items() if parts}

    def load(self, state: dict[str, Any]) -> None:
        self.parts = {key: ([np.asarray(state[key])] if key in state else []) for key in self.parts}

    def merge(self, states: list[dict[str, Any]]) -> None:
        held = [s for s in states if "index" in s]
        if not held:
            self.load({})
            return
        order = np.argsort(np.concatenate([s["index"] for s in held]), kind="stable")  # image order
        self.load({key: np.concatenate([s[key] for s in held])[order] for key in held[0]})

    def arrays(self) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """Maxima (N, V, C) per layer and target probabilities (N, V) (None without a target)."""
        state = self.state()
        return {name: state[f"m:{name}"] for name in self.layers}, state.get("scores")


def part_selectivity_layers(model: nn.Module, images: np.ndarray, masks: Mapping[str, np.ndarray], *,
                            layers: Sequence[str] | None = None, parts: Sequence[str] | None = None,
                            fill: str | float = "zero", n_controls: int = 8,
                            allowed: np.ndarray | None = None, margin: float = 0.15, n_boot: int = 1000,
                            ci: float = 0.95, activity_floor: float = 0.01, seed: int = 0,
                            target: int | None = 1, batch_size: int = 16,
                            at: str = "activation", context: Context | None = None,
                            checkpoint: Checkpoint | None = None, name: str = "parts") -> dict[str, PartSelectivity]:
    """Occlusion part selectivity of every channel of several layers (one forward per batch).

    Parameters
    ----------
    model : torch.nn.Module
        Put in eval mode; its weights are not changed.
    images : ndarray of shape (N, C, H, W)
        Model inputs, already normalised as the model expects.
    masks : dict of str to ndarray of shape (N, H, W), bool
        The parts to occlude (from :func:`~kernelscope.analysis.occlusion.onet_part_masks`, Haar
        cascades or the user).
    layers : sequence of str, optional
        Dotted layer names whose outputs are ``(N, C', H', W')`` maps (default: all conv layers).
        Results are keyed by these names, wherever ``at`` reads them.
    parts : sequence of str, optional
        Which masks to use (default: all of them).
    fill : "zero", "mean", "blur" or float
        The occluder's value in the model's input space (see
        :func:`~kernelscope.analysis.occlusion.occlude`). Keep it
        neutral: a black or white occluder draws edges whose strength depends on where it
        lands (weak over a dark eye, strong on a bright cheek), which made the easy face
        net show up to 10 spurious "eye detectors" (docs/parts.md); "blur" is the most neutral.
    n_controls : int
        Control placements per image and part (equal area, not overlapping the part).
    allowed : ndarray of shape (H, W) or (N, H, W), bool, optional
        Where control occluders may lie (default: anywhere in the image).
    margin : float
        A detector's selectivity must exceed this (0.15: 15 percentage points of the channel's maximum).
    n_boot, ci : int, float
        Bootstrap resamples over images and the interval's level.
    activity_floor : float
        Channels with mean intact maximum below this fraction of the layer's largest are inactive.
    seed : int
        Seeds the control placements and the bootstrap.
    target : int or None
        Class whose probability is the output effect (1 = "face"); ``None`` skips it.
    batch_size : int
        Images per forward pass (each brings ``1 + P * (1 + n_controls)`` variants).
    at : "activation" or "conv"
        Read a conv layer after the activation that follows it (default) or its own signed
        output (:func:`kernelscope.analysis.hooks.read_point`; other layers are read as they are).
        Either way each channel's spatial maximum is clamped at 0 before the drops.
    context, checkpoint, name
        Sharding over ``torchrun`` ranks and checkpoints (:func:`kernelscope.analysis.passes.run_pass`):
        the control placements are drawn for all images before the pass (the same on every rank),
        each rank occludes its share, and the per-image maxima (a few numbers per image, variant and
        channel) are gathered in image order, so the bootstrap sees what one process sees. ``name``
        tells two passes apart in the checkpoint folder.

    Returns
    -------
    dict of str to PartSelectivity
    """
    from kernelscope.analysis.hooks import read_point
    from kernelscope.models.layers import conv_layer_names

    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4:
        raise KernelscopeError(f"images: expected shape (N, C, H, W), got {tuple(x.shape)}")
    n, _, h, w = x.shape
    if n < 2:
        raise KernelscopeError(f"images: need at least 2 images for a bootstrap interval, got {n}")
    if n_controls < 1:
        raise KernelscopeError(f"n_controls: expected >= 1, got {n_controls}")
    if not 0 < ci < 1:
        raise KernelscopeError(f"ci: expected a level in (0, 1), got {ci}")
    checked = check_part_masks(masks, n, (h, w), parts)
    part_list = list(checked)
    if layers is None:
        layers = conv_layer_names(model)
        if not layers:
            raise KernelscopeError(f"model {type(model).__name__} has no Conv2d layer; name a layer")
    layers = [layers] if isinstance(layers, str) else list(layers)
    points = {name: read_point(model, name, at) for name in layers}  # unknown names fail here, with suggestions
    if allowed is not None:
        allowed = np.asarray(allowed, dtype=bool)
        allowed = np.broadcast_to(allowed, (n, h, w)) if allowed.shape == (h, w) else allowed
        if allowed.shape != (n, h, w):
            raise KernelscopeError(f"allowed: expected shape {(h, w)} or {(n, h, w)}, got {allowed.shape}")

    rng = np.random.default_rng(seed)
    # control masks: (N, K, H, W) per part, drawn before any forward pass
    controls_of = {part: control_masks(checked[part], n_controls, rng, allowed=allowed) for part in part_list}

    reducer = _OcclusionPass(model, layers, points, checked, controls_of, fill, target)
    was_training = model.training
    model.eval()
    try:
        report = run_pass({"parts": reducer}, x, context=context, batch_size=batch_size, workers=0,
                          checkpoint=checkpoint, name=name, desc=f"{name}: occlusion")
    finally:
        model.train(was_training)
    maxima, s = reducer.arrays()

    settings = {"fill": fill, "margin": margin, "n_controls": n_controls, "n_boot": n_boot, "ci": ci,
                "seed": seed, "activity_floor": activity_floor, "target": target,
                "control_placement": "same mask shifted, inside the image" +
                                     (" and the allowed region" if allowed is not None else "") +
                                     ", not overlapping the part"}
    results = {}
    for name in layers:
        m = maxima[name]  # (N, V, C)
        occluded, controls, out_occ, out_ctl = {}, {}, {}, {}
        for j, part in enumerate(part_list):
            first = 1 + j * (1 + n_controls)
            occluded[part] = m[:, first]
            controls[part] = m[:, first + 1:first + 1 + n_controls]
            if s is not None:
                out_occ[part] = s[:, first]
                out_ctl[part] = s[:, first + 1:first + 1 + n_controls]
        results[name] = PartSelectivity(
            layer=name, parts=part_list, intact=m[:, 0], occluded=occluded, controls=controls,
            output_intact=None if s is None else s[:, 0], output_occluded=out_occ, output_controls=out_ctl,
            settings=dict(settings), at=at, read=points[name][1], data=report.to_dict())
    return results


def part_selectivity(model: nn.Module, images: np.ndarray, masks: Mapping[str, np.ndarray], *,
                     layer: str, **options: Any) -> PartSelectivity:
    """Occlusion part selectivity of every channel of ``layer``.

    Same parameters as :func:`part_selectivity_layers` with one layer name.

    Examples
    --------
    A hand-set channel that sums the top-left quadrant is an "eye" detector when
    the eye is there; the control occlusions elsewhere leave it alone:

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 1, 4, bias=False), nn.Flatten(), nn.LazyLinear(2))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.fill_(1.0)
    ...     _ = net(torch.zeros(1, 1, 12, 12))
    >>> x = np.zeros((6, 1, 12, 12), np.float32); x[:, :, 1:4, 1:4] = 1.0
    >>> eye = np.zeros((6, 12, 12), bool); eye[:, 1:4, 1:4] = True
    >>> r = part_selectivity(net, x, {"eye": eye}, layer="0", n_controls=4, target=None)
    >>> r.best("eye")["channel"], round(r.best("eye")["part_drop"], 2), r.detectors("eye")
    (0, 1.0, [0])
    """
    if not isinstance(layer, str):
        raise KernelscopeError(f"layer: expected one layer name, got {layer!r}")
    return part_selectivity_layers(model, images, masks, layers=[layer], **options)[layer]


def part_maps(model: nn.Module, images: np.ndarray, mask: np.ndarray, *, layer: str,
              channels: Sequence[int], fill: str | float = "zero",
              at: str = "activation") -> tuple[np.ndarray, np.ndarray]:
    """The maps of some channels on intact and part-occluded images (for figures).

    Parameters
    ----------
    model : torch.nn.Module
    images : ndarray of shape (N, C, H, W)
        Model inputs.
    mask : ndarray of shape (N, H, W), bool
        The part to occlude.
    layer : str
    channels : sequence of int
    fill : "zero", "mean", "blur" or float
    at : "activation" or "conv"
        Where ``layer`` is read (:func:`kernelscope.analysis.hooks.read_point`).

    Returns
    -------
    intact, occluded : ndarray of shape (N, len(channels), H', W'), float32
        The maps as read (not clamped: a figure shows their sign).

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3))
    >>> a, b = part_maps(net, np.zeros((2, 1, 8, 8)), np.ones((2, 8, 8), bool), layer="0", channels=[1])
    >>> a.shape, b.shape
    ((2, 1, 6, 6), (2, 1, 6, 6))
    """
    from kernelscope.analysis.hooks import layer_outputs, read_point

    hook, _ = read_point(model, layer, at)
    x = np.asarray(images, dtype=np.float32)
    both = np.concatenate([x, occlude(x, mask, fill).astype(np.float32)])  # (2N, C, H, W)
    maps = layer_outputs(model, both, hook)[hook]  # (2N, C', H', W')
    if maps.ndim != 4:
        raise KernelscopeError(
            f"layer {hook!r} gives outputs of shape {maps.shape[1:]} per image, not spatial maps (C, H, W)")
    maps = maps[:, list(channels)]
    return maps[:len(x)], maps[len(x):]


def detector_panels(model: nn.Module, result: PartSelectivity, images: np.ndarray,
                    masks: Mapping[str, np.ndarray], *, top: int = 3, n_faces: int = 3,
                    fill: str | float | None = None) -> list[dict[str, Any]]:
    """Maps of the top detectors on a few faces, intact and occluded (what the parts figure draws).

    For each part, the ``top`` most selective active channels (detectors first;
    the best-ranked channels when there is no detector) on the ``n_faces``
    images where the channel's intact maximum is largest. The layer is read where ``result`` read it
    (``result.at``).

    Returns
    -------
    list of dict
        ``part, channel, detector, selectivity, part_drop, control_drop, faces (k,),
        intact (k, H', W'), occluded (k, H', W')``.
    """
    fill = result.settings.get("fill", "zero") if fill is None else fill
    panels = []
    for part in result.parts:
        for channel in result.ranking(part)[:top]:
            faces = np.argsort(-result.intact[:, channel], kind="stable")[:n_faces]
            intact, occluded = part_maps(model, np.asarray(images)[faces], np.asarray(masks[part])[faces],
                                         layer=result.layer, channels=[channel], fill=fill, at=result.at)
            st = result.stats[part]
            panels.append({"part": part, "channel": channel, "detector": bool(st["detector"][channel]),
                           "selectivity": float(st["selectivity"][channel]),
                           "part_drop": float(st["part_drop"][channel]),
                           "control_drop": float(st["control_drop"][channel]),
                           "faces": faces, "intact": intact[:, 0], "occluded": occluded[:, 0]})
    return panels
