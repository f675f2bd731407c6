"""Is a kernel structured beyond its spectrum? A surrogate test per kernel.

The atlas's classes compare a kernel's best classical match with structure-free
kernels *of the same shape*; smoothness alone already makes random kernels look like
edges (smoothed random 7x7 kernels reach a median best match of 0.76). This test asks
a sharper question of each kernel on its own: is its best match higher than the best
matches of kernels that share its **amplitude spectrum** (``kind="phase"``: its Fourier
amplitudes kept, its phases randomised) or its **pixel values** (``kind="shuffle"``:
its pixels permuted)?

For kernel ``i`` with best-match score ``s_i`` and ``n`` surrogates scoring
``s_i1 .. s_in``, the p-value is ``(1 + #{s_ij >= s_i}) / (n + 1)``. The p-values of
a layer are corrected together by Benjamini-Hochberg; a kernel is **structured beyond
its spectrum** when ``q < alpha`` (0.05). Phase-randomised surrogates of a
multi-channel kernel add the same random phase to every channel, keeping each
channel's amplitudes and the channels' cross-spectrum (Prichard and Theiler, 1994).

The control is a measurement, not a definition: smoothed random kernels (drawn
from their own seed stream, grouped in pseudo-layers of the layer's size) are put
through the same test, and the fraction that passes is reported beside the layer's.

Everything is vectorised: the surrogates of many kernels are scored against the
template bank in one matrix product per chunk (:func:`best_match_scores`).

>>> import numpy as np
>>> from kernelscope.analysis.atlas.templates import gabor_template
>>> g = np.stack([gabor_template((7, 7), frequency=0.2, theta=t, phase=0.0, sigma_u=1.5, sigma_v=1.5)
...               for t in (0.0, 0.8, 1.6, 2.4)])
>>> test = surrogate_test(g, kind="phase", n_surrogates=199, seed=0)
>>> test.structured.tolist(), test.fraction
([True, True, True, True], 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kernelscope._display import Displayed, Summary
from kernelscope._io import finite_or_none as _f
from kernelscope.analysis.atlas.matching import _unit_rows, as_kernel_stack, spatial_profiles
from kernelscope.analysis.atlas.templates import TemplateBank, template_bank
from kernelscope.errors import KernelscopeError

__all__ = ["SURROGATE_KINDS", "phase_surrogates", "shuffle_surrogates", "best_match_scores", "bh_qvalues",
           "surrogate_pvalues", "SurrogateTest", "surrogate_test"]

SURROGATE_KINDS = ("phase", "shuffle")
# What each kind keeps, for tables and notes.
KEEPS = {"phase": "amplitude spectrum (phases randomised)", "shuffle": "pixel values (positions shuffled)"}
# Surrogate kernels scored per matrix product: bounds memory to ~chunk x C x kh x kw floats.
_CHUNK = 16384


def phase_surrogates(kernels: np.ndarray, n: int, rng: np.random.Generator | int | None = 0) -> np.ndarray:
    """``n`` phase-randomised copies of every kernel: same Fourier amplitudes, random phases.

    Parameters
    ----------
    kernels : ndarray of shape (O, C, kh, kw)
    n : int
    rng : Generator or int or None

    Returns
    -------
    ndarray of shape (O, n, C, kh, kw)
        Real kernels whose |FFT| equals the original's, channel by channel; one random
        phase field per surrogate, added to every channel's phases.

    Examples
    --------
    >>> k = np.random.default_rng(1).standard_normal((2, 1, 5, 5))
    >>> s = phase_surrogates(k, 3, rng=0)
    >>> s.shape, bool(np.allclose(np.abs(np.fft.fft2(s)), np.abs(np.fft.fft2(k))[:, None]))
    ((2, 3, 1, 5, 5), True)
    """
    rng = np.random.default_rng(rng)
    stack = np.asarray(kernels, dtype=np.float64)
    o, c, kh, kw = stack.shape
    spectrum = np.fft.fft2(stack)  # (O, C, kh, kw)
    # The phase of a real white field is antisymmetric, so adding it keeps the result real.
    phase = np.angle(np.fft.fft2(rng.standard_normal((o, n, 1, kh, kw))))  # (O, n, 1, kh, kw)
    return np.real(np.fft.ifft2(spectrum[:, None] * np.exp(1j * phase)))  # (O, n, C, kh, kw)


def shuffle_surrogates(kernels: np.ndarray, n: int, rng: np.random.Generator | int | None = 0) -> np.ndarray:
    """``n`` pixel-shuffled copies of every kernel (one permutation for all channels of a copy).

    Returns
    -------
    ndarray of shape (O, n, C, kh, kw)

    Examples
    --------
    >>> k = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> s = shuffle_surrogates(k, 2, rng=0)
    >>> s.shape, sorted(s[0, 1].ravel().tolist()) == list(range(9))
    ((1, 2, 1, 3, 3), True)
    """
    rng = np.random.default_rng(rng)
    stack = np.asarray(kernels, dtype=np.float64)
    o, c, kh, kw = stack.shape
    order = np.argsort(rng.random((o, n, 1, kh * kw)), axis=-1)  # (O, n, 1, kh*kw)
    flat = np.broadcast_to(stack.reshape(o, 1, c, kh * kw), (o, n, c, kh * kw))
    return np.take_along_axis(flat, np.broadcast_to(order, (o, n, c, kh * kw)), axis=-1).reshape(o, n, c, kh, kw)


_SURROGATES = {"phase": phase_surrogates, "shuffle": shuffle_surrogates}


def best_match_scores(kernels: np.ndarray, bank: TemplateBank) -> np.ndarray:
    """Best |cos| of every kernel over the whole bank: the atlas's ``best_match`` score, in one product.

    The same rule as :func:`~kernelscope.analysis.atlas.matching.match_bank` (spatial
    profile, mean removed and unit norm; blobs with the mean kept), computed in float32
    without keeping which template won.

    Parameters
    ----------
    kernels : ndarray of shape (N, C, kh, kw)
    bank : TemplateBank

    Returns
    -------
    ndarray of shape (N,)
        NaN for an all-zero kernel.

    Examples
    --------
    >>> from kernelscope.analysis.atlas.matching import match_bank
    >>> k = np.random.default_rng(0).standard_normal((50, 1, 5, 5))
    >>> b = template_bank((5, 5))
    >>> bool(np.allclose(best_match_scores(k, b), match_bank(k, b).best_score, atol=1e-5))
    True
    """
    n, _, kh, kw = kernels.shape
    profiles, _ = spatial_profiles(kernels)
    rows = profiles.reshape(n, kh * kw)
    centred, ok = _unit_rows(rows, centre=True)
    raw, raw_ok = _unit_rows(rows, centre=False)
    blob = bank.family == "blob"
    others = bank.matrix[~blob].astype(np.float32)  # (M_other, kh*kw)
    blobs = bank.raw[blob].astype(np.float32)  # (M_blob, kh*kw)
    centred, raw = centred.astype(np.float32), raw.astype(np.float32)
    best_other = np.full(n, -1.0)
    best_blob = np.full(n, -1.0)
    for start in range(0, n, 1024):  # (1024, M) products stay in cache; one (N, M) would not
        stop = min(n, start + 1024)
        if others.size:
            best_other[start:stop] = np.max(np.abs(centred[start:stop] @ others.T), axis=1)  # (n_chunk,)
        if blobs.size:
            best_blob[start:stop] = np.max(np.abs(raw[start:stop] @ blobs.T), axis=1)  # (n_chunk,)
    score = np.maximum(np.where(ok, best_other, -1.0), np.where(raw_ok, best_blob, -1.0))
    return np.where(score >= 0, score, np.nan)


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values (adjusted p-values) of a family of tests; NaN p counts as 1.

    Examples
    --------
    >>> bh_qvalues(np.array([0.01, 0.04, 0.03, 0.5])).round(3).tolist()
    [0.04, 0.053, 0.053, 0.5]
    """
    p = np.where(np.isfinite(p), np.asarray(p, dtype=float), 1.0)
    m = p.size
    if m == 0:
        return p.copy()
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]  # q_(i) = min_{j >= i} p_(j) m / j
    q = np.empty(m)
    q[order] = np.minimum(ranked, 1.0)
    return q


