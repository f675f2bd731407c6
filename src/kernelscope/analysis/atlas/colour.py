"""Colour of RGB kernels: off-luminance energy, and a census of colour classes against colour nulls.

A luminance edge weights R, G and B alike; a colour-opponent kernel (red against
green, blue against yellow) does not. With ``l = (1, 1, 1) / sqrt(3)`` the luminance
direction in channel space, the off-luminance fraction of a kernel ``k`` of shape
``(3, kh, kw)`` is ``1 - sum_p (l . k[:, p])^2 / sum k^2``: 0 for a pure luminance
kernel, 1 for a kernel whose channel weights sum to zero at every pixel, 2/3 on
average for random kernels. Equal weights are used rather than the perceptual
(0.299, 0.587, 0.114) because networks see per-channel normalised inputs.

The colour census
-----------------
Each kernel, as a ``(3, kh*kw)`` matrix, is decomposed by SVD: ``rank1_fraction``
(``s1^2 / sum s^2``), the unit colour vector ``u1`` of the leading component (signed so
that its weights sum >= 0), its angle to the grey axis, and its ``balance``: twice the
share of ``u1``'s energy carried by its weaker sign (1 for red-minus-green ``(1, -1, 0)``,
2/3 for blue-minus-yellow ``(1, 1, -2)``, 0 when all weights share a sign). Three
scores, each a share of the kernel's energy (:data:`COLOUR_SCORES`):

``luminance``
    ``1 - off_luminance``: the energy in one spatial profile times the grey colour vector.
``colour-opponent``
    ``rank1_fraction * balance``: one spatial profile times a colour vector whose channel
    weights of opposite sign both carry energy. A red-minus-green Gabor, and a
    red-minus-green or red-minus-blue blob, score 1.
``colour-blob``
    ``rank1_fraction * sin^2(grey angle) * (1 - balance)``: the off-grey energy of the
    leading component less its opponent part (at most about 0.74), for a kernel whose
    leading profile is low-pass (a blob) and which is not opponent: a pure red Gaussian
    scores 2/3; a red-minus-blue Gaussian is colour-opponent.

A kernel earns a class only when its score exceeds the class's threshold: the
``percentile`` (99) of the same score over the class's nulls (:data:`COLOUR_THRESHOLD_NULLS`),
the strictest winning; nulls that keep the spatial structure and destroy the colour
structure (:func:`colour_null_kernels`), plus independent random kernels and the
network at initialisation. The largest normalised margin wins between candidates;
none gives ``mixed/unexplained``. A yellow blob (R + G) carries 2/3 of its energy on the
grey axis: when that clears the null it is called ``luminance`` (the census names what
dominates a kernel's energy beyond chance; its grey angle, 35 degrees, is in its record).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kernelscope._display import Displayed, Summary
from kernelscope.errors import KernelscopeError

__all__ = ["off_luminance_fraction", "COLOUR_CLASSES", "COLOUR_SCORES", "COLOUR_NULL_KINDS",
           "COLOUR_THRESHOLD_NULLS", "ColourStats", "colour_stats", "colour_null_kernels", "colour_thresholds",
           "classify_colour", "ColourCensus", "colour_census"]


def off_luminance_fraction(kernels: np.ndarray) -> np.ndarray:
    """Fraction of each RGB kernel's energy off the luminance axis (NaN unless C == 3).

    Parameters
    ----------
    kernels : ndarray of shape (N, C, kh, kw)

    Returns
    -------
    ndarray of shape (N,)

    Examples
    --------
    >>> grey = np.ones((1, 3, 2, 2)); opponent = np.stack([np.ones((2, 2)), -np.ones((2, 2)), np.zeros((2, 2))])[None]
    >>> off_luminance_fraction(np.concatenate([grey, opponent])).round(6).tolist()
    [0.0, 1.0]
    """
    kernels = np.asarray(kernels, dtype=float)
    n, c = kernels.shape[:2]
    if c != 3:
        return np.full(n, np.nan)
    luminance = kernels.sum(axis=1) / np.sqrt(3.0)  # (N, kh, kw)
    total = np.sum(kernels**2, axis=(1, 2, 3))
    on = np.sum(luminance**2, axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 1.0 - on / np.where(total > 0, total, 1.0), np.nan)


# --------------------------------------------------------------------------------------------
# The colour census: luminance, colour-opponent, colour-blob or mixed/unexplained, against nulls
# --------------------------------------------------------------------------------------------

COLOUR_CLASSES = ("luminance", "colour-opponent", "colour-blob", "mixed/unexplained")

# The score each colour class is decided on (all are shares of the kernel's energy, in [0, 1]).
COLOUR_SCORES = {
    "luminance": "share of the energy in one spatial profile times the grey colour vector (1, 1, 1)/sqrt(3) "
                 "(= 1 - off_luminance)",
    "colour-opponent": "rank1_fraction x balance: share of the energy in the leading rank-1 component, times "
                       "2 x the share of its colour vector's energy carried by its weaker sign (1 for "
                       "red-minus-green, 2/3 for blue-minus-yellow, 0 when all channel weights share a sign)",
    "colour-blob": "rank1_fraction x sin^2(grey angle) x (1 - balance): share of the energy in the off-grey part "
                   "of the leading rank-1 component, less its opponent part (2/3 for a pure red kernel, 0 for "
                   "grey and for red-minus-green); the class also needs a low-pass profile",
}

COLOUR_NULL_KINDS = ("random", "channel-mixed", "colour-shuffled", "recoloured", "init")

# Which nulls set each class's threshold (the strictest percentile of them wins). Each class has its
# own: ``channel-mixed`` for luminance (are the channels more alike than planes of different kernels?),
# ``colour-shuffled`` for the colour classes (is one colour vector held across the kernel?). The
# others are reported only: ``colour-shuffled`` leaves a grey kernel unchanged (its three values at a
# pixel are equal), so it is no null for greyness; ``channel-mixed`` assembles genuinely single-channel
# and opponent kernels wherever the layer has weak planes (a red-minus-green kernel has no blue), and
# ``recoloured`` makes genuinely grey or opponent kernels by chance (a quarter of sign patterns agree).
COLOUR_THRESHOLD_NULLS = {
    "luminance": ("random", "channel-mixed", "init"),
    "colour-opponent": ("random", "colour-shuffled", "init"),
    "colour-blob": ("random", "colour-shuffled", "init"),
}

_GREY = np.ones(3) / np.sqrt(3.0)


@dataclass(frozen=True)
class ColourStats:
    """Colour structure of N RGB kernels (arrays of shape (N,) unless noted; NaN for an all-zero kernel).

    Attributes
    ----------
    rank1_fraction : ndarray
        ``s1^2 / sum s^2`` of the SVD of each ``(3, kh*kw)`` kernel matrix.
    colour_vector : ndarray of shape (N, 3)
        ``u1``, the unit colour vector of the leading component, signed so that its weights sum >= 0.
    grey_angle : ndarray
        Angle between ``u1`` and the grey axis, degrees in [0, 90].
    off_luminance : ndarray
        Share of the energy off the grey axis (see :func:`off_luminance_fraction`).
    balance : ndarray
        ``2 * min(sum of u1^2 over positive weights, over negative weights)``, in [0, 1].
    lowpass : ndarray of bool
        The leading spatial profile peaks below half a cycle across the kernel
        (see :func:`~kernelscope.analysis.atlas.spectral.spectral_shape`).
    """

    rank1_fraction: np.ndarray
    colour_vector: np.ndarray
    grey_angle: np.ndarray
    off_luminance: np.ndarray
    balance: np.ndarray
    lowpass: np.ndarray

    def __len__(self) -> int:
        return self.rank1_fraction.shape[0]

    def scores(self) -> dict[str, np.ndarray]:
        """The score of each colour class (see :data:`COLOUR_SCORES`), each ``(N,)``."""
        sin2 = np.sin(np.radians(self.grey_angle)) ** 2
        return {"luminance": 1.0 - self.off_luminance, "colour-opponent": self.rank1_fraction * self.balance,
                "colour-blob": self.rank1_fraction * sin2 * (1.0 - self.balance)}


def colour_stats(kernels: np.ndarray) -> ColourStats:
    """SVD colour statistics of RGB kernels.

    Parameters
    ----------
    kernels : ndarray of shape (N, 3, kh, kw)

    Returns
    -------
    ColourStats

    Examples
    --------
    >>> g = np.outer(np.hanning(7), np.hanning(7))
    >>> k = np.stack([np.stack([g, g, g]), np.stack([g, -g, 0 * g]), np.stack([g, 0 * g, 0 * g])])
    >>> s = colour_stats(k)
    >>> s.grey_angle.round(1).tolist(), s.balance.round(3).tolist(), s.rank1_fraction.round(3).tolist()
    ([0.0, 90.0, 54.7], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0])
    >>> {name: v.round(3).tolist() for name, v in s.scores().items()}
    {'luminance': [1.0, 0.0, 0.333], 'colour-opponent': [0.0, 1.0, 0.0], 'colour-blob': [0.0, 0.0, 0.667]}
    """
    from kernelscope.analysis.atlas.spectral import spectral_shape

    kernels = np.asarray(kernels, dtype=float)
    if kernels.ndim != 4 or kernels.shape[1] != 3:
        raise KernelscopeError(f"colour statistics need RGB kernels of shape (N, 3, kh, kw), got shape {kernels.shape}")
    n, _, kh, kw = kernels.shape
    matrices = kernels.reshape(n, 3, kh * kw)
    u, s, vt = np.linalg.svd(matrices, full_matrices=False)  # (N, 3, 3), (N, 3), (N, 3, kh*kw)
    sign = np.where(u[:, :, 0].sum(axis=1) < 0, -1.0, 1.0)  # (N,)
    u1 = u[:, :, 0] * sign[:, None]  # (N, 3), weights sum >= 0
    profiles = (sign * s[:, 0])[:, None] * vt[:, 0, :]  # (N, kh*kw)
    total = np.sum(s**2, axis=1)  # (N,)
    alive = total > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        rank1 = np.where(alive, s[:, 0] ** 2 / np.where(alive, total, 1.0), np.nan)
    cos = np.clip(u1 @ _GREY, 0.0, 1.0)  # (N,)
    positive = np.sum(np.where(u1 > 0, u1**2, 0.0), axis=1)
    balance = 2.0 * np.minimum(positive, 1.0 - positive)
    lowpass = ~spectral_shape(profiles.reshape(n, kh, kw)).bandpass
    nan = np.where(alive, 0.0, np.nan)  # NaN for an all-zero kernel, 0 otherwise
    return ColourStats(rank1_fraction=rank1, colour_vector=u1 + nan[:, None],
                       grey_angle=np.degrees(np.arccos(cos)) + nan, off_luminance=off_luminance_fraction(kernels),
                       balance=balance + nan, lowpass=lowpass & alive)


def colour_null_kernels(kind: str, kernels: np.ndarray, *, n: int = 1000,
                        rng: np.random.Generator | int | None = 0) -> np.ndarray:
    """Draw ``n`` null kernels that keep the layer's spatial structure and destroy its colour structure.

    Parameters
    ----------
    kind : {"random", "channel-mixed", "colour-shuffled", "recoloured"}
        ``random``: independent standard normal values. ``channel-mixed``: each channel plane
        taken from a different kernel of the layer (planes keep their spatial structure and
        amplitude; the coupling between channels is gone). ``colour-shuffled``: the layer's
        kernels with the three channel values permuted independently at every pixel (each
        pixel keeps its values and its energy; a consistent colour vector is gone).
        ``recoloured``: the layer's kernels with every channel multiplied by a random sign and
        a random scale in [1/2, 2] (log-uniform): the spatial structure and rank are kept, the
        colour vector is random.
    kernels : ndarray of shape (O, 3, kh, kw)
        The layer.
    n : int
    rng : Generator or int or None

    Returns
    -------
    ndarray of shape (n, 3, kh, kw)

    Examples
    --------
    >>> k = np.arange(2 * 3 * 4.0).reshape(2, 3, 2, 2)
    >>> s = colour_null_kernels("colour-shuffled", k, n=2)
    >>> bool(np.allclose(np.sort(s, axis=1), np.sort(k, axis=1)))  # same values at every pixel
    True
    >>> m = colour_null_kernels("channel-mixed", k, n=3)
    >>> all(any(np.array_equal(m[i, c], k[j, c]) for j in range(2)) for i in range(3) for c in range(3))
    True
    """
    from kernelscope.analysis.atlas.controls import null_kernels

    rng = np.random.default_rng(rng)
    kernels = np.asarray(kernels, dtype=float)
    if kernels.ndim != 4 or kernels.shape[1] != 3:
        raise KernelscopeError(f"colour nulls need RGB kernels of shape (O, 3, kh, kw), got shape {kernels.shape}")
    if n < 1:
        raise KernelscopeError(f"n must be at least 1 null kernel, got {n}")
    o, _, kh, kw = kernels.shape
    if kind == "random":
        return null_kernels("random", kernels.shape, n=n, rng=rng)
    if kind == "channel-mixed":
        if o >= 3:  # three different kernels per null kernel
            source = np.argsort(rng.random((n, o)), axis=1)[:, :3]  # (n, 3)
        else:
            source = rng.integers(0, o, size=(n, 3))
        return kernels[source, np.arange(3)[None, :]]  # (n, 3, kh, kw)
    if kind == "colour-shuffled":
        flat = kernels.reshape(o, 3, kh * kw)[np.arange(n) % o]  # (n, 3, P)
        order = np.argsort(rng.random((n, 3, kh * kw)), axis=1)  # a permutation of the channels per pixel
        return np.take_along_axis(flat, order, axis=1).reshape(n, 3, kh, kw)
    if kind == "recoloured":
        factor = rng.choice([-1.0, 1.0], size=(n, 3)) * 2.0 ** rng.uniform(-1.0, 1.0, size=(n, 3))  # (n, 3)
        return kernels[np.arange(n) % o] * factor[:, :, None, None]
    if kind == "init":
        raise KernelscopeError("the 'init' colour null comes from the network: pass init_null=")
    from kernelscope.errors import suggest

    raise KernelscopeError(suggest(kind, COLOUR_NULL_KINDS, what="colour null"))


def colour_thresholds(null_scores: dict[str, dict[str, np.ndarray]], *, percentile: float = 99.0,
                      use: dict[str, tuple[str, ...]] | None = None
                      ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Per colour class: the largest ``percentile`` of its score over that class's threshold nulls.

    Parameters
    ----------
    null_scores : dict of str to dict of str to ndarray
        ``null name -> class -> (n,) scores`` (see :meth:`ColourStats.scores`).
    percentile : float
    use : dict of str to tuple of str, optional
        Class -> nulls that set its threshold (default :data:`COLOUR_THRESHOLD_NULLS`); nulls
        missing from ``null_scores`` are skipped.

    Returns
    -------
    thresholds : dict of str to float
    per_null : dict of str to dict of str to float

    Examples
    --------
    >>> scores = {"a": {"luminance": np.linspace(0, 1, 101)}, "b": {"luminance": np.linspace(0, 0.5, 101)}}
    >>> t, per = colour_thresholds(scores, percentile=90, use={"luminance": ("b",)})
    >>> round(t["luminance"], 3), round(per["a"]["luminance"], 3)
    (0.45, 0.9)
    """
    use = COLOUR_THRESHOLD_NULLS if use is None else use
    per_null = {}
    for null, scores in null_scores.items():
        per_null[null] = {}
        for cls, values in scores.items():
            values = np.asarray(values, dtype=float)
            finite = values[np.isfinite(values)]
            per_null[null][cls] = float(np.percentile(finite, percentile)) if finite.size else float("nan")
    thresholds = {}
    for cls, nulls in use.items():
        values = [per_null[null][cls] for null in nulls if null in per_null and np.isfinite(per_null[null][cls])]
        thresholds[cls] = max(values) if values else float("nan")
    return thresholds, per_null


