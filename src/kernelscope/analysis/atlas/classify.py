"""Classes that a kernel earns only by clearing a null distribution.

For each score (see :data:`~kernelscope.analysis.atlas.measure.SCORES`) the
threshold is the ``percentile`` (default 99) of that score over each *threshold
null*, taking the strictest (largest) of them. By default the threshold nulls are
the structure-free ones: independent random kernels, the kernels' own pixels
shuffled, and the network at initialisation when enough init kernels are given;
the smoothed-random and spectrum-matched nulls are reported beside them as
controls (smoothness and the layer's frequency content alone produce ramps, edges
and blobs, and the table shows how often); ``--strict`` lets them set thresholds too.

Decision for one kernel:

1. ``degenerate`` when it is dead (near-zero). A flat (near-constant) kernel is
   flagged in its record but still classified: a box filter is a classical low-pass.
2. Candidates: every class whose score exceeds its threshold. ``gabor-like`` needs
   more than an edge: a fitted envelope of at least ``min_cycles`` cycles along the
   wave (``sigma_u * f``; a Gaussian-derivative edge has about 0.16) and a
   band-pass spectrum. ``centre-surround`` needs a band-pass spectrum and
   ``blob/low-pass`` a low-pass one (peak at the lowest frequencies): a Gaussian
   blob, once its mean is removed, looks like a centre-surround template, but its
   spectrum says what it is.
3. The candidate with the largest normalised margin ``(score - t) / (1 - t)`` wins;
   none gives ``unexplained``.

For kernels smaller than 5x5 there is no ``gabor`` score: Gabor-likeness is not
identifiable there, and only the bank match is reported.
"""

from __future__ import annotations

import numpy as np

from kernelscope.analysis.atlas.measure import Measures

__all__ = ["CLASSES", "SCORE_OF_CLASS", "thresholds_from_nulls", "classify"]

CLASSES = ("edge-like", "gabor-like", "centre-surround", "blob/low-pass", "unexplained", "degenerate")
SCORE_OF_CLASS = {"edge-like": "edge", "gabor-like": "gabor", "centre-surround": "centre-surround",
                  "blob/low-pass": "blob"}


def thresholds_from_nulls(null_scores: dict[str, dict[str, np.ndarray]], *, percentile: float = 99.0,
                          use: tuple[str, ...] | None = None) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Per-score thresholds: the largest ``percentile`` over the nulls in ``use``.

    Parameters
    ----------
    null_scores : dict of str to dict of str to ndarray
        ``null name -> score name -> (n,) scores``.
    percentile : float
        In (0, 100).
    use : tuple of str, optional
        Nulls that set thresholds (default: all).

    Returns
    -------
    thresholds : dict of str to float
    per_null : dict of str to dict of str to float
        The percentile of every score in every null (including those not used).

    Examples
    --------
    >>> nulls = {"a": {"edge": np.linspace(0, 1, 101)}, "b": {"edge": np.linspace(0, 0.5, 101)}}
    >>> t, per = thresholds_from_nulls(nulls, percentile=90)
    >>> round(t["edge"], 3), round(per["b"]["edge"], 3)
    (0.9, 0.45)
    """
    per_null = {null: {score: float(np.nanpercentile(values, percentile)) if np.any(np.isfinite(values))
                       else float("nan") for score, values in scores.items()}
                for null, scores in null_scores.items()}
    use = tuple(null_scores) if use is None else use
    names = sorted({score for null in use for score in per_null[null]})
    thresholds = {}
    for score in names:
        values = [per_null[null][score] for null in use if score in per_null[null]]
        values = [v for v in values if np.isfinite(v)]
        thresholds[score] = max(values) if values else float("nan")
    return thresholds, per_null


def classify(measures: Measures, thresholds: dict[str, float], *, min_cycles: float = 0.25
             ) -> tuple[np.ndarray, np.ndarray]:
    """Class of every kernel and its normalised margin over the winning threshold.

    Parameters
    ----------
    measures : Measures
    thresholds : dict of str to float
        Score thresholds (see :func:`thresholds_from_nulls`).
    min_cycles : float
        Least envelope width along the wave, in cycles, for ``gabor-like``.

    Returns
    -------
    classes : ndarray of str, shape (N,)
    margin : ndarray of shape (N,)
        ``(score - t) / (1 - t)`` of the winning class (NaN for unexplained/degenerate).

    Examples
    --------
    >>> from kernelscope.analysis.atlas.measure import measure
    >>> from kernelscope.analysis.atlas.templates import template_bank
    >>> edge = np.array([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]])
    >>> m = measure(np.stack([edge, np.zeros((3, 3))]), bank=template_bank((3, 3), named=False))
    >>> classify(m, {"edge": 0.9, "centre-surround": 0.9, "blob": 0.9})[0].tolist()
    ['edge-like', 'degenerate']
    """
    scores = measures.scores()
    n = len(measures)
    best = np.full(n, -np.inf)
    classes = np.full(n, "unexplained", dtype=object)
    for name, score_name in SCORE_OF_CLASS.items():
        if score_name not in scores or score_name not in thresholds or not np.isfinite(thresholds[score_name]):
            continue
        t = thresholds[score_name]
        values = np.nan_to_num(scores[score_name], nan=-np.inf)
        margin = (values - t) / max(1.0 - t, 1e-9)
        eligible = values > t
        if name == "gabor-like":
            fit = measures.gabor
            eligible &= (fit.sigma_u * fit.frequency >= min_cycles) & measures.spectrum.bandpass
        elif name == "centre-surround":
            eligible &= measures.spectrum.bandpass
        elif name == "blob/low-pass":
            eligible &= ~measures.spectrum.bandpass
        win = eligible & (margin > best)
        classes = np.where(win, name, classes)
        best = np.where(win, margin, best)
    degenerate = measures.quality.dead
    classes = np.where(degenerate, "degenerate", classes)
    margin = np.where(np.isfinite(best) & ~degenerate, best, np.nan)
    return classes.astype(str), margin
