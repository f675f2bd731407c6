"""The atlas over training: class fractions, match scores and drift at every snapshot.

Given a layer's kernels at every recorded epoch (epoch 0 = initialisation), with the
thresholds of the final atlas held fixed:

* the class fractions and the median best-match score / Gabor R^2 at every epoch,
  beside the epoch-0 values (the init control);
* the distance of each kernel from its initial value, relative to the initial norm,
  ``||k_e - k_0|| / ||k_0||``, and its cosine with the initial kernel;
* the epoch each kernel *settles*: the first epoch from which it stays within
  ``settle_tol`` of its final value, measured as a share of its total drift,
  ``||k_e - k_final|| <= settle_tol * ||k_final - k_0||`` for every later epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernelscope._display import Displayed, Summary
from kernelscope._io import finite_or_none
from kernelscope.analysis.atlas.classify import CLASSES, classify
from kernelscope.analysis.atlas.matching import as_kernel_stack
from kernelscope.analysis.atlas.measure import measure, nanmedian
from kernelscope.analysis.atlas.templates import TemplateBank
from kernelscope.errors import KernelscopeError

__all__ = ["Evolution", "evolution", "drift"]


@dataclass(frozen=True, repr=False)
class Evolution(Displayed):
    """The atlas at every snapshot (lists/arrays indexed like ``epochs``).

    Attributes
    ----------
    epochs : list of int
        The snapshots' epochs, or optimiser steps when ``unit == "step"`` (0 = initialisation).
    fractions : dict of str to list of float
        Class -> fraction of kernels at each epoch.
    median_match : list of float
        Median best |cos| over all families at each epoch.
    median_gabor_r2 : list of float
        Median Gabor R^2 (NaN when not identifiable).
    classes : ndarray of str, shape (E, N)
    distance : ndarray of shape (E, N)
        ``||k_e - k_0|| / ||k_0||``.
    cosine_to_init : ndarray of shape (E, N)
    settle_epoch : ndarray of int, shape (N,)
        In the same unit as ``epochs``.
    unit : str
        ``"epoch"`` or ``"step"``.
    """

    epochs: list[int]
    fractions: dict[str, list[float]]
    median_match: list[float]
    median_gabor_r2: list[float]
    classes: np.ndarray
    distance: np.ndarray
    cosine_to_init: np.ndarray
    settle_epoch: np.ndarray
    unit: str = "epoch"

    def _display_summary(self) -> Summary:
        e, n = self.classes.shape
        items: list[tuple[str, object]] = [
            ("median best match", f"{self.median_match[0]:.2f} -> {self.median_match[-1]:.2f}"),
            ("median distance from init (x initial norm)", nanmedian(self.distance[-1])),
            (f"median settle {self.unit}", int(np.median(self.settle_epoch)) if n else None)]
        table = [{self.unit: ep, "median best match": self.median_match[i], "median Gabor R^2": self.median_gabor_r2[i],
                  **{cls: self.fractions[cls][i] for cls in self.fractions}} for i, ep in enumerate(self.epochs)]
        return Summary(f"{n} kernels over {e} snapshots ({self.unit}s {self.epochs[0]}..{self.epochs[-1]})",
                       items, table)

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {
            "unit": self.unit,
            "epochs": list(self.epochs),
            "fractions": {k: [float(v) for v in vals] for k, vals in self.fractions.items()},
            "median_match": [float(v) for v in self.median_match],
            "median_gabor_r2": [finite_or_none(v) for v in self.median_gabor_r2],
            "distance_from_init": self.distance.tolist(),
            "cosine_to_init": self.cosine_to_init.tolist(),
            "settle_epoch": [int(v) for v in self.settle_epoch],
            "classes": self.classes.tolist(),
        }


def drift(snapshots: np.ndarray, *, settle_tol: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance from init, cosine to init and settling index of kernels over snapshots.

    Parameters
    ----------
    snapshots : ndarray of shape (E, N, ...)
        The kernels at each of E snapshots, the first being the initialisation.
    settle_tol : float
        Share of the total drift within which a kernel counts as settled.

    Returns
    -------
    distance : ndarray of shape (E, N)
    cosine : ndarray of shape (E, N)
    settle : ndarray of int, shape (N,)
        Index (into the snapshots) of the first snapshot from which each kernel stays settled.

    Examples
    --------
    >>> k0 = np.ones((1, 2)); path = np.stack([k0, 2 * k0, 3 * k0, 3 * k0])  # (4, 1, 2)
    >>> d, c, s = drift(path)
    >>> d[:, 0].tolist(), s.tolist()
    ([0.0, 1.0, 2.0, 2.0], [2])
    """
    snapshots = np.asarray(snapshots, dtype=float)
    e, n = snapshots.shape[:2]
    flat = snapshots.reshape(e, n, -1)
    init, final = flat[0], flat[-1]
    init_norm = np.linalg.norm(init, axis=1)  # (N,)
    delta = np.linalg.norm(flat - init[None], axis=2)  # (E, N)
    with np.errstate(invalid="ignore", divide="ignore"):
        distance = delta / np.where(init_norm > 0, init_norm, np.nan)[None]
        norms = np.linalg.norm(flat, axis=2)
        cosine = np.sum(flat * init[None], axis=2) / (norms * init_norm[None])
    to_final = np.linalg.norm(flat - final[None], axis=2)  # (E, N)
    total = np.linalg.norm(final - init, axis=1)  # (N,)
    within = to_final <= settle_tol * total[None] + 1e-12
    # settled from index i when every later snapshot is within: reverse cumulative AND.
    settled_from = np.flip(np.logical_and.accumulate(np.flip(within, axis=0), axis=0), axis=0)
    settle = np.argmax(settled_from, axis=0)
    return distance, cosine, settle