def classify_colour(stats: ColourStats, thresholds: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Colour class of every kernel and its normalised margin ``(score - t) / (1 - t)``.

    A class is a candidate when its score exceeds its threshold; ``colour-blob`` also needs
    a low-pass profile and loses to ``colour-opponent`` (an opponent blob is opponent).
    The candidate with the largest margin wins; none (or an all-zero kernel) gives
    ``mixed/unexplained`` with a NaN margin.

    Examples
    --------
    >>> g = np.outer(np.hanning(7), np.hanning(7))
    >>> k = np.stack([[g, g, g], [g, -g, 0 * g], [g, 0 * g, 0 * g], [0 * g, 0 * g, 0 * g]])  # (4, 3, 7, 7)
    >>> classify_colour(colour_stats(k), {"luminance": 0.5, "colour-opponent": 0.5, "colour-blob": 0.5})[0].tolist()
    ['luminance', 'colour-opponent', 'colour-blob', 'mixed/unexplained']
    """
    scores = stats.scores()
    n = len(stats)
    best = np.full(n, -np.inf)
    classes = np.full(n, "mixed/unexplained", dtype=object)
    opponent = np.zeros(n, dtype=bool)
    for name in ("luminance", "colour-opponent", "colour-blob"):
        t = thresholds.get(name, float("nan"))
        if not np.isfinite(t):
            continue
        values = np.nan_to_num(scores[name], nan=-np.inf)
        margin = (values - t) / max(1.0 - t, 1e-9)
        eligible = values > t
        if name == "colour-opponent":
            opponent = eligible
        elif name == "colour-blob":
            eligible &= stats.lowpass & ~opponent
        win = eligible & (margin > best)
        classes = np.where(win, name, classes)
        best = np.where(win, margin, best)
    return classes.astype(str), np.where(np.isfinite(best), best, np.nan)


@dataclass(repr=False)
class ColourCensus(Displayed):
    """The colour classes of one RGB layer beside the same census of its colour nulls.

    Attributes
    ----------
    classes : ndarray of str, shape (O,)
    margins : ndarray of shape (O,)
    stats : ColourStats
    thresholds : dict of str to float
        Per colour class, the score it must exceed.
    threshold_nulls : dict of str to list of str
        Per colour class, the nulls that set its threshold.
    null_percentiles : dict of str to dict of str to float
        The ``percentile`` of every class score in every calibration null.
    counts, fractions : dict of str to int / float
        Per colour class (:data:`COLOUR_CLASSES`).
    control_fractions : dict of str to dict of str to float
        Null -> class -> fraction, measured on a draw independent of the calibration draw.
    control_sizes, calibration_sizes : dict of str to int
    percentile : float
    notes : list of str
    null_scores : dict of str to dict of str to ndarray
        The calibration draws' scores (for figures; not written to JSON).
    """

    classes: np.ndarray
    margins: np.ndarray
    stats: ColourStats
    thresholds: dict[str, float]
    threshold_nulls: dict[str, list[str]]
    null_percentiles: dict[str, dict[str, float]]
    counts: dict[str, int]
    fractions: dict[str, float]
    control_fractions: dict[str, dict[str, float]]
    control_sizes: dict[str, int]
    calibration_sizes: dict[str, int]
    percentile: float
    notes: list[str] = field(default_factory=list)
    null_scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    def record(self, i: int) -> dict:
        """Kernel ``i``'s colour class, margin, statistics and scores (floats; NaN kept)."""
        s = self.stats
        return {"class": str(self.classes[i]), "margin": float(self.margins[i]),
                "grey_angle_deg": float(s.grey_angle[i]), "balance": float(s.balance[i]),
                "colour_vector": [float(v) for v in s.colour_vector[i]], "lowpass": bool(s.lowpass[i]),
                "scores": {k: float(v[i]) for k, v in s.scores().items()}}

    def to_dict(self) -> dict:
        """Everything but the per-kernel records and raw arrays (NaN kept: the caller makes it JSON-safe)."""
        return {"classes": list(COLOUR_CLASSES), "percentile": self.percentile,
                "thresholds": dict(self.thresholds), "threshold_nulls": {k: list(v) for k, v in self.threshold_nulls.items()},
                "score_definitions": dict(COLOUR_SCORES), "null_percentiles": {n: dict(d) for n, d in
                                                                              self.null_percentiles.items()},
                "calibration_sizes": dict(self.calibration_sizes), "control_sizes": dict(self.control_sizes),
                "counts": dict(self.counts), "fractions": dict(self.fractions),
                "control_fractions": {n: dict(d) for n, d in self.control_fractions.items()},
                "notes": list(self.notes)}

    def _display_summary(self) -> Summary:
        items = [(cls, self.fractions[cls]) for cls in COLOUR_CLASSES]
        items += [(f"threshold {c} ({', '.join(self.threshold_nulls[c]) or 'no null'})", v)
                  for c, v in self.thresholds.items()]
        table = [{"colour class": cls, "count": self.counts[cls], "fraction": self.fractions[cls],
                  **{f"{n} ({self.control_sizes[n]})": self.control_fractions[n][cls] for n in self.control_fractions}}
                 for cls in COLOUR_CLASSES]
        return Summary(f"colour census of {len(self.classes)} RGB kernels (p{self.percentile:g} of the nulls)",
                       items, table, list(self.notes))

    def summary_lines(self) -> list[str]:
        """The census as table lines (class, count, fraction, every control's fraction) with thresholds."""
        thr = "; ".join(f"{c} {self.thresholds[c]:.3f} ({', '.join(self.threshold_nulls[c]) or 'no null'})"
                        for c in self.thresholds)
        lines = [f"colour (RGB) thresholds, p{self.percentile:g} of the nulls named: {thr}"]
        nulls = list(self.control_fractions)
        lines.append(f"{'colour class':<18}{'count':>6}{'fraction':>10}" + "".join(
            f"{n + ' (' + str(self.control_sizes[n]) + ')':>24}" for n in nulls))
        for cls in COLOUR_CLASSES:
            lines.append(f"{cls:<18}{self.counts[cls]:>6}{self.fractions[cls]:>10.2f}" + "".join(
                f"{self.control_fractions[n][cls]:>24.2f}" for n in nulls))
        lines.extend(f"note: {n}" for n in self.notes)
        return lines


def _fractions(labels: np.ndarray) -> dict[str, float]:
    return {c: float(np.mean(labels == c)) for c in COLOUR_CLASSES}


def colour_census(kernels: np.ndarray, *, init_null: np.ndarray | None = None, percentile: float = 99.0,
                  n_null: int = 1000, seed: int = 0, threshold_nulls: dict[str, tuple[str, ...]] | None = None,
                  min_calibration: int = 100) -> ColourCensus:
    """Colour class of every RGB kernel, with thresholds from colour nulls and their control fractions.

    Every drawn null (``random``, ``channel-mixed``, ``colour-shuffled``, ``recoloured``; see
    :func:`colour_null_kernels`) is drawn twice, independently: the first draw calibrates the
    thresholds, the second is classified with them and reported, so a control's fraction is
    an honest estimate of the false-positive rate, not 1 - percentile by construction. The
    ``init`` null (fresh initialisations of the layer) is split the same way, even kernels
    calibrating, odd ones reported, when it holds at least ``2 * min_calibration`` kernels;
    smaller, it is reported only.

    Parameters
    ----------
    kernels : ndarray of shape (O, 3, kh, kw)
    init_null : ndarray of shape (n, 3, kh, kw), optional
    percentile : float
        In (50, 100).
    n_null : int
        Kernels per draw of each drawn null.
    seed : int
        Seed of the null draws (independent of the spatial atlas's draws).
    threshold_nulls : dict of str to tuple of str, optional
        Class -> nulls that set its threshold (default :data:`COLOUR_THRESHOLD_NULLS`).
    min_calibration : int
        Least calibration kernels for a null to set thresholds.

    Returns
    -------
    ColourCensus

    Examples
    --------
    >>> from kernelscope.analysis.atlas.templates import gabor_template
    >>> gs = [gabor_template((7, 7), frequency=0.22, theta=t, phase=p, sigma_u=1.6, sigma_v=1.6)
    ...       for t in np.linspace(0, np.pi, 4, endpoint=False) for p in (0.0, 1.5)]
    >>> layer = np.stack([[g, g, g] if i % 2 == 0 else [g, -g, 0 * g] for i, g in enumerate(gs)])  # (8, 3, 7, 7)
    >>> census = colour_census(layer, n_null=300)
    >>> census.classes[:2].tolist(), census.control_fractions["random"]["mixed/unexplained"] >= 0.9
    (['luminance', 'colour-opponent'], True)
    """
    kernels = np.asarray(kernels, dtype=float)
    if kernels.ndim != 4 or kernels.shape[1] != 3:
        raise KernelscopeError(f"the colour census needs RGB kernels of shape (O, 3, kh, kw), got shape {kernels.shape}")
    if not 50 < float(percentile) < 100:
        raise KernelscopeError(f"percentile must be between 50 and 100 (exclusive), got {percentile}")
    if int(n_null) < 10:
        raise KernelscopeError(f"n_null must be at least 10 kernels per null, got {n_null}")
    use = dict(COLOUR_THRESHOLD_NULLS if threshold_nulls is None else threshold_nulls)
    for cls, nulls in use.items():
        if cls not in COLOUR_SCORES:
            from kernelscope.errors import suggest

            raise KernelscopeError(suggest(cls, tuple(COLOUR_SCORES), what="colour class"))
        for name in nulls:
            if name not in COLOUR_NULL_KINDS:
                from kernelscope.errors import suggest

                raise KernelscopeError(suggest(name, COLOUR_NULL_KINDS, what="colour null"))
    notes = []
    calibration: dict[str, ColourStats] = {}
    report: dict[str, ColourStats] = {}
    for k, kind in enumerate(COLOUR_NULL_KINDS[:-1]):
        for draw, target in enumerate((calibration, report)):
            rng = np.random.default_rng([seed, 0xC010, k, draw])
            target[kind] = colour_stats(colour_null_kernels(kind, kernels, n=int(n_null), rng=rng))
    if kernels.shape[0] < 3:
        notes.append(f"only {kernels.shape[0]} kernels: the channel-mixed null reuses the same kernel's planes")
    if init_null is not None:
        init_null = np.asarray(init_null, dtype=float)
        if init_null.ndim != 4 or init_null.shape[1:] != kernels.shape[1:]:
            raise KernelscopeError(f"init_null kernels must have shape (n, {', '.join(map(str, kernels.shape[1:]))}), "
                                   f"got {init_null.shape}")
        if init_null.shape[0] >= 2 * min_calibration:
            calibration["init"] = colour_stats(init_null[0::2])
            report["init"] = colour_stats(init_null[1::2])
        else:
            report["init"] = colour_stats(init_null)
            notes.append(f"the init colour control has only {init_null.shape[0]} kernels: reported, but not "
                         f"split into a calibration half of >= {min_calibration}")
    null_scores = {name: s.scores() for name, s in calibration.items()}
    thresholds, per_null = colour_thresholds(null_scores, percentile=percentile, use=use)
    used = {cls: [n for n in nulls if n in calibration] for cls, nulls in use.items()}
    for cls, t in thresholds.items():
        if not t < 0.999:
            notes.append(f"the {cls} threshold is {t:.3f}: its nulls ({', '.join(used[cls])}) reach the top of the "
                         f"scale, so no kernel of this layer can earn '{cls}'")
    stats = colour_stats(kernels)
    classes, margins = classify_colour(stats, thresholds)
    counts = {c: int(np.sum(classes == c)) for c in COLOUR_CLASSES}
    control_fractions = {name: _fractions(classify_colour(s, thresholds)[0]) for name, s in report.items()}
    return ColourCensus(classes=classes, margins=margins, stats=stats, thresholds=thresholds, threshold_nulls=used,
                        null_percentiles=per_null, counts=counts,
                        fractions={c: counts[c] / kernels.shape[0] for c in COLOUR_CLASSES},
                        control_fractions=control_fractions, control_sizes={n: len(s) for n, s in report.items()},
                        calibration_sizes={n: len(s) for n, s in calibration.items()}, percentile=float(percentile),
                        notes=notes, null_scores=null_scores)
