"""Replication over seeds: every headline number of a recipe with its mean and a 95% interval over seeds.

One trained network is one draw. :func:`replicate` trains a preset once per seed
(reusing :func:`kernelscope.train.train`; a finished run directory is reused, not
retrained), measures the headline numbers of each run (:func:`headline_of_run`) and
summarises each number over the seeds: mean, standard deviation, min, max and a
percentile-bootstrap 95% interval of the mean (resampling seeds).

Headline numbers per run:

* ``accuracy``: final test accuracy (the manifest's last epoch);
* the atlas of the first conv layer (:meth:`~kernelscope.analysis.atlas.AtlasResult.headline`):
  ``classical`` (share given any classical class) and each class, each control's
  classical share (measured on independent draws), ``median_best_match``,
  ``structured_beyond_spectrum`` / ``structured_beyond_pixels`` (the surrogate tests)
  beside smoothed random kernels put through the same tests;
* for the ``faces`` preset: Network Dissection detector counts over every conv layer
  per concept (``detectors_<concept>`` with IoU > 0.04 alone, ``detectors_<concept>_gated``
  also above the permutation null's p95), the distribution shift at the deepest layer
  (channels quiet and louder on the held-out objects, the network's AUROC, and the same
  at initialisation), and part detectors by occlusion (:func:`occlusion_numbers`: the demo's
  parts protocol on the run's 100 faces, eyes and mouth at ONet's landmarks): per part the
  detector count over every conv layer (``occlusion_<part>_detectors``; ``..._gated`` when the
  part's drop also lies beyond the equal-area controls' bootstrap interval), the most selective
  channel's drop beside its controls' drop (``occlusion_<part>_drop``, ``..._control_drop``,
  ``..._selectivity``), and the same for the network at initialisation (``..._init``).

>>> summarise([{"a": 1.0}, {"a": 2.0}, {"a": 3.0}])["a"]["mean"]
2.0
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from kernelscope._display import Displayed, Summary, format_value
from kernelscope._io import finite_or_none as _f
from kernelscope.errors import KernelscopeError

__all__ = ["replicate", "headline_of_run", "occlusion_numbers", "summarise", "bootstrap_interval", "Replication"]


def bootstrap_interval(values: np.ndarray, *, n_boot: int = 10_000, ci: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values`` (resampled with replacement).

    Examples
    --------
    >>> low, high = bootstrap_interval(np.array([1.0, 2.0, 3.0, 4.0]))
    >>> 1.0 <= low < 2.5 < high <= 4.0
    True
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)  # (B,)
    alpha = (1 - ci) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def summarise(per_seed: list[dict[str, Any]], *, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per number: ``mean``, ``std``, ``min``, ``max``, ``ci95`` (bootstrap of the mean), ``n`` and ``values``."""
    keys = list(dict.fromkeys(k for row in per_seed for k, v in row.items() if isinstance(v, (int, float))
                              and not isinstance(v, bool)))
    out = {}
    for key in keys:
        values = np.array([row.get(key, np.nan) if row.get(key) is not None else np.nan for row in per_seed],
                          dtype=float)
        finite = values[np.isfinite(values)]
        low, high = bootstrap_interval(finite, seed=seed)
        out[key] = {"mean": _f(finite.mean()) if finite.size else None,
                    "std": _f(finite.std(ddof=1)) if finite.size > 1 else None,
                    "min": _f(finite.min()) if finite.size else None, "max": _f(finite.max()) if finite.size else None,
                    "ci95": [_f(low), _f(high)], "n": int(finite.size), "values": [_f(v) for v in values]}
    return out


def headline_of_run(run_dir: str | os.PathLike, *, n_null: int = 1000, surrogates: int = 999, seed: int = 0,
                    quick: bool = False) -> dict[str, Any]:
    """The headline numbers of one run directory (see the module docstring), flat ``name -> number``."""
    from kernelscope.analysis.atlas import atlas_of
    from kernelscope.train.rundir import Run

    run = Run(run_dir)
    numbers: dict[str, Any] = {}
    metrics = run.metrics
    if metrics:
        last = metrics[-1]
        for key in ("test_acc", "test_accuracy", "accuracy"):
            if key in last:
                numbers["accuracy"] = float(last[key])
                break
    result = atlas_of(run_dir, with_evolution=False, n_null=n_null, surrogates=surrogates, seed=seed)
    numbers.update(result.headline())
    if run.config.get("data") == "faces":
        numbers.update(_faces_numbers(run_dir, quick=quick, seed=seed))
    return numbers