def surrogate_pvalues(kernels: np.ndarray, *, kind: str = "phase", n_surrogates: int = 999,
                      bank: TemplateBank | None = None, rng: np.random.Generator | int | None = 0
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per kernel: its best-match score, its surrogates' median score and the p-value.

    Parameters
    ----------
    kernels : ndarray of shape (O, C, kh, kw)
    kind : {"phase", "shuffle"}
    n_surrogates : int
        Surrogates per kernel (the smallest p-value is ``1 / (n_surrogates + 1)``).
    bank : TemplateBank, optional
    rng : Generator or int or None

    Returns
    -------
    observed, surrogate_median, p : ndarray of shape (O,)
        ``p`` is NaN for a dead kernel.
    """
    if kind not in _SURROGATES:
        from kernelscope.errors import suggest

        raise KernelscopeError(suggest(str(kind), SURROGATE_KINDS, what="surrogate kind"))
    if int(n_surrogates) < 19:
        raise KernelscopeError(f"n_surrogates must be at least 19 (p >= 0.05 otherwise), got {n_surrogates}")
    stack = as_kernel_stack(kernels)
    o, c, kh, kw = stack.shape
    bank = template_bank((kh, kw)) if bank is None else bank
    rng = np.random.default_rng(rng)
    n = int(n_surrogates)
    observed = best_match_scores(stack, bank)  # (O,)
    per_chunk = max(1, _CHUNK // n)
    exceed = np.zeros(o)
    median = np.full(o, np.nan)
    for start in range(0, o, per_chunk):
        stop = min(o, start + per_chunk)
        surrogates = _SURROGATES[kind](stack[start:stop], n, rng)  # (o_chunk, n, C, kh, kw)
        scores = best_match_scores(surrogates.reshape(-1, c, kh, kw), bank).reshape(stop - start, n)
        scores = np.nan_to_num(scores, nan=0.0)
        exceed[start:stop] = np.sum(scores >= observed[start:stop, None] - 1e-6, axis=1)
        median[start:stop] = np.median(scores, axis=1)
    p = np.where(np.isfinite(observed), (1.0 + exceed) / (n + 1.0), np.nan)
    return observed, median, p


@dataclass(repr=False)
class SurrogateTest(Displayed):
    """One surrogate test of a layer, beside the same test of control kernels.

    Attributes
    ----------
    kind : str
        ``"phase"`` (amplitude spectrum kept) or ``"shuffle"`` (pixel values kept).
    n_surrogates : int
    alpha : float
        FDR level (q < alpha passes).
    observed, surrogate_median, p, q : ndarray of shape (O,)
        Best-match score, the median over its surrogates, p-value, BH q-value over the layer.
    structured : ndarray of bool, shape (O,)
    fraction : float
        Share of the layer's kernels with ``q < alpha``.
    control_fractions : dict of str to float
        Control name -> share of its kernels that pass, each pseudo-layer of ``O`` kernels
        corrected on its own (as the layer is).
    control_layer_fractions : dict of str to list of float
        The same per pseudo-layer (its spread is the control's sampling noise).
    control_sizes : dict of str to int
    seed : int
    """

    kind: str
    n_surrogates: int
    alpha: float
    observed: np.ndarray = field(repr=False)
    surrogate_median: np.ndarray = field(repr=False)
    p: np.ndarray = field(repr=False)
    q: np.ndarray = field(repr=False)
    structured: np.ndarray = field(repr=False)
    fraction: float = float("nan")
    control_fractions: dict[str, float] = field(default_factory=dict)
    control_layer_fractions: dict[str, list[float]] = field(default_factory=dict)
    control_sizes: dict[str, int] = field(default_factory=dict)
    seed: int = 0

    @property
    def count(self) -> int:
        return int(np.sum(self.structured))

    def describe(self) -> str:
        """One line: the layer's passing count and fraction beside each control's fraction."""
        what = {"phase": "beyond its spectrum", "shuffle": "beyond its pixel values"}[self.kind]
        controls = "; ".join(f"{name} random kernels {v:.2f} (n={self.control_sizes[name]})"
                             for name, v in self.control_fractions.items())
        return (f"structured {what} ({KEEPS[self.kind]}, {self.n_surrogates} surrogates, BH q < {self.alpha:g}): "
                f"{self.count} of {self.structured.size} ({self.fraction:.2f})" + (f"; controls: {controls}"
                                                                                 if controls else ""))

    def _display_summary(self) -> Summary:
        items: list[tuple[str, object]] = [(f"passing (BH q < {self.alpha:g})", f"{self.count} of {self.structured.size}"),
                                           ("fraction", self.fraction)]
        items += [(f"{name} random kernels, same test (n={self.control_sizes[name]})", v)
                  for name, v in self.control_fractions.items()]
        items.append(("surrogates per kernel", self.n_surrogates))
        table = [{"kernel": i, "best match": self.observed[i], "surrogate median": self.surrogate_median[i],
                  "p": self.p[i], "q": self.q[i], "structured": bool(self.structured[i])}
                 for i in range(self.structured.size)]
        return Summary(f"surrogate test ({self.kind}: keeps the {KEEPS[self.kind]}) of {self.structured.size} "
                       "kernels", items, table, brief=3)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "keeps": KEEPS[self.kind], "n_surrogates": self.n_surrogates,
                "alpha": self.alpha, "count": self.count, "fraction": self.fraction,
                "control_fractions": dict(self.control_fractions),
                "control_layer_fractions": {k: list(v) for k, v in self.control_layer_fractions.items()},
                "control_sizes": dict(self.control_sizes), "seed": self.seed,
                "p": [_f(v) for v in self.p], "q": [_f(v) for v in self.q]}


_CONTROL_CACHE: dict[tuple, tuple[list[float], int]] = {}
CONTROL_KINDS = ("smooth", "random")


def _control(name, shape, kind, n_surrogates, alpha, layers, seed, smooth_sigma, bank, cacheable):
    """Fraction passing, per pseudo-layer of ``shape[0]`` control kernels (own seed stream)."""
    from kernelscope.analysis.atlas.controls import null_kernels

    key = (name, shape, kind, n_surrogates, alpha, layers, seed, smooth_sigma)
    if cacheable and key in _CONTROL_CACHE:
        return _CONTROL_CACHE[key]
    o = shape[0]
    # seed stream 2 of the atlas: apart from the calibration (0) and reported-control (1) draws
    draw_rng = np.random.default_rng([seed, 2, CONTROL_KINDS.index(name)])
    kernels = null_kernels(name, shape, n=o * layers, rng=draw_rng, smooth_sigma=smooth_sigma)
    test_rng = np.random.default_rng([seed, 3, CONTROL_KINDS.index(name), SURROGATE_KINDS.index(kind)])
    _, _, p = surrogate_pvalues(kernels, kind=kind, n_surrogates=n_surrogates, bank=bank, rng=test_rng)
    fractions = [float(np.mean(bh_qvalues(p[i * o:(i + 1) * o]) < alpha)) for i in range(layers)]
    out = (fractions, o * layers)
    if cacheable:
        if len(_CONTROL_CACHE) > 32:
            _CONTROL_CACHE.clear()
        _CONTROL_CACHE[key] = out
    return out


def surrogate_test(kernels: np.ndarray, *, kind: str = "phase", n_surrogates: int = 999, alpha: float = 0.05,
                   controls: tuple[str, ...] = ("smooth",), control_layers: int = 4, seed: int = 0,
                   smooth_sigma: float = 1.0, bank: TemplateBank | None = None) -> SurrogateTest:
    """Which kernels of a layer are structured beyond their spectrum (or their pixel values)?

    Parameters
    ----------
    kernels : ndarray of shape (O, C, kh, kw), (O, kh, kw) or (kh, kw)
    kind : {"phase", "shuffle"}
        What the surrogates keep: the amplitude spectrum, or the pixel values.
    n_surrogates : int
        Per kernel (smallest p: ``1 / (n_surrogates + 1)``).
    alpha : float
        Benjamini-Hochberg FDR level over the layer.
    controls : tuple of str
        Control kernels put through the same test: ``"smooth"`` (random, smoothed by
        ``smooth_sigma`` pixels) and/or ``"random"``.
    control_layers : int
        Pseudo-layers of ``O`` control kernels each (0: no control).
    seed : int
        Seeds the layer's surrogates and, from separate streams, the controls.
    bank : TemplateBank, optional

    Returns
    -------
    SurrogateTest
    """
    if not 0 < float(alpha) < 1:
        raise KernelscopeError(f"alpha must be between 0 and 1 (exclusive), got {alpha}")
    for name in controls:
        if name not in CONTROL_KINDS:
            from kernelscope.errors import suggest

            raise KernelscopeError(suggest(str(name), CONTROL_KINDS, what="surrogate control"))
    if int(control_layers) < 0:
        raise KernelscopeError(f"control_layers must be >= 0, got {control_layers}")
    stack = as_kernel_stack(kernels)
    shape = tuple(int(v) for v in stack.shape)
    cacheable = bank is None
    bank = template_bank(shape[2:]) if bank is None else bank
    rng = np.random.default_rng([seed, 4, SURROGATE_KINDS.index(kind) if kind in SURROGATE_KINDS else 0])
    observed, median, p = surrogate_pvalues(stack, kind=kind, n_surrogates=n_surrogates, bank=bank, rng=rng)
    q = bh_qvalues(p)
    structured = q < alpha
    fractions, layers, sizes = {}, {}, {}
    if int(control_layers) > 0:
        for name in controls:
            per_layer, size = _control(name, shape, kind, int(n_surrogates), float(alpha), int(control_layers),
                                       seed, smooth_sigma, bank, cacheable)
            fractions[name], layers[name], sizes[name] = float(np.mean(per_layer)), per_layer, size
    return SurrogateTest(kind=kind, n_surrogates=int(n_surrogates), alpha=float(alpha), observed=observed,
                         surrogate_median=median, p=p, q=q, structured=structured,
                         fraction=float(np.mean(structured)), control_fractions=fractions,
                         control_layer_fractions=layers, control_sizes=sizes, seed=int(seed))
