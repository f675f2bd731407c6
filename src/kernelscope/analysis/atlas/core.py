"""The atlas of one layer: measure, compare with the nulls, classify, report.

:func:`atlas` takes kernels as an array; :func:`~kernelscope.analysis.atlas.atlas_of`
finds them in a run directory or a model first.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

import numpy as np

from kernelscope._display import Displayed, Picture, Summary, kernel_tiles
from kernelscope._io import dumps_json, json_safe
from kernelscope._io import finite_or_none as _f
from kernelscope.analysis.atlas.classify import CLASSES, classify, thresholds_from_nulls
from kernelscope.analysis.atlas.colour import ColourCensus, colour_census
from kernelscope.analysis.atlas.controls import NULL_KINDS, null_kernels
from kernelscope.analysis.atlas.evolution import Evolution
from kernelscope.analysis.atlas.gabor import MIN_GABOR_SIZE
from kernelscope.analysis.atlas.matching import as_kernel_stack
from kernelscope.analysis.atlas.measure import SCORES, Measures, measure, nanmedian
from kernelscope.analysis.atlas.surrogates import SURROGATE_KINDS, SurrogateTest, surrogate_test
from kernelscope.analysis.atlas.templates import TemplateBank, template_bank
from kernelscope.errors import KernelscopeError, suggest

__all__ = ["AtlasResult", "atlas", "MIN_THRESHOLD_NULL"]

# A null must hold at least this many kernels to set a p99 threshold (fewer: it is
# still reported as a control, but its 99th percentile would be its maximum).
MIN_THRESHOLD_NULL = 100

_NULL_CACHE: dict[tuple, Measures] = {}


@dataclass(repr=False)
class AtlasResult(Displayed):
    """The atlas of one layer: per-kernel records, class fractions beside the controls.

    In a notebook it shows its headline numbers, the class table beside every control and
    the kernels themselves; ``repr`` says the layer, sizes and key fractions.

    Attributes
    ----------
    records : list of dict
        One per kernel: class, margin, best classical match (family, name, sign,
        transform, shift, score), the family scores, the Gabor fit, spectral shape,
        colour, quality, and the distance from init when known.
    counts, fractions : dict of str to int / float
        Per class (see :data:`~kernelscope.analysis.atlas.classify.CLASSES`).
    control_fractions : dict of str to dict of str to float
        Null name -> class -> fraction of that null's kernels given the class. For a null
        that sets thresholds these kernels are a second, independent draw (their own seed;
        for ``init``, further fresh initialisations), so the fraction is a measured
        false-positive rate, not ``1 - percentile`` by construction.
    control_sizes : dict of str to int
    calibration_fractions : dict of str to dict of str to float
        The same fractions on the draws that set the thresholds (by construction at
        most about ``1 - percentile`` for each score): for comparison only.
    calibration_sizes : dict of str to int
    surrogate : dict of str to SurrogateTest
        ``"phase"`` (structured beyond its amplitude spectrum) and ``"shuffle"`` (beyond
        its pixel values): per-kernel p and BH q over the layer, the fraction with
        ``q < 0.05``, beside the same test of smoothed random kernels (see
        :mod:`~kernelscope.analysis.atlas.surrogates`). Empty with ``surrogates=0``.
    thresholds : dict of str to float
        Score thresholds actually used.
    null_percentiles : dict of str to dict of str to float
        The ``percentile`` of every score in every null.
    threshold_nulls : list of str
        Nulls that set the thresholds.
    percentile : float
    notes : list of str
        Plain-language caveats (Gabor not identifiable at 3x3, small controls, ...).
    shape : tuple of int
        ``(O, C, kh, kw)``.
    layer, source : str or None
    epoch : int or None
    evolution : Evolution or None
    kernels : ndarray of shape (O, C, kh, kw)
    scores : dict of str to ndarray of shape (O,)
    null_scores : dict of str to dict of str to ndarray
        The raw null distributions (for figures; not written to JSON).
    best_templates : ndarray of shape (O, kh, kw)
        Each kernel's best classical match, signed, unit norm.
    profiles : ndarray of shape (O, kh, kw)
        Spatial profiles that were matched.
    colour : ColourCensus or None
        RGB layers (C == 3): each kernel's colour class (luminance, colour-opponent,
        colour-blob, mixed/unexplained) beside the colour controls (see
        :mod:`~kernelscope.analysis.atlas.colour`); also in each record as ``colour_class``.
        None for other layers, whose results carry no colour census.
    """

    records: list[dict]
    counts: dict[str, int]
    fractions: dict[str, float]
    control_fractions: dict[str, dict[str, float]]
    control_sizes: dict[str, int]
    thresholds: dict[str, float]
    null_percentiles: dict[str, dict[str, float]]
    threshold_nulls: list[str]
    percentile: float
    notes: list[str]
    shape: tuple[int, int, int, int]
    layer: str | None = None
    source: str | None = None
    epoch: int | None = None
    evolution: Evolution | None = None
    kernels: np.ndarray = field(default=None, repr=False)
    scores: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    null_scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    null_best: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    best_templates: np.ndarray = field(default=None, repr=False)
    profiles: np.ndarray = field(default=None, repr=False)
    colour: ColourCensus | None = field(default=None, repr=False)
    calibration_fractions: dict[str, dict[str, float]] = field(default_factory=dict)
    calibration_sizes: dict[str, int] = field(default_factory=dict)
    surrogate: dict[str, SurrogateTest] = field(default_factory=dict)

    @property
    def structured_fraction(self) -> float | None:
        """Share of kernels structured beyond their spectrum (phase surrogates, BH q < 0.05); None if not run."""
        test = self.surrogate.get("phase")
        return None if test is None else test.fraction

    def headline(self) -> dict:
        """The atlas's stricter headline numbers, each beside its control (for the demo, report, replication).

        ``structured_beyond_spectrum`` (and its ``_control_smooth``), ``structured_beyond_pixels``
        (and control), ``classical`` (the share of kernels given any classical class) beside
        ``classical_control_<null>`` measured on each control draw, and ``median_best_match``.
        """
        classical = [c for c in CLASSES if c not in ("unexplained", "degenerate")]
        out = {"classical": float(sum(self.fractions[c] for c in classical)),
               "median_best_match": _f(nanmedian([r["best_match"]["score"] for r in self.records]))}
        for name, fr in self.control_fractions.items():
            out[f"classical_control_{name}"] = float(sum(fr[c] for c in classical))
        for cls in classical:
            out[cls] = float(self.fractions[cls])
        for kind, key in (("phase", "structured_beyond_spectrum"), ("shuffle", "structured_beyond_pixels")):
            test = self.surrogate.get(kind)
            if test is not None:
                out[key] = test.fraction
                for name, v in test.control_fractions.items():
                    out[f"{key}_control_{name}"] = v
        return out

    @property
    def classes(self) -> list[str]:
        """The class of every kernel, in order."""
        return [r["class"] for r in self.records]

    @property
    def colour_classes(self) -> list[str] | None:
        """The colour class of every kernel, in order (None unless the layer is RGB)."""
        return None if self.colour is None else [str(c) for c in self.colour.classes]

    def to_dict(self) -> dict:
        """Everything but the raw arrays, JSON-ready (NaN and infinities as None)."""
        data = {
            "format": "kernelscope-atlas",
            "format_version": 1,
            "source": self.source,
            "layer": self.layer,
            "epoch": self.epoch,
            "shape": list(self.shape),
            "percentile": self.percentile,
            "threshold_nulls": list(self.threshold_nulls),
            "thresholds": {k: _f(v) for k, v in self.thresholds.items()},
            "score_definitions": {k: SCORES[k] for k in self.thresholds if k in SCORES},
            "null_percentiles": {n: {k: _f(v) for k, v in d.items()} for n, d in self.null_percentiles.items()},
            "control_sizes": dict(self.control_sizes),
            "counts": dict(self.counts),
            "fractions": dict(self.fractions),
            "control_fractions": {n: dict(d) for n, d in self.control_fractions.items()},
            "calibration_sizes": dict(self.calibration_sizes),
            "calibration_fractions": {n: dict(d) for n, d in self.calibration_fractions.items()},
            "surrogate_test": {k: t.to_dict() for k, t in self.surrogate.items()},
            "median_best_match": _f(nanmedian([r["best_match"]["score"] for r in self.records])),
            "control_median_best_match": {n: _f(nanmedian(v)) for n, v in self.null_best.items()},
            "notes": list(self.notes),
            "kernels": self.records,
            "evolution": self.evolution.to_dict() if self.evolution is not None else None,
        }
        if self.colour is not None:  # RGB layers only: other layers' JSON is unchanged
            data["colour"] = self.colour.to_dict()
        return json_safe(data)

    def to_json(self) -> str:
        """The atlas as strict JSON text (see :meth:`to_dict`; NaN and infinities become null)."""
        return dumps_json(self.to_dict()) + "\n"

    def to_csv(self) -> str:
        """One row per kernel: class, best match and every score, as CSV text."""
        columns = ["index", "class", "margin", "best_family", "best_name", "best_params", "best_sign",
                   "best_transform", "best_shift_y", "best_shift_x", "best_score", "edge", "gabor_bank",
                   "centre_surround", "blob", "gabor_r2", "gabor_theta_deg", "gabor_wavelength",
                   "gabor_x0", "gabor_y0", "gabor_cycles", "osi", "orientation_deg", "peak_frequency",
                   "bandpass", "off_luminance", "rank1_fraction", "norm", "sparsity", "entropy", "dead",
                   "flat", "distance_from_init"]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        if self.colour is not None:  # RGB layers only: other layers' CSV is unchanged
            columns += _COLOUR_CSV_COLUMNS
        writer.writerow(columns)
        for r in self.records:
            b, s, g, sp, q = r["best_match"], r["scores"], r["gabor_fit"] or {}, r["spectral"], r["quality"]
            row = [r["index"], r["class"], r["margin"], b["family"], b["name"], b["params"], b["sign"],
                   b["transform"], b["shift"][0], b["shift"][1], b["score"], s.get("edge"),
                   r["bank"].get("gabor", {}).get("score"), s.get("centre-surround"), s.get("blob"), s.get("gabor"),
                   g.get("theta_deg"), g.get("wavelength"), g.get("x0"), g.get("y0"), g.get("cycles"),
                   sp["osi"], sp["orientation_deg"], sp["peak_frequency"], sp["bandpass"],
                   r["colour"]["off_luminance"], r["colour"]["rank1_fraction"], q["norm"], q["sparsity"],
                   q["entropy"], q["dead"], q["flat"], (r["init"] or {}).get("distance")]
            if self.colour is not None:
                row += _colour_csv_row(r)
            writer.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in row])
        return buffer.getvalue()

    def _display_summary(self) -> Summary:
        o, c, kh, kw = self.shape
        where = "".join(x for x in (f" of {self.layer}" if self.layer else "",
                                    f" at epoch {self.epoch}" if self.epoch is not None else ""))
        head = self.headline()

        def test(key: str, label: str) -> list[tuple[str, object]]:  # a surrogate test, then its controls
            return ([(f"{label} (q < 0.05)", head[key])] if key in head else []) + [
                (f"{label}, {k.removeprefix(key + '_control_')} random kernels", v)
                for k, v in head.items() if k.startswith(key + "_control_")]

        items = test("structured_beyond_spectrum", "structured beyond spectrum")  # the headline first
        items += [("classical (any class)", head["classical"]), ("median best match", head["median_best_match"])]
        items += [(f"classical, control {n}", head[f"classical_control_{n}"]) for n in self.control_fractions]
        items += test("structured_beyond_pixels", "structured beyond pixel values")
        items += [(f"threshold {k}", v) for k, v in self.thresholds.items()]
        table = [{"class": cls, "count": self.counts[cls], "fraction": self.fractions[cls],
                  **{f"{n} ({self.control_sizes[n]})": self.control_fractions[n][cls] for n in self.control_fractions}}
                 for cls in CLASSES if not (cls == "gabor-like" and "gabor" not in self.thresholds)]
        if self.colour is not None:
            table += [{"class": f"colour: {cls}", "count": self.colour.counts[cls],
                       "fraction": self.colour.fractions[cls]} for cls in self.colour.counts]
        return Summary(f"kernel atlas{where}: {o} kernels of {c}x{kh}x{kw}", items, table, list(self.notes))

    def _display_picture(self) -> Picture | None:
        if self.kernels is None:
            return None
        return Picture(kernel_tiles(self.kernels), caption=f"the {self.shape[0]} kernels, in order (each scaled "
                       "to its largest weight; mid-grey is zero)", columns=min(16, self.shape[0]))

    def summary_table(self) -> str:
        """A plain-text table: per class count, fraction and every control's fraction, with thresholds."""
        o, c, kh, kw = self.shape
        where = ", ".join(x for x in (f"layer {self.layer}" if self.layer else "",
                                      f"epoch {self.epoch}" if self.epoch is not None else "") if x)
        lines = [f"kernel atlas: {o} kernels of {c}x{kh}x{kw}" + (f" ({where})" if where else "")]
        lines.extend(t.describe() for t in self.surrogate.values())
        thr = ", ".join(f"{k} {v:.3f}" for k, v in self.thresholds.items() if np.isfinite(v))
        lines.append(f"thresholds (p{self.percentile:g} of the {', '.join(self.threshold_nulls)} nulls; "
                     f"cosines, Gabor R^2): {thr}")
        if self.calibration_sizes:
            lines.append("controls below are independent draws from those that set the thresholds "
                         f"({', '.join(self.calibration_sizes)} redrawn): their fractions are measured")
        nulls = list(self.control_fractions)
        header = f"{'class':<16}{'count':>6}{'fraction':>10}" + "".join(
            f"{n + ' (' + str(self.control_sizes[n]) + ')':>16}" for n in nulls)
        lines.append(header)
        for cls in CLASSES:
            if cls == "gabor-like" and "gabor" not in self.thresholds:
                continue
            row = f"{cls:<16}{self.counts[cls]:>6}{self.fractions[cls]:>10.2f}" + "".join(
                f"{self.control_fractions[n][cls]:>16.2f}" for n in nulls)
            lines.append(row)
        median = nanmedian([r["best_match"]["score"] for r in self.records])
        ctrl = ", ".join(f"{n} {nanmedian(v):.2f}" for n, v in self.null_best.items())
        lines.append(f"median best match {median:.2f} (controls: {ctrl})")
        if self.colour is not None:
            lines.extend(self.colour.summary_lines())
        if self.evolution is not None and len(self.evolution.epochs) > 1:
            ev = self.evolution
            lines.append(f"over training ({ev.unit}s {ev.epochs[0]}..{ev.epochs[-1]}): median best match "
                         f"{ev.median_match[0]:.2f} -> {ev.median_match[-1]:.2f}; median distance from init "
                         f"{nanmedian(ev.distance[-1]):.2f} x the initial norm; median settle {ev.unit} "
                         f"{int(np.median(ev.settle_epoch))}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


_COLOUR_CSV_COLUMNS = ["colour_class", "colour_margin", "grey_angle_deg", "colour_balance", "colour_r", "colour_g",
                       "colour_b", "luminance_score", "opponent_score", "colour_blob_score", "colour_lowpass"]


def _colour_csv_row(record: dict) -> list:
    c = record["colour"]
    return [record["colour_class"], c["margin"], c["grey_angle_deg"], c["balance"], *c["colour_vector"],
            c["scores"]["luminance"], c["scores"]["colour-opponent"], c["scores"]["colour-blob"], c["lowpass"]]


def _add_colour(records: list[dict], census: ColourCensus) -> list[dict]:
    """Each record with ``colour_class`` beside ``class`` and the colour statistics under ``colour``."""
    out = []
    for i, record in enumerate(records):
        colour = census.record(i)
        new = {}
        for key, value in record.items():
            new[key] = value
            if key == "class":
                new["colour_class"] = colour["class"]
        new["colour"] = {**record["colour"], **json_safe({k: v for k, v in colour.items() if k != "class"})}
        out.append(new)
    return out


def _null_measures(kind, shape, n, seed, smooth_sigma, bank, kernels, cacheable, draw=0):
    """Measures of ``n`` null kernels; ``draw`` 0 calibrates (thresholds), 1 is the reported control."""
    key = (kind, shape[1:], n, seed, smooth_sigma, draw)
    if cacheable and key in _NULL_CACHE:
        return _NULL_CACHE[key]
    rng = np.random.default_rng([seed, NULL_KINDS.index(kind)] + ([draw] if draw else []))
    m = measure(null_kernels(kind, shape, n=n, rng=rng, kernels=kernels, smooth_sigma=smooth_sigma), bank=bank)
    if cacheable:
        if len(_NULL_CACHE) > 16:
            _NULL_CACHE.clear()
        _NULL_CACHE[key] = m
    return m


def _records(m: Measures, labels, margins, init: np.ndarray | None) -> list[dict]:
    records = []
    scores = m.scores()
    bank = m.match.bank
    for i in range(len(m)):
        per_family = {}
        for family, values in m.match.score.items():
            j = int(m.match.index[family][i])
            per_family[family] = {"score": _f(values[i]), "sign": int(m.match.sign[family][i]),
                                  "name": str(bank.name[j]), "params": bank.params[j],
                                  "transform": str(bank.transform[j]), "shift": [int(v) for v in bank.shift[j]]}
        fit = None
        if m.gabor is not None:
            g = m.gabor
            fit = {"r2": _f(g.r2[i]), "x0": _f(g.x0[i]), "y0": _f(g.y0[i]), "theta_deg": _f(np.degrees(g.theta[i])),
                   "frequency": _f(g.frequency[i]), "wavelength": _f(1 / g.frequency[i]),
                   "phase_deg": _f(np.degrees(g.phase[i])), "sigma_u": _f(g.sigma_u[i]),
                   "sigma_v": _f(g.sigma_v[i]), "cycles": _f(g.sigma_u[i] * g.frequency[i])}
        sp, q = m.spectrum, m.quality
        record = {
            "index": i,
            "class": str(labels[i]),
            "margin": _f(margins[i]),
            "best_match": m.match.describe(i),
            "scores": {k: _f(v[i]) for k, v in scores.items()},
            "bank": per_family,
            "gabor_fit": fit,
            "spectral": {"osi": _f(sp.osi[i]), "orientation_deg": _f(np.degrees(sp.orientation[i])),
                         "peak_frequency": _f(sp.peak_frequency[i]), "bandpass": bool(sp.bandpass[i]),
                         "dc_fraction": _f(sp.dc_fraction[i])},
            "colour": {"off_luminance": _f(m.off_luminance[i]), "rank1_fraction": _f(m.rank1_fraction[i])},
            "quality": {"norm": _f(q.norm[i]), "sparsity": _f(q.sparsity[i]), "entropy": _f(q.entropy[i]),
                        "dead": bool(q.dead[i]), "flat": bool(q.flat[i])},
            "init": None,
        }
        if init is not None:
            k0 = init[i].ravel()
            k = m.kernels[i].ravel()
            n0 = np.linalg.norm(k0)
            record["init"] = {
                "distance": _f(np.linalg.norm(k - k0) / n0) if n0 > 0 else None,
                "cosine": _f(k @ k0 / (np.linalg.norm(k) * n0)) if n0 > 0 and np.linalg.norm(k) > 0 else None,
            }
        records.append(record)
    return records


def atlas(kernels: np.ndarray, *, init_kernels: np.ndarray | None = None, init_null: np.ndarray | None = None,
          percentile: float = 99.0, n_null: int = 1000,
          nulls: tuple[str, ...] = ("random", "smooth", "shuffled", "spectral"),
          threshold_nulls: tuple[str, ...] = ("random", "shuffled", "init"), seed: int = 0,
          smooth_sigma: float = 1.0, min_cycles: float = 0.25, bank: TemplateBank | None = None,
          layer: str | None = None, source: str | None = None, epoch: int | None = None, colour: bool = True,
          colour_threshold_nulls: dict[str, tuple[str, ...]] | None = None, init_control: np.ndarray | None = None,
          surrogates: int = 999, surrogate_alpha: float = 0.05, surrogate_controls: tuple[str, ...] = ("smooth",),
          surrogate_control_layers: int | None = None) -> AtlasResult:
    """How close each kernel is to a classical filter, judged against null kernels of the same shape.

    Parameters
    ----------
    kernels : ndarray of shape (O, C, kh, kw), (O, kh, kw) or (kh, kw)
        The layer's kernels (at least 2x2; Gabor fits from 5x5).
    init_kernels : ndarray of shape (O, C, kh, kw), optional
        The same kernels at initialisation: reported as the ``init`` control, and used
        for each kernel's distance from its initial value.
    init_null : ndarray of shape (n, C, kh, kw), optional
        Many fresh initialisations of the layer (a larger ``init`` null, preferred over
        ``init_kernels`` for the control when given).
    percentile : float
        Null percentile a score must exceed for its class, in (50, 100).
    n_null : int
        Kernels drawn per null.
    nulls : tuple of str
        Drawn nulls among ``"random"``, ``"smooth"``, ``"shuffled"``, ``"spectral"`` (see
        :mod:`~kernelscope.analysis.atlas.controls`); all are classified and reported.
    threshold_nulls : tuple of str
        Nulls that set the thresholds (the strictest percentile wins; drawn even when
        not in ``nulls``); ``"init"`` counts when given, with at least
        ``MIN_THRESHOLD_NULL`` kernels.
    seed : int
        Seed of the null draws (results are deterministic given it).
    smooth_sigma : float
        Smoothing width of the ``smooth`` null, pixels.
    min_cycles : float
        Least envelope width, in cycles, for ``gabor-like``.
    bank : TemplateBank, optional
        Default: :func:`~kernelscope.analysis.atlas.templates.template_bank` at the kernel size.
    layer, source : str, optional
        Where the kernels came from (reported).
    epoch : int, optional
        Which snapshot (reported).
    colour : bool
        RGB layers (C == 3): also take the colour census (see
        :func:`~kernelscope.analysis.atlas.colour.colour_census`; its nulls are drawn from
        their own seeds, so the spatial results are the same with or without it).
    colour_threshold_nulls : dict of str to tuple of str, optional
        Colour class -> nulls that set its threshold (default
        :data:`~kernelscope.analysis.atlas.colour.COLOUR_THRESHOLD_NULLS`).
    init_control : ndarray of shape (n, C, kh, kw), optional
        Further fresh initialisations, independent of ``init_null``: the reported ``init``
        control when ``init_null`` sets thresholds. Without it a large ``init_null``
        (>= 2 x ``MIN_THRESHOLD_NULL``) is split, even kernels calibrate and odd kernels
        are reported; a smaller one is reported from the calibration draw, with a note.
    surrogates : int
        Surrogates per kernel for the surrogate test (phase-randomised and pixel-shuffled;
        see :mod:`~kernelscope.analysis.atlas.surrogates`); 0 skips the test.
    surrogate_alpha : float
        Its Benjamini-Hochberg FDR level over the layer.
    surrogate_controls : tuple of str
        Control kernels put through the same test (``"smooth"``, ``"random"``).
    surrogate_control_layers : int, optional
        Pseudo-layers of ``O`` control kernels (default: enough for 64 kernels, at least 1).

    Returns
    -------
    AtlasResult

    Examples
    --------
    >>> from kernelscope.analysis.atlas.templates import gabor_template
    >>> gabors = np.stack([gabor_template((7, 7), frequency=0.22, theta=t, phase=p, sigma_u=1.6, sigma_v=1.6)
    ...                    for t in (0.0, 0.8, 1.6, 2.4) for p in (0.0, 1.5)])
    >>> result = atlas(gabors, n_null=300)
    >>> result.counts["gabor-like"], result.control_fractions["random"]["gabor-like"] <= 0.02
    (8, True)
    """
    stack = as_kernel_stack(kernels)
    shape = tuple(int(v) for v in stack.shape)
    if not 50 < float(percentile) < 100:
        raise KernelscopeError(f"percentile must be between 50 and 100 (exclusive), got {percentile}")
    if int(n_null) < 10:
        raise KernelscopeError(f"n_null must be at least 10 kernels per null, got {n_null}")
    for name in (*nulls, *threshold_nulls):
        if name not in NULL_KINDS:
            raise KernelscopeError(suggest(name, NULL_KINDS, what="null"))
    init_stack = None
    if init_kernels is not None:
        init_stack = as_kernel_stack(init_kernels, name="init_kernels")
        if init_stack.shape != stack.shape:
            raise KernelscopeError(f"init_kernels must have the kernels' shape {shape}, got {init_stack.shape}")
    init_null_stack = None
    if init_null is not None:
        init_null_stack = as_kernel_stack(init_null, name="init_null")
        if init_null_stack.shape[1:] != stack.shape[1:]:
            raise KernelscopeError(
                f"init_null kernels must have shape (n, {', '.join(map(str, shape[1:]))}), got {init_null_stack.shape}")
    cacheable = bank is None
    bank = template_bank(shape[2:]) if bank is None else bank
    notes = []

    learned = measure(stack, bank=bank)
    null_measures: dict[str, Measures] = {}
    for kind in dict.fromkeys((*nulls, *threshold_nulls)):  # a threshold null is drawn even if not listed
        if kind == "init":
            continue
        null_measures[kind] = _null_measures(kind, shape, int(n_null), seed, smooth_sigma, bank,
                                             stack if kind in ("shuffled", "spectral") else None,
                                             cacheable and kind not in ("shuffled", "spectral"))
    init_source = init_null_stack if init_null_stack is not None else init_stack
    init_report = None
    if init_control is not None:
        init_report = as_kernel_stack(init_control, name="init_control")
        if init_report.shape[1:] != stack.shape[1:]:
            raise KernelscopeError(f"init_control kernels must have shape (n, {', '.join(map(str, shape[1:]))}), "
                                   f"got {init_report.shape}")
    elif (init_null_stack is not None and "init" in threshold_nulls
          and len(init_null_stack) >= 2 * MIN_THRESHOLD_NULL):
        init_source, init_report = init_null_stack[0::2], init_null_stack[1::2]
    if init_source is not None:
        null_measures["init"] = measure(init_source, bank=bank)
    used = [n for n in threshold_nulls if n in null_measures]
    if "init" in used and len(null_measures["init"]) < MIN_THRESHOLD_NULL:
        used.remove("init")
        notes.append(f"the init control has only {len(null_measures['init'])} kernels: it is reported, but "
                     f"thresholds come from the larger nulls (a p{percentile:g} needs >= {MIN_THRESHOLD_NULL})")
    if not used:
        raise KernelscopeError(
            f"threshold_nulls {threshold_nulls} selects no computed null (computed: {', '.join(null_measures)})")
    null_scores = {name: m.scores() for name, m in null_measures.items()}
    thresholds, per_null = thresholds_from_nulls(null_scores, percentile=percentile, use=tuple(used))

    labels, margins = classify(learned, thresholds, min_cycles=min_cycles)
    counts = {c: int(np.sum(labels == c)) for c in CLASSES}
    fractions = {c: counts[c] / shape[0] for c in CLASSES}
    # Calibration and control are different draws: every null that set a threshold is drawn
    # again from its own seed (init: further initialisations) and that draw is reported.
    control_measures = dict(null_measures)
    calibration_fractions, calibration_sizes = {}, {}
    for name in used:
        if name == "init":
            if init_report is None:
                notes.append("the init control is the draw that set the thresholds (too few initial kernels to "
                             "redraw): its fraction is at most about 1 - percentile by construction")
                continue
            control_measures["init"] = measure(init_report, bank=bank)
        else:
            control_measures[name] = _null_measures(name, shape, int(n_null), seed, smooth_sigma, bank,
                                                    stack if name in ("shuffled", "spectral") else None,
                                                    cacheable and name not in ("shuffled", "spectral"), draw=1)
        calibration_labels, _ = classify(null_measures[name], thresholds, min_cycles=min_cycles)
        calibration_fractions[name] = {c: float(np.mean(calibration_labels == c)) for c in CLASSES}
        calibration_sizes[name] = len(null_measures[name])
    control_fractions = {}
    for name, m in control_measures.items():
        null_labels, _ = classify(m, thresholds, min_cycles=min_cycles)
        control_fractions[name] = {c: float(np.mean(null_labels == c)) for c in CLASSES}

    tests: dict[str, SurrogateTest] = {}
    if int(surrogates) > 0:
        layers = surrogate_control_layers
        if layers is None:
            layers = max(1, int(np.ceil(64 / shape[0])))
        for kind in SURROGATE_KINDS:
            tests[kind] = surrogate_test(stack, kind=kind, n_surrogates=int(surrogates), alpha=surrogate_alpha,
                                         controls=surrogate_controls, control_layers=int(layers), seed=seed,
                                         smooth_sigma=smooth_sigma, bank=None if cacheable else bank)

    if min(shape[2:]) < MIN_GABOR_SIZE:
        notes.append(f"Gabor-likeness is not identifiable for {shape[2]}x{shape[3]} kernels (a 9-parameter "
                     f"Gabor fits almost any of them): only the bank match is reported, no 'gabor-like' class")
    if shape[0] < 10:
        notes.append(f"only {shape[0]} kernels: fractions move in steps of {1 / shape[0]:.2f}")
    if not np.any(bank.transform != "identity"):
        notes.append("the named kernels of kernelscope.kernels were not in the bank; parametric families only")
    if shape[1] > 1:
        notes.append(f"{shape[1]}-channel kernels are matched by their leading spatial profile (SVD); see "
                     f"rank1_fraction for how much of each kernel that profile carries")

    census = None
    records = _records(learned, labels, margins, init_stack)
    for kind, test in tests.items():
        for i, record in enumerate(records):
            record.setdefault("surrogate", {})[kind] = {"p": _f(test.p[i]), "q": _f(test.q[i]),
                                                        "structured": bool(test.structured[i]),
                                                        "surrogate_median": _f(test.surrogate_median[i])}
    if colour and shape[1] == 3:
        colour_init = init_null_stack if init_null_stack is not None else init_stack  # as before: unchanged
        census = colour_census(stack, init_null=colour_init, percentile=percentile, n_null=int(n_null), seed=seed,
                               threshold_nulls=colour_threshold_nulls, min_calibration=MIN_THRESHOLD_NULL)
        records = _add_colour(records, census)

    best = np.stack([(bank.raw[int(j)].reshape(bank.shape) if bank.family[int(j)] == "blob"
                      else bank.template(int(j))) * s
                     for j, s in zip(learned.match.best_index, learned.match.best_sign, strict=True)])
    return AtlasResult(
        records=records, counts=counts, fractions=fractions,
        control_fractions=control_fractions, control_sizes={n: len(m) for n, m in control_measures.items()},
        thresholds=thresholds, null_percentiles=per_null, threshold_nulls=used, percentile=float(percentile),
        notes=notes, shape=shape, layer=layer, source=source, epoch=epoch, kernels=stack,
        scores=learned.scores(), null_scores=null_scores,
        null_best={n: m.match.best_score for n, m in control_measures.items()}, best_templates=best,
        profiles=learned.profiles, colour=census, calibration_fractions=calibration_fractions,
        calibration_sizes=calibration_sizes, surrogate=tests,
    )