def _faces_numbers(run_dir, *, quick: bool, seed: int) -> dict[str, Any]:
    from kernelscope.analysis.runs import dissect_of_run, shift_of_run

    numbers: dict[str, Any] = {}
    results = dissect_of_run(run_dir, quick=quick, seed=seed)
    for concept in ("eyes", "mouth"):
        for which in ("trained", "init"):
            prefix = f"detectors_{concept}" + ("" if which == "trained" else "_init")
            counts = [r.detector_counts(which).get(concept) for r in results.values()]
            counts = [c for c in counts if c is not None]
            if counts:
                numbers[prefix] = sum(c["iou"] for c in counts)
                numbers[prefix + "_gated"] = sum(c["gated"] for c in counts)
    shift = shift_of_run(run_dir, quick=quick, seed=seed)
    t = shift.trained
    name = "mahalanobis" if "mahalanobis" in t["network"] else next(iter(t["network"]))
    numbers["shift_quiet"] = len(t["quiet_on_ood"])
    numbers["shift_louder"] = len(t["fire_more_on_ood"])
    numbers["shift_auroc"] = float(t["network"][name]["auroc"])
    if shift.init is not None:
        numbers["shift_quiet_init"] = len(shift.init["quiet_on_ood"])
        numbers["shift_louder_init"] = len(shift.init["fire_more_on_ood"])
        init_auroc = shift.init.get("network", {}).get(name, {}).get("auroc")
        if init_auroc is not None:
            numbers["shift_auroc_init"] = float(init_auroc)
    numbers.update(occlusion_numbers(run_dir, quick=quick, seed=seed))
    return numbers


def occlusion_numbers(run_dir: str | os.PathLike, *, parts: tuple[str, ...] = ("eyes", "mouth"), quick: bool = False,
                      seed: int = 0) -> dict[str, Any]:
    """Part detectors by occlusion in a faces run, trained and at initialisation, flat ``name -> number``.

    The protocol of the demo's parts stage (:data:`kernelscope.analysis.part_contrast.PROTOCOL`:
    fill 0 after normalisation, 8 equal-area controls per image, margin 0.15, every conv layer
    read after its activation; 300 bootstrap resamples with ``quick``, else 1000) on the run's
    ``faces`` image set (the 100 ``lfw_subset`` faces), the parts placed at ONet's landmarks.
    A detector's selectivity exceeds the margin with its interval above zero; a gated one's part
    drop also exceeds the upper end of its equal-area controls' bootstrap interval.

    Returns
    -------
    dict
        Per part ``p``: ``occlusion_<p>_detectors``, ``occlusion_<p>_detectors_gated`` (summed over
        the conv layers), ``occlusion_<p>_drop``, ``occlusion_<p>_control_drop``,
        ``occlusion_<p>_selectivity`` (the most selective channel over the layers), and each again
        with ``_init`` for the network at initialisation (:meth:`Source.init_model`).
    """
    from kernelscope.analysis.occlusion import onet_part_masks
    from kernelscope.analysis.part_contrast import PROTOCOL, best_over_layers
    from kernelscope.analysis.parts import part_selectivity_layers
    from kernelscope.sources import open_source

    src = open_source(run_dir)
    x, raw, _ = src.images("faces")  # (100, 1, 25, 25) normalised as in training; raw in [0, 1]
    masks = onet_part_masks(raw, parts=list(parts))
    options = {**PROTOCOL, "parts": list(parts), "n_boot": 300 if quick else 1000, "seed": seed, "target": None,
               "layers": src.conv_layers}
    numbers: dict[str, Any] = {}
    for suffix, model in (("", src.model), ("_init", src.init_model(seed))):
        results = part_selectivity_layers(model, x, masks, **options)
        for part in parts:
            best = best_over_layers(results, part)
            key = f"occlusion_{part}"
            numbers[f"{key}_detectors{suffix}"] = sum(best["n_detectors"].values())
            numbers[f"{key}_detectors{suffix}_gated"] = sum(best["n_detectors_gated"].values())
            if best["channel"] is not None:
                numbers[f"{key}_drop{suffix}"] = best["part_drop"]
                numbers[f"{key}_control_drop{suffix}"] = best["control_drop"]
                numbers[f"{key}_selectivity{suffix}"] = best["selectivity"]
    return numbers


#: The numbers a replication leads with (its repr shows those present, in this order).
LEAD = ("accuracy", "structured_beyond_spectrum", "structured_beyond_spectrum_control_smooth", "classical",
        "detectors_eyes_gated", "occlusion_eyes_detectors_gated", "shift_auroc")


