"""Channels that recur across seeds: Hungarian matching between networks trained from different seeds.

Two networks of the same recipe, trained from different seeds, have no reason to
number their channels alike. Which channels of one have a counterpart in the other,
and which are idiosyncratic?

* **First layer**: the cosine similarity of every pair of kernels (flattened
  ``C x kh x kw``, signed: with a ReLU after the layer a kernel and its negative are
  different detectors), matched one-to-one by the Hungarian algorithm
  (:func:`scipy.optimize.linear_sum_assignment`, maximising the total cosine).
* **Deeper layers**: the Pearson correlation of every pair of channels' activations
  over the same images and positions (:func:`activation_similarity`), matched the same way.

Each matched pair is judged against a **permutation null** that keeps each network's
channels and destroys the correspondence: for kernels, the second network's kernels
with their pixels shuffled (one permutation per kernel); for activations, the second
network's activations taken on other images (images permuted). The null's matched
similarities over ``n_permutations`` redraws give a p95; a pair **recurs** when its
similarity exceeds it. With more than two seeds, every seed is matched to a reference
seed, and a reference channel **appears in every seed** when it recurs in all of them.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> a = rng.standard_normal((6, 1, 5, 5))
>>> m = match_pair(a, a[::-1] + 0.1 * rng.standard_normal(a.shape), kind="kernels", n_permutations=50)
>>> m.partner.tolist(), bool(m.recurs.all())
([5, 4, 3, 2, 1, 0], True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from kernelscope._display import Displayed, Picture, Summary, kernel_tiles
from kernelscope._io import finite_or_none as _f
from kernelscope.errors import KernelscopeError

__all__ = ["kernel_similarity", "activation_similarity", "match_pair", "PairMatch", "match_seeds", "SeedMatching"]


def _unit(rows: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(rows, axis=-1, keepdims=True)
    return np.divide(rows, norm, out=np.zeros_like(rows), where=norm > 0)


def kernel_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Signed cosine of every kernel of ``a`` ``(O_a, C, kh, kw)`` with every kernel of ``b``: ``(O_a, O_b)``.

    Examples
    --------
    >>> k = np.eye(3)[None, None]
    >>> kernel_similarity(k, -k).tolist()
    [[-1.0]]
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape[1:] != b.shape[1:]:
        raise KernelscopeError(f"kernels to match must share (C, kh, kw): got {a.shape} and {b.shape}")
    return _unit(a.reshape(len(a), -1)) @ _unit(b.reshape(len(b), -1)).T  # (O_a, O_b)


def activation_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of every channel of ``a`` ``(N, C_a, H, W)`` with every channel of ``b``: ``(C_a, C_b)``.

    Both over the same images; each channel's values over all images and positions form one
    vector. A constant channel correlates 0 with everything.

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal((4, 2, 3, 3))
    >>> np.round(activation_similarity(x, x[:, ::-1]), 6).tolist()[0][1]
    1.0
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape[0] != b.shape[0] or a.shape[2:] != b.shape[2:]:
        raise KernelscopeError(f"activations to match must come from the same images at the same size: got "
                               f"{a.shape} and {b.shape}")
    fa = a.transpose(1, 0, 2, 3).reshape(a.shape[1], -1)  # (C_a, N*H*W)
    fb = b.transpose(1, 0, 2, 3).reshape(b.shape[1], -1)  # (C_b, N*H*W)
    fa = _unit(fa - fa.mean(axis=1, keepdims=True))
    fb = _unit(fb - fb.mean(axis=1, keepdims=True))
    return fa @ fb.T  # (C_a, C_b)


@dataclass(repr=False)
class PairMatch(Displayed):
    """The one-to-one matching of the channels of network A to those of network B.

    Attributes
    ----------
    kind : str
        ``"kernels"`` (cosine) or ``"activations"`` (correlation).
    partner : ndarray of int, shape (C_a,)
        The channel of B matched to each channel of A (-1 when B has fewer channels).
    similarity : ndarray of shape (C_a,)
        The matched similarity (NaN when unmatched).
    null_matched : ndarray of shape (n_permutations, C_a)
        The matched similarities under the permutation null.
    null_p95 : float
        95th percentile of the null's matched similarities (pooled over channels).
    recurs : ndarray of bool, shape (C_a,)
        ``similarity > null_p95``.
    """

    kind: str
    partner: np.ndarray
    similarity: np.ndarray
    null_matched: np.ndarray = field(repr=False)
    null_p95: float = float("nan")
    recurs: np.ndarray = field(default=None, repr=False)

    def _display_summary(self) -> Summary:
        n = self.partner.size
        items = [("recur (above the null's p95)", f"{int(np.sum(self.recurs))} of {n}"),
                 ("null p95", self.null_p95), ("median matched similarity", float(np.nanmedian(self.similarity))
                                                if np.isfinite(self.similarity).any() else None)]
        table = [{"channel": i, "partner": int(self.partner[i]), "similarity": self.similarity[i],
                  "recurs": bool(self.recurs[i])} for i in range(n)]
        what = "kernel cosine" if self.kind == "kernels" else "activation correlation"
        return Summary(f"{n} channels matched one-to-one on {what}", items, table, brief=2)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "partner": [int(v) for v in self.partner],
                "similarity": [_f(v) for v in self.similarity], "null_p95": _f(self.null_p95),
                "null_median": _f(np.nanmedian(self.null_matched)) if self.null_matched.size else None,
                "recurs": [bool(v) for v in self.recurs], "n_recur": int(np.sum(self.recurs))}


def _hungarian(sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = linear_sum_assignment(sim, maximize=True)
    partner = np.full(sim.shape[0], -1)
    partner[rows] = cols
    value = np.full(sim.shape[0], np.nan)
    value[rows] = sim[rows, cols]
    return partner, value


def match_pair(a: np.ndarray, b: np.ndarray, *, kind: str = "kernels", n_permutations: int = 200,
               rng: np.random.Generator | int | None = 0) -> PairMatch:
    """Hungarian matching of ``a``'s channels to ``b``'s, against a permutation null.

    Parameters
    ----------
    a, b : ndarray
        ``kind="kernels"``: ``(O, C, kh, kw)`` kernels. ``kind="activations"``: ``(N, C, H, W)``
        activations of the same ``N`` images.
    kind : {"kernels", "activations"}
    n_permutations : int
        Redraws of the null (kernels: ``b``'s pixels shuffled; activations: ``b``'s images permuted).
    rng : Generator or int or None

    Returns
    -------
    PairMatch
    """
    if kind not in ("kernels", "activations"):
        raise KernelscopeError(f"kind must be 'kernels' or 'activations', got {kind!r}")
    if int(n_permutations) < 20:
        raise KernelscopeError(f"n_permutations must be at least 20 for a p95, got {n_permutations}")
    rng = np.random.default_rng(rng)
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    similarity = kernel_similarity if kind == "kernels" else activation_similarity
    partner, value = _hungarian(similarity(a, b))
    null = np.full((int(n_permutations), a.shape[1] if kind == "activations" else a.shape[0]), np.nan)
    for i in range(int(n_permutations)):
        if kind == "kernels":
            o, c, kh, kw = b.shape
            order = np.argsort(rng.random((o, 1, kh * kw)), axis=-1)  # one permutation per kernel
            flat = b.reshape(o, c, kh * kw)
            shuffled = np.take_along_axis(flat, np.broadcast_to(order, flat.shape), axis=-1).reshape(b.shape)
            _, null[i] = _hungarian(similarity(a, shuffled))
        else:
            perm = rng.permutation(b.shape[0])
            while b.shape[0] > 1 and np.all(perm == np.arange(b.shape[0])):
                perm = rng.permutation(b.shape[0])
            _, null[i] = _hungarian(similarity(a, b[perm]))
    p95 = float(np.nanquantile(null, 0.95))
    return PairMatch(kind=kind, partner=partner, similarity=value, null_matched=null, null_p95=p95,
                     recurs=np.nan_to_num(value, nan=-np.inf) > p95)


@dataclass(repr=False)
class SeedMatching(Displayed):
    """Every seed matched to a reference seed, at one layer.

    In a notebook: the counts, one row per reference channel and, for the first layer, the
    matched kernels across seeds (one row per seed, columns matched to the reference's channels).

    Attributes
    ----------
    layer : str
    kind : str
    sources : list of str
        The networks (reference first).
    pairs : list of PairMatch
        ``pairs[j]`` matches the reference to ``sources[j + 1]``.
    in_every_seed : ndarray of bool, shape (C,)
        Reference channels that recur in every other seed.
    kernels : list of ndarray, optional
        First layer: each network's kernels (for the figure).
    """

    layer: str
    kind: str
    sources: list[str]
    pairs: list[PairMatch]
    in_every_seed: np.ndarray = field(repr=False)
    kernels: list[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def fraction_in_every_seed(self) -> float:
        return float(np.mean(self.in_every_seed))

    @property
    def recurrence_counts(self) -> np.ndarray:
        """Per reference channel: in how many of the other seeds it recurs."""
        return np.sum([p.recurs for p in self.pairs], axis=0)

    def summary_line(self) -> str:
        n = len(self.sources)
        idio = int(np.sum(self.recurrence_counts == 0))
        return (f"{self.layer} ({self.kind}): {int(np.sum(self.in_every_seed))} of {self.in_every_seed.size} channels "
                f"of seed {self.sources[0]} recur in all {n - 1} other seeds, {idio} in none (matched "
                f"{'cosine' if self.kind == 'kernels' else 'correlation'} above the permutation null's p95; "
                f"median null p95 {np.median([p.null_p95 for p in self.pairs]):.2f})")

    def _display_summary(self) -> Summary:
        counts = self.recurrence_counts
        items = [(f"in all {len(self.pairs)} other seeds", f"{int(np.sum(self.in_every_seed))} of {counts.size}"),
                 ("in none (idiosyncratic)", int(np.sum(counts == 0))),
                 ("median null p95", float(np.median([p.null_p95 for p in self.pairs])))]
        table = [{"channel": c, "recurs in": int(counts[c]),
                  **{f"{src} (partner, similarity)": (int(p.partner[c]), p.similarity[c])
                     for src, p in zip(self.sources[1:], self.pairs, strict=True)}} for c in range(counts.size)]
        return Summary(f"channels of {self.layer} ({self.kind}) matched across {len(self.sources)} seeds, reference "
                       f"{self.sources[0]}", items, table, brief=2)

    def _display_picture(self) -> Picture | None:
        if not self.kernels:
            return None
        rows = [kernel_tiles(self.kernels[0])]
        for pair, kernels in zip(self.pairs, self.kernels[1:], strict=True):
            tiles = kernel_tiles(kernels)
            rows.append(np.where((pair.partner >= 0).reshape((-1,) + (1,) * (tiles.ndim - 1)),
                                 tiles[np.maximum(pair.partner, 0)], 0.0))
        return Picture(np.concatenate(rows), columns=len(rows[0]),
                       caption=f"one row per seed ({self.sources[0]} on top); each column: a reference channel and "
                       "its matched kernel in every other seed")

    def to_dict(self) -> dict:
        return {"layer": self.layer, "kind": self.kind, "sources": list(self.sources),
                "in_every_seed": [bool(v) for v in self.in_every_seed],
                "fraction_in_every_seed": self.fraction_in_every_seed,
                "recurrence_counts": [int(v) for v in self.recurrence_counts],
                "pairs": [p.to_dict() for p in self.pairs]}


def match_seeds(sources: list[Any], *, layer: str | None = None, images: str | np.ndarray = "test", limit: int = 500,
                n_permutations: int = 200, at: str = "activation", seed: int = 0) -> SeedMatching:
    """Match the channels of ``layer`` across networks trained from different seeds.

    Parameters
    ----------
    sources : list
        Run directories or anything :func:`kernelscope.sources.open_source` opens (at least
        two; the first is the reference).
    layer : str, optional
        A conv layer (default: the first). The first conv layer is matched on its kernels,
        any other on its activations.
    images : str or ndarray
        Deeper layers: a named image set of the first source (``"test"``, ``"probe"``, ``"faces"``, ...;
        at most ``limit`` images)
        or an array ``(N, C, H, W)`` already normalised; the same images go through every network.
    n_permutations : int
    at : {"activation", "conv"}
        Deeper layers: where the conv layer is read.
    seed : int
        Seeds the nulls.

    Returns
    -------
    SeedMatching
    """
    from kernelscope.analysis.atlas.source import layer_kernels
    from kernelscope.analysis.hooks import layer_outputs, read_point
    from kernelscope.sources import open_source

    if len(sources) < 2:
        raise KernelscopeError(f"need at least two networks to match, got {len(sources)}")
    opened = [open_source(s) for s in sources]
    labels = [str(s) if isinstance(s, (str, os.PathLike)) else type(s).__name__ for s in sources]
    first = opened[0].conv_layers[0]
    layer = first if layer is None else layer
    if layer == first:
        kernels = [layer_kernels(src.model, layer)[1] for src in opened]
        pairs = [match_pair(kernels[0], k, kind="kernels", n_permutations=n_permutations, rng=[seed, j])
                 for j, k in enumerate(kernels[1:])]
        kind = "kernels"
    else:
        kernels = []
        x = opened[0].images(images, limit=limit)[0] if isinstance(images, str) else np.asarray(images, dtype=np.float32)
        acts = []
        for src in opened:
            name, _ = read_point(src.model, layer, at)
            acts.append(layer_outputs(src.model, x, name)[name])
        pairs = [match_pair(acts[0], a, kind="activations", n_permutations=n_permutations, rng=[seed, j])
                 for j, a in enumerate(acts[1:])]
        kind = "activations"
    every = np.all([p.recurs for p in pairs], axis=0)
    return SeedMatching(layer=layer, kind=kind, sources=labels, pairs=pairs, in_every_seed=every, kernels=kernels)
