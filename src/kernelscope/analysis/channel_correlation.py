"""Does a channel measure correlation? Everything for one SOURCE, with its initialisation control.

:func:`correlation_of` opens nothing itself: it takes a :class:`~kernelscope.sources.Source` and runs,
for the network and for ``Source.init_model`` (the control):

1. linear templates of every chosen layer in one streaming pass, and the median held-out R^2 per layer
   (:mod:`kernelscope.analysis.correlation`);
2. raw vs normalised correlation on the first conv layer;
3. grating tuning of every chosen layer, and on the first layer the agreement between the Gabor
   fit of the weights and the measured orientation (:mod:`kernelscope.analysis.tuning`).

:func:`over_training` repeats the per-layer R^2 and selectivity at every recorded epoch of a run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kernelscope._display import Displayed, Picture, Summary, kernel_tiles
from kernelscope._io import finite_or_none
from kernelscope.analysis.correlation import (
    DepthCurve,
    RawVsNormalised,
    layer_templates,
    raw_vs_normalised,
)
from kernelscope.analysis.tuning import Tuning, orientation_agreement, tuning_curves
from kernelscope.errors import KernelscopeError

__all__ = ["CorrelationResult", "correlation_of", "TrainingCurve", "over_training"]


@dataclass(repr=False)
class CorrelationResult(Displayed):
    """What :func:`correlation_of` measured (``init``: the same on the network at initialisation).

    In a notebook: per layer the median held-out R^2 and OSI beside the control, and the first
    layer's templates.
    """

    source: str
    images: str
    layers: list[str]
    at: str
    depth: DepthCurve
    raw: RawVsNormalised | None
    raw_init: RawVsNormalised | None
    tuning: dict[str, Tuning]
    tuning_init: dict[str, Tuning]
    agreement: dict[str, Any] | None
    agreement_init: dict[str, Any] | None
    training: TrainingCurve | None = None
    notes: list[str] = field(default_factory=list)

    def layer_rows(self) -> list[dict[str, Any]]:
        """One row per layer: median R^2 and tuning summaries, trained and init."""
        rows = []
        for row in self.depth.rows():
            layer = row["layer"]
            t, c = self.tuning[layer].summary(), self.tuning_init[layer].summary()
            rows.append({**row, "median_osi": t["median_osi"], "init_median_osi": c["median_osi"],
                         "simple_fraction": t["simple_fraction"], "init_simple_fraction": c["simple_fraction"]})
        return rows

    def _display_summary(self) -> Summary:
        items: list[tuple[str, Any]] = []
        for row in self.layer_rows():
            items.append((f"{row['layer']} median R^2 (init)", (row["median_r2"], row["init_median_r2"])))
        if self.raw is not None:
            items.append(("first layer rho(activation, NCC)", self.raw.medians()["rho_ncc"]))
        return Summary(f"correlation of {self.source}: {len(self.layers)} layer(s) on {self.images}, read at {self.at}",
                       items, self.layer_rows(), list(self.notes))

    def _display_picture(self) -> Picture | None:
        first = self.depth.trained[self.layers[0]]
        return Picture(kernel_tiles(first.templates), caption=f"linear templates of {first.layer}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "images": self.images, "layers": self.layers, "at": self.at,
            "per_layer": self.layer_rows(), "templates": self.depth.to_dict(),
            "raw_vs_normalised": self.raw.to_dict() if self.raw else None,
            "raw_vs_normalised_init": self.raw_init.to_dict() if self.raw_init else None,
            "tuning": {k: v.to_dict() for k, v in self.tuning.items()},
            "tuning_init": {k: v.to_dict() for k, v in self.tuning_init.items()},
            "orientation_agreement": self.agreement, "orientation_agreement_init": self.agreement_init,
            "over_training": self.training.to_dict() if self.training else None, "notes": self.notes,
        }


def correlation_of(src: Any, *, layers: Sequence[str] | None = None, images: str | None = None,
                   at: str = "activation", limit: int | None = 2000, positions: int = 3,
                   max_features: int = 2048, batch_size: int = 64, seed: int = 0,
                   with_training: bool = False, epochs: Sequence[int] | None = None, context: Any = None,
                   checkpoint: Any = None) -> CorrelationResult | None:
    """Templates, raw vs normalised correlation and tuning of ``src``'s layers, against its init control.

    Parameters
    ----------
    src : Source
    layers : list of str, optional
        Default: every conv layer.
    images : str, optional
        A named image set (default: ``test`` for a run, else ``faces``); at most ``limit`` images.
    at : {"conv", "activation"}
        Where the templates and tuning read each conv layer.
    with_training : bool
        Also :func:`over_training` (a run directory only).
    context, checkpoint
        Under ``torchrun`` (``context`` from :func:`kernelscope.train.distributed.setup`) the
        templates' regression sums are computed on each rank's share of the images and added
        (:func:`~kernelscope.analysis.correlation.layer_templates`); the rest is small and runs on
        rank 0 alone: raw vs normalised correlation (a seeded sample of first-layer units), grating
        tuning (synthetic images, no data set) and the curve over training. Other ranks return None.
    """
    layers = list(layers) if layers else list(src.conv_layers)
    if not layers:
        raise KernelscopeError(f"{src.label} has no Conv2d layer; give --layer")
    for layer in layers:
        src.pick_layer(layer)
    spec = images or ("test" if src.run is not None else "faces")
    inputs, _, description = src.images(spec, limit=limit)
    init = src.init_model(seed)
    run = dict(at=at, positions=positions, batch_size=batch_size, max_features=max_features, context=context,
               checkpoint=checkpoint)
    trained_t = layer_templates(src.model, layers, inputs, name="templates", **run)
    init_t = layer_templates(init, layers, inputs, name="templates-init", **run)
    if context is not None and not context.is_main:
        return None
    depth = DepthCurve(layers, trained_t, init_t, at)
    notes: list[str] = []
    first = src.conv_layers[0]
    raw = raw_init = agreement = agreement_init = None
    try:
        raw = raw_vs_normalised(src.model, first, inputs, batch_size=batch_size, seed=seed)
        raw_init = raw_vs_normalised(init, first, inputs, batch_size=batch_size, seed=seed)
    except KernelscopeError as error:
        notes.append(f"raw vs normalised correlation: {error}")
    shape = tuple(inputs.shape[1:])
    tuning = {layer: tuning_curves(src.model, layer, shape, normalise=src.normalise, at=at) for layer in layers}
    tuning_init = {layer: tuning_curves(init, layer, shape, normalise=src.normalise, at=at) for layer in layers}
    first_tuning = tuning.get(first) or tuning_curves(src.model, first, shape, normalise=src.normalise, at=at)
    first_init = tuning_init.get(first) or tuning_curves(init, first, shape, normalise=src.normalise, at=at)
    agreement = orientation_agreement(src.model, first, first_tuning)
    agreement_init = orientation_agreement(init, first, first_init)
    training = None
    if with_training:
        if src.run is None:
            notes.append("over training: needs a run directory as SOURCE")
        else:
            training = over_training(src, layers=layers, inputs=inputs, at=at, epochs=epochs, positions=positions,
                                     max_features=max_features, batch_size=batch_size)
    return CorrelationResult(src.label, f"{description} ({inputs.shape[0]} images)", layers, at, depth, raw,
                             raw_init, tuning, tuning_init, agreement, agreement_init, training, notes)


@dataclass(repr=False)
class TrainingCurve(Displayed):
    """Per-layer median R^2 and median OSI at every epoch analysed."""

    layers: list[str]
    epochs: list[int]
    median_r2: np.ndarray  # (E, L)
    median_osi: np.ndarray  # (E, L)
    at: str

    def rows(self) -> list[dict[str, Any]]:
        return [{"epoch": e, "layer": layer, "median_r2": finite_or_none(self.median_r2[i, j]),
                 "median_osi": finite_or_none(self.median_osi[i, j])}
                for i, e in enumerate(self.epochs) for j, layer in enumerate(self.layers)]

    def _display_summary(self) -> Summary:
        last = [(f"{layer} median R^2 at epoch {self.epochs[-1]}", finite_or_none(self.median_r2[-1, j]))
                for j, layer in enumerate(self.layers)] if self.epochs else []
        return Summary(f"over training: {len(self.layers)} layer(s) at {len(self.epochs)} epoch(s)", last, self.rows())

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "layers": self.layers, "epochs": self.epochs, "rows": self.rows()}


def over_training(src: Any, *, layers: Sequence[str] | None = None, inputs: np.ndarray | None = None,
                  images: str | None = None, at: str = "activation", epochs: Sequence[int] | None = None,
                  limit: int | None = 1000, **options: Any) -> TrainingCurve:
    """Median held-out R^2 and median OSI per layer at every checkpoint of a run directory."""
    if src.run is None:
        raise KernelscopeError(f"{src.label} is not a run directory: over training needs recorded checkpoints")
    available = list(src.run.checkpoint_epochs)
    chosen = available if epochs is None else [int(e) for e in epochs]
    missing = sorted(set(chosen) - set(available))
    if missing:
        raise KernelscopeError(f"epoch(s) {missing} have no checkpoint in {src.label}; recorded: {available}")
    if not chosen:
        raise KernelscopeError(f"{src.label} has no checkpoints (checkpoints/epoch_*.pt)")
    layers = list(layers) if layers else list(src.conv_layers)
    if inputs is None:
        inputs, _, _ = src.images(images or "test", limit=limit)
    shape = tuple(inputs.shape[1:])
    r2 = np.full((len(chosen), len(layers)), np.nan)
    osi = np.full_like(r2, np.nan)
    for i, epoch in enumerate(chosen):
        model = src.run.model(epoch).to(src.device).eval()
        results = layer_templates(model, layers, inputs, at=at, **options)
        for j, layer in enumerate(layers):
            r2[i, j] = results[layer].median_r2
            value = tuning_curves(model, layer, shape, normalise=src.normalise, at=at).summary()["median_osi"]
            osi[i, j] = np.nan if value is None else value
    return TrainingCurve(layers, chosen, r2, osi, at)