class Replication(Displayed, dict):
    """``{"preset", "seeds", "per_seed", "summary", "seconds", ...}`` with :meth:`table` (markdown).

    In a notebook: one row per number (mean, 95% interval over seeds, min, max); ``repr`` says
    the preset, the seeds and the lead numbers as ``mean [low, high]``.
    """

    def _display_summary(self) -> Summary:
        summary = self["summary"]
        order = [k for k in LEAD if k in summary] + [k for k in summary if k not in LEAD]
        items = [(k, f"{_num(summary[k]['mean'])} [{_num(summary[k]['ci95'][0])}, {_num(summary[k]['ci95'][1])}]")
                 for k in order if summary[k]["mean"] is not None]
        table = [{"number": k, "mean": s["mean"], "95% interval": s["ci95"], "min": s["min"], "max": s["max"],
                  "n": s["n"]} for k, s in ((k, summary[k]) for k in order)]
        return Summary(f"{self['preset']} over {len(self['seeds'])} seeds {format_value(self['seeds'])}", items, table,
                       [self.get("interval", "")] if self.get("interval") else [],
                       brief=sum(k in summary for k in LEAD[:4]))

    def table(self) -> str:
        """A markdown table: one row per number, mean [95% interval] over seeds, min-max."""
        n = len(self["seeds"])
        lines = [f"| number ({self['preset']}, {n} seeds) | mean | 95% interval over seeds | min - max |",
                 "|---|---:|---:|---:|"]
        for key, s in self["summary"].items():
            if s["mean"] is None:
                continue
            low, high = s["ci95"]
            lines.append(f"| {key} | {s['mean']:.3f} | {_num(low)} - {_num(high)} | {_num(s['min'])} - {_num(s['max'])} |")
        return "\n".join(lines)


def _num(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def replicate(preset_name: str, seeds: int | list[int], out_dir: str | os.PathLike, *, epochs: int | None = None,
              train_limit: int | None = None, n_null: int = 1000, surrogates: int = 999, quick: bool = False,
              progress: bool = False, log: Any = None) -> Replication:
    """Train ``preset_name`` once per seed into ``out_dir/seed_<s>`` and summarise its headline numbers.

    Parameters
    ----------
    preset_name : str
        A training preset (``structure``, ``plain``, ``faces``).
    seeds : int or list of int
        ``N`` (seeds ``0 .. N-1``) or the seeds themselves.
    out_dir : path
        Run directories go to ``seed_<s>``; ``replicate.json`` and ``replicate.md`` beside them.
        A finished run directory (its last epoch recorded) is reused.
    epochs, train_limit : int, optional
        Override the preset (shorter runs for tests).
    n_null, surrogates : int
        Passed to the atlas (kernels per null; surrogates per kernel).
    quick : bool
        Faces runs: fewer permutations and bootstrap resamples in dissection and shift.
    progress : bool
        Training progress bars.
    log : callable, optional
        Called with one line per finished seed.

    Returns
    -------
    Replication
    """
    from kernelscope._io import write_json
    from kernelscope.train import preset, train
    from kernelscope.train.rundir import Run

    seed_list = list(range(int(seeds))) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise KernelscopeError("seeds: need at least one seed")
    if len(set(seed_list)) != len(seed_list):
        raise KernelscopeError(f"seeds: each seed once, got {seed_list}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_seed, seconds = [], []
    for s in seed_list:
        config = preset(preset_name, seed=s, epochs=epochs, train_limit=train_limit, progress=progress)
        run_dir = out / f"seed_{s}"
        start = time.perf_counter()
        if not _finished(run_dir, config.epochs, Run):
            train(config, run_dir, force=True)
        trained = time.perf_counter() - start
        numbers = headline_of_run(run_dir, n_null=n_null, surrogates=surrogates, seed=0, quick=quick)
        seconds.append({"seed": s, "train": trained, "analyse": time.perf_counter() - start - trained})
        per_seed.append({"seed": s, **numbers})
        write_json(out / "replicate.partial.json", {"preset": preset_name, "per_seed": per_seed, "seconds": seconds})
        if log is not None:
            log(f"seed {s}: " + ", ".join(f"{k} {v:.3f}" for k, v in numbers.items()
                                         if k in ("accuracy", "classical", "structured_beyond_spectrum")))
    summary = summarise([{k: v for k, v in row.items() if k != "seed"} for row in per_seed])
    result = Replication(preset=preset_name, seeds=seed_list, epochs=epochs, train_limit=train_limit,
                         n_null=n_null, surrogates=surrogates, per_seed=per_seed, summary=summary, seconds=seconds,
                         interval="percentile bootstrap of the mean over seeds, 10,000 resamples, 95%")
    write_json(out / "replicate.json", dict(result))
    (out / "replicate.md").write_text(result.table() + "\n")
    return result


def _finished(run_dir: Path, epochs: int, run_class) -> bool:
    if not (run_dir / "manifest.json").exists():
        return False
    try:
        run = run_class(run_dir)
        return run.status == "complete" and bool(run.epochs) and run.epochs[-1] >= epochs
    except Exception:  # a damaged or unfinished run: train it again
        return False