def evolution(snapshots: dict[int, np.ndarray], *, thresholds: dict[str, float],
              bank: TemplateBank | None = None, min_cycles: float = 0.25, settle_tol: float = 0.1,
              unit: str = "epoch") -> Evolution:
    """Class fractions, median scores and drift of one layer over its recorded epochs.

    Parameters
    ----------
    snapshots : dict of int to ndarray of shape (O, C, kh, kw)
        Epoch -> kernels; the smallest epoch is taken as the initialisation.
    thresholds : dict of str to float
        Fixed class thresholds (from the atlas of the final epoch).
    bank : TemplateBank, optional
    min_cycles, settle_tol : float
        See :func:`~kernelscope.analysis.atlas.classify.classify` and :func:`drift`.
    unit : {"epoch", "step"}
        What the snapshot keys count.

    Returns
    -------
    Evolution

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> edge = np.outer([1.0, 2.0, 1.0], [-1.0, 0.0, 1.0])
    >>> init = rng.standard_normal((2, 1, 3, 3))
    >>> snaps = {0: init, 1: 0.5 * init + edge, 2: 0.01 * init + edge}
    >>> ev = evolution(snaps, thresholds={"edge": 0.95, "centre-surround": 0.95, "blob": 0.95})
    >>> ev.fractions["edge-like"], ev.settle_epoch.tolist()
    ([0.0, 1.0, 1.0], [2, 2])
    """
    if not snapshots:
        raise KernelscopeError("evolution needs at least one snapshot, got none")
    epochs = sorted(snapshots)
    if unit not in ("epoch", "step"):
        raise KernelscopeError(f"unit must be 'epoch' or 'step', got {unit!r}")
    stacks = [as_kernel_stack(snapshots[e], name=f"kernels at {unit} {e}") for e in epochs]
    shapes = {s.shape for s in stacks}
    if len(shapes) != 1:
        raise KernelscopeError(f"snapshots must all have the same shape, got {sorted(shapes)}")
    fractions = {c: [] for c in CLASSES}
    median_match, median_r2, classes = [], [], []
    for stack in stacks:
        m = measure(stack, bank=bank)
        labels, _ = classify(m, thresholds, min_cycles=min_cycles)
        classes.append(labels)
        for c in CLASSES:
            fractions[c].append(float(np.mean(labels == c)))
        median_match.append(float(nanmedian(m.match.best_score)))
        median_r2.append(float(nanmedian(m.gabor.r2)) if m.gabor is not None else float("nan"))
    distance, cosine, settle = drift(np.stack(stacks), settle_tol=settle_tol)
    return Evolution(epochs=epochs, fractions=fractions, median_match=median_match, median_gabor_r2=median_r2,
                     classes=np.asarray(classes), distance=distance, cosine_to_init=cosine,
                     settle_epoch=np.asarray([epochs[i] for i in settle], dtype=int), unit=unit)
