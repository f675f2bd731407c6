"""The whole story on the bundled real data, in one call: ``kernelscope demo --out DIR``.

Stages, each timed and guarded (an error is reported as a failed stage, with its traceback in the log, and
makes ``kernelscope demo`` exit 1; an ImportError of kernelscope's own modules is such an error, never
"unavailable"):

1. ``mnist``: train the large-kernel net on the 5,000 bundled MNIST digits with the
   structure-revealing recipe (TRAINING's ``structure`` preset), recording a run.
2. ``atlas``: the kernel atlas of its first layer against the nulls and the
   initialisation control: which fraction of kernels is edge- or Gabor-like.
   ``correlation``: does each channel of the MNIST net measure correlation with a template?
   The held-out R^2 of a linear template per layer, activation vs normalised correlation,
   orientation tuning, against the network at initialisation
   (:func:`kernelscope.analysis.channel_correlation.correlation_of`).
   ``visualize``: what each channel of the MNIST net's last conv layer wants to see: images
   optimised to excite it, their value over the channel's data-set maximum, against the same
   optimisation on the network at initialisation
   (:func:`kernelscope.analysis.visualize.visualize_source`).
3. ``faces``: train the faces model (face vs. non-face, ``faces`` preset).
4. ``dissect``: Network Dissection of every conv layer with eye and mouth masks,
   IoU against chance and against the same network at initialisation.
5. ``shift``: faces in, "objects" out -- held-out non-face patches, the net's own negative
   class (not a novel domain): channels that go quiet (and those that fire more),
   per-channel and network-level AUROC, with the init control.
6. ``parts``: occlusion part selectivity: ONet, the easy faces net, a net trained on
   a task that needs eyes, and a random net.
7. ``facenet``: a real pretrained network, dlib's face-recognition ResNet, on real photos
   (:mod:`kernelscope.analysis.face_network`): its first layer against the nulls (spatial and
   colour), top patches on face chips, eye and mouth occlusion, and faces against animal
   faces and objects, each with the network at initialisation as control.
8. ``report``: one self-contained HTML report of all of it.

``run_demo(..., quick=True)`` shrinks every stage (fewer epochs and images) for the
tests; the full demo aims at under 3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kernelscope.errors import KernelscopeError

__all__ = ["DemoResult", "StageResult", "run_demo", "STAGES"]

STAGES = ("mnist", "atlas", "visualize", "correlation", "faces", "dissect", "shift", "parts", "facenet", "report")


@dataclass
class StageResult:
    """One demo stage: "ok", "unavailable" (capability missing) or "failed", its time and numbers."""

    name: str
    status: str
    seconds: float
    value: Any = None
    reason: str = ""


@dataclass
class DemoResult:
    """Everything the demo did: the output folder, the report, each stage and the key numbers."""

    out_dir: Path
    report_path: Path | None
    stages: dict[str, StageResult] = field(default_factory=dict)
    numbers: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        """The short printed summary: key numbers, then what was unavailable, then the report's path."""
        lines = ["kernelscope demo: what the kernels learned",
                 "(one seed; `kernelscope replicate --preset structure --seeds 10` gives every number with its interval "
                 "over seeds, see docs/controls.md)", ""]
        lines.extend(_summary_lines(self.numbers))
        problems = [s for s in self.stages.values() if s.status != "ok"]
        if problems:
            lines.append("")
            lines.extend(f"  [{s.status}] {s.name}: {s.reason}" for s in problems)
        lines.append("")
        lines.append("stage times: " + ", ".join(f"{s.name} {s.seconds:.1f} s" for s in self.stages.values())
                     + f"; total {self.seconds:.1f} s")
        lines.append(f"report: {self.report_path}" if self.report_path else "report: not written")
        return "\n".join(lines)


def _pct(value: Any) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{100 * value:.0f}%"


def _num(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _summary_lines(n: dict[str, Any]) -> list[str]:
    lines = []
    if "mnist_test_acc" in n:
        lines.append(f"  MNIST large-kernel net: test accuracy {_pct(n['mnist_test_acc'])} "
                     f"({n.get('mnist_n_test', '?')} held-out digits)")
    if "strict" in n:
        from kernelscope.report.controls import strict_lines

        for line in strict_lines(n["strict"]):
            where = "MNIST first layer" if line.startswith(("structured", "classical")) else "faces net"
            lines.append(f"  {where}, {line}")
    if "atlas_fraction" in n:
        lines.append(f"  first-layer kernels edge-/Gabor-like: {_pct(n['atlas_fraction'])} of "
                     f"{n.get('atlas_n', '?')} (at initialisation: {_pct(n.get('atlas_init_fraction'))}; "
                     f"random kernels: {_pct(n.get('atlas_random_fraction'))}); median best match "
                     f"{_num(n.get('atlas_median'), 2)} vs {_num(n.get('atlas_init_median'), 2)} at init")
    if "visualize" in n:
        v = n["visualize"]
        lines.append(f"  what the MNIST net's last conv layer wants to see ({v['read']}, {v['steps']} steps, best of "
                     f"{v['starts']} starts): renders reach a median {_num(v['median_ratio'], 2)} of each channel's "
                     f"data-set max (init control {_num(v['median_init_ratio'], 2)}, random directions "
                     f"{_num(v['median_random_direction_ratio'], 2)}); {v['reach_data_max']} of {v['live']} live "
                     f"channels reach it, {v['beat_init']} beat the init control")
    if "correlation" in n:
        c = n["correlation"]
        per_layer = "; ".join(f"{r['layer']} {_num(r['median_r2'], 2)} (init {_num(r['init_median_r2'], 2)})"
                              for r in c["per_layer"])
        lines.append(f"  does a channel measure correlation? median held-out R^2 of a linear template "
                     f"({c['at']}): {per_layer}; first layer, rank correlation of activation with normalised "
                     f"correlation {_num(c['rho_ncc'], 2)} (init {_num(c['rho_ncc_init'], 2)})")
    if "faces_test_acc" in n:
        lines.append(f"  faces net: test accuracy {_pct(n['faces_test_acc'])} (face vs. non-face)")
    for concept in ("eyes", "mouth"):
        key = f"dissect_{concept}"
        if key in n:
            d = n[key]
            lines.append(f"  strongest {concept} detector (conv outputs): layer {d['layer']} channel {d['channel']}, IoU "
                         f"{_num(d['iou'])} (chance {_num(d['chance'])}, permutation p95 {_num(d['null_p95'])}, "
                         f"init best {_num(d.get('init_iou'))}); detectors (IoU > {d['threshold']}): "
                         f"{d['n_detectors']}")
    if "shift" in n:
        s = n["shift"]
        lines.append(f"  faces in, objects out (held-out non-faces, the net's own negative class; layer {s['layer']}, "
                     f"conv output): "
                     f"{s['n_quiet']} of {s['channels']} channels go "
                     f"quiet, {s['n_louder']} fire more (at initialisation: {s.get('init_quiet', 'n/a')} quiet, "
                     f"{s.get('init_louder', 'n/a')} more); best channel AUROC {_num(s['best_auroc'])}; network "
                     f"{s['network_score']} AUROC {_num(s['network_auroc'])} (init: {_num(s.get('init_auroc'))})")
    if "parts" in n:
        for name, p in n["parts"].items():
            lines.append(f"  {p['part']} occlusion, {name}: best channel {p['layer']}:{p['channel']} drops "
                         f"{_pct(p['part_drop'])} vs {_pct(p['control_drop'])} for equal-area controls "
                         f"({_verdict(p)})")
    if "facenet" in n:
        f = n["facenet"]
        a, colour = f["atlas"], f.get("colour", {})
        if "structured_beyond_spectrum" in a:
            lines.append(f"  {f['source']}, first layer ({a['n']} RGB kernels): structured beyond its spectrum "
                         f"{_pct(a['structured_beyond_spectrum'])} (smoothed random kernels: "
                         f"{_pct(a.get('structured_beyond_spectrum_control_smooth'))})")
        lines.append(f"  {f['source']}, first layer ({a['n']} RGB kernels): edge-/Gabor-like {_pct(a['edge_or_gabor'])} "
                     f"(init {_pct(a['controls'].get('init'))}, random {_pct(a['controls'].get('random'))}, "
                     f"smoothed random {_pct(a['controls'].get('smooth'))})"
                     + ("; colour: " + ", ".join(f"{k} {_pct(v)}" for k, v in colour["fractions"].items())
                        + f" (init: opponent {_pct(colour['control_fractions'].get('init', {}).get('colour-opponent'))})"
                        if colour else ""))
        for part in ("eyes", "mouth"):
            o = f[f"occlusion_{part}"]
            if o.get("channel") is None:
                continue
            lines.append(f"  {part} occlusion on real face chips, {f['source']}: best channel {o['layer']}:{o['channel']} "
                         f"drops {_pct(o['part_drop'])} vs {_pct(o['control_drop'])} elsewhere; detectors "
                         f"{o.get('n_detectors_gated', 'n/a')} beyond the controls' interval, {o['n_detectors']} by "
                         f"selectivity alone (at initialisation: {o.get('init_detectors_gated', 'n/a')} and "
                         f"{o['init_detectors']}; best difference {_num(o['init_selectivity'], 2)} "
                         f"vs {_num(o['selectivity'], 2)})")
        for name, s in f["shift"].items():
            lines.append(f"  faces vs {name} ({s['n_out']} grey crops; {s['read']}): {s['quiet']} of {s['channels']} "
                         f"channels quieter, {s['louder']} louder (at initialisation: {s['init_quiet']} quieter, "
                         f"{s['init_louder']} louder)")
    if not lines:
        lines.append("  (no numbers: every stage was unavailable)")
    return lines


def _stage(result: DemoResult, name: str, work: Callable[[], Any], *, strict: bool, log: Callable[[str], None]
           ) -> Any:
    """Run one stage; an error makes it 'failed' (re-raised when strict), ImportErrors included."""
    start = time.perf_counter()
    log(f"[demo] {name} ...")
    try:
        value = work()
        status, reason = "ok", ""
    except KernelscopeError as error:
        if strict:
            raise
        value, status, reason = None, "failed", str(error)
    except Exception as error:
        if strict:
            raise
        value, status, reason = None, "failed", f"{type(error).__name__}: {error}"
        log(traceback.format_exc())
    seconds = time.perf_counter() - start
    result.stages[name] = StageResult(name, status, seconds, value, reason)
    log(f"[demo] {name}: {status} in {seconds:.1f} s" + (f" ({reason})" if reason else ""))
    return value


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------


def _train(kind: str, out: Path, *, quick: bool, seed: int, progress: bool):
    from kernelscope.train import preset, train

    if kind == "mnist":
        overrides = {"epochs": 2, "train_limit": 600, "n_probe": 4} if quick else {}
        config = preset("structure", seed=seed, progress=progress, device="cpu", **overrides)
    else:
        overrides = {"epochs": 2, "train_limit": 300, "n_probe": 4} if quick else {}
        config = preset("faces", seed=seed, progress=progress, device="cpu", **overrides)
    return train(config, out, force=True)


def _atlas(run_dir: Path, out: Path, *, quick: bool) -> Any:
    from kernelscope._io import write_bytes
    from kernelscope.analysis.atlas import atlas_of

    result = atlas_of(run_dir, **({"n_null": 300} if quick else {}))
    write_bytes(out / "atlas.json", result.to_json().encode("utf-8"))
    return result


def _strict_numbers(atlas_result: Any, dissect_results: Any = None) -> dict[str, Any]:
    """The stricter headline: surrogate tests beside smoothed random kernels, detectors gated on the null."""
    from kernelscope.report.controls import strict_numbers

    return strict_numbers(atlas_result, dissect_results)


def _atlas_numbers(result: Any) -> dict[str, Any]:
    classes = ("edge-like", "gabor-like")
    fraction = sum(result.fractions.get(c, 0.0) for c in classes)
    controls = result.control_fractions
    numbers = {"atlas_fraction": fraction, "atlas_n": result.shape[0],
               "atlas_random_fraction": sum(controls.get("random", {}).get(c, np.nan) for c in classes),
               "atlas_init_fraction": sum(controls.get("init", {}).get(c, np.nan) for c in classes)}
    data = result.to_dict()
    numbers["atlas_median"] = data.get("median_best_match")
    numbers["atlas_init_median"] = (data.get("control_median_best_match") or {}).get("init")
    return numbers


def _dissect(run_dir: Path, out: Path, *, quick: bool, seed: int) -> dict[str, Any]:
    """Dissect every conv layer of the faces run; write dissect.json."""
    from kernelscope._io import write_json
    from kernelscope.analysis.runs import dissect_of_run

    results = dissect_of_run(run_dir, quick=quick, seed=seed)
    write_json(out / "dissect.json", {layer: r.to_dict() for layer, r in results.items()})
    return results


def _dissect_numbers(results: dict[str, Any]) -> dict[str, Any]:
    numbers = {}
    for concept in ("eyes", "mouth"):
        best = None
        for layer, r in results.items():
            t = r.trained["concepts"].get(concept)
            if t is None:
                continue
            channel = int(np.argmax(t["iou"]))
            if best is None or t["iou"][channel] > best["iou"]:
                init = r.init["concepts"][concept]["iou"] if r.init is not None else None
                best = {"layer": layer, "channel": channel, "iou": float(t["iou"][channel]),
                        "chance": float(t["chance"][channel]), "null_p95": float(t["null_p95"][channel]),
                        "init_iou": float(np.max(init)) if init is not None else None,
                        "threshold": r.iou_threshold}
        if best is not None:
            best["n_detectors"] = sum(len(r.detectors().get(concept, [])) for r in results.values())
            numbers[f"dissect_{concept}"] = best
    return numbers


def _shift(run_dir: Path, out: Path, *, quick: bool, seed: int) -> Any:
    from kernelscope._io import write_json
    from kernelscope.analysis.runs import shift_of_run

    result = shift_of_run(run_dir, quick=quick, seed=seed)
    write_json(out / "shift.json", result.to_dict())
    return result


def _shift_numbers(result: Any) -> dict[str, Any]:
    t = result.trained
    network = t["network"]
    name = "mahalanobis" if "mahalanobis" in network else next(iter(network))
    init = (result.init or {}).get("network", {}).get(name, {}) if result.init is not None else {}
    auroc = t["channels"]["auroc"]
    return {"shift": {"layer": result.layer, "channels": int(len(auroc)), "n_quiet": len(t["quiet_on_ood"]),
                      "n_louder": len(t["fire_more_on_ood"]), "best_auroc": float(np.max(auroc)),
                      "network_score": name, "network_auroc": float(network[name]["auroc"]),
                      "init_auroc": init.get("auroc"),
                      "init_quiet": len(result.init["quiet_on_ood"]) if result.init is not None else None,
                      "init_louder": len(result.init["fire_more_on_ood"]) if result.init is not None else None}}


def _parts(out: Path, *, quick: bool, seed: int) -> dict[str, Any]:
    from kernelscope._io import write_json
    from kernelscope.analysis.part_contrast import part_contrast

    result = part_contrast(seed=seed, quick=quick)
    write_json(out / "parts.json", result)
    return result


def _visualize(run_dir: Path, out: Path, *, quick: bool, seed: int) -> Any:
    """Renders of the MNIST run's last conv layer (16 channels) with the init control; writes visualize.json."""
    import torch

    from kernelscope._io import write_json
    from kernelscope.analysis.visualize import visualize_source

    options = (dict(channels="0-3", limit=100, steps=8, starts=1, random_directions=1) if quick
               else dict(channels="0-15", limit=1000, steps=64, starts=2))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small images, many small steps: one thread is 3-4x faster than two (measured)
    try:
        result = visualize_source(run_dir, k=3, seed=seed, **options)
    finally:
        torch.set_num_threads(threads)
    write_json(out / "visualize.json", {"images": result.images_description, **result.to_dict()})
    return result


def _visualize_numbers(result: Any) -> dict[str, Any]:
    s = result.summary()
    return {"layer": result.layer, "read": result.read, "steps": result.steps,
            "starts": result.settings.get("starts", 1), "live": s["units"] - s["dead_on_data"],
            **{key: s[key] for key in ("units", "median_ratio", "median_init_ratio", "median_random_direction_ratio",
                                       "reach_data_max", "beat_init", "dead_on_data")}}


def _correlation(run_dir: Path, out: Path, *, quick: bool, seed: int) -> Any:
    """Templates, raw vs normalised correlation and tuning of the MNIST run; writes correlation.json."""
    from kernelscope._io import write_json
    from kernelscope.analysis.channel_correlation import correlation_of
    from kernelscope.sources import open_source

    result = correlation_of(open_source(run_dir), limit=300 if quick else 1000, seed=seed)
    write_json(out / "correlation.json", result.to_dict())
    return result


def _correlation_numbers(result: Any) -> dict[str, Any]:
    raw = result.raw.to_dict() if result.raw is not None else {}
    raw_init = result.raw_init.to_dict() if result.raw_init is not None else {}
    return {"at": result.at, "per_layer": [{k: r[k] for k in ("layer", "median_r2", "init_median_r2")}
                                           for r in result.layer_rows()],
            "rho_ncc": (raw.get("median") or {}).get("rho_ncc"), "rho_ncc_init": (raw_init.get("median") or {}).get("rho_ncc")}


def _facenet(out: Path, *, quick: bool, seed: int) -> Any:
    """dlib's face ResNet on real photos; writes facenet.json."""
    from kernelscope._io import write_json
    from kernelscope.analysis.face_network import face_network

    result = face_network("dlib-face-resnet", quick=quick, seed=seed)
    write_json(out / "facenet.json", {**result.summary(), "images": result.images})
    return result


def _verdict(p: dict[str, Any]) -> str:
    """A part channel's verdict: a detector only when its drop also clears the equal-area controls' interval."""
    if p.get("detector_gated"):
        return "detector: beyond the controls' 95% interval"
    if p.get("detector"):
        return "no detector: selective, but its drop is within the controls' 95% interval"
    return "no detector"


def _parts_numbers(result: dict[str, Any]) -> dict[str, Any]:
    models = {}
    for name, m in result["models"].items():
        models[name] = {"part": result["part"], "layer": m.get("layer"), "channel": m.get("channel"),
                        "part_drop": m.get("part_drop", float("nan")),
                        "control_drop": m.get("control_drop", float("nan")),
                        "detector": bool(m.get("detector", False)),
                        "detector_gated": bool(m.get("detector_gated", False))}
    return {"parts": models}


# --------------------------------------------------------------------------------------------
# The demo
# --------------------------------------------------------------------------------------------


def run_demo(out_dir: str | os.PathLike, *, quick: bool = False, seed: int = 0, strict: bool = False,
             progress: bool = True, stages: tuple[str, ...] | None = None,
             log: Callable[[str], None] | None = None) -> DemoResult:
    """Run the whole story and write ``out_dir/report.html``.

    Parameters
    ----------
    out_dir : str or PathLike
        Output folder: ``runs/mnist``, ``runs/faces`` (run directories), ``atlas.json``,
        ``dissect.json``, ``shift.json``, ``parts.json``, ``report.html``, ``summary.txt`` and
        ``figures/<section>-<n>.png`` (every figure of the report, for READMEs).
    quick : bool
        Tiny version of every stage (for the tests; ~1 minute).
    seed : int
        Seeds training and every randomised control.
    strict : bool
        Re-raise errors instead of reporting a failed stage (tests).
    stages : tuple of str, optional
        Run only these stages (default: all of :data:`STAGES`); stages whose input is missing
        are reported as unavailable.
    log : callable, optional
        Where progress lines go (default: stderr).

    Returns
    -------
    DemoResult

    Examples
    --------
    A stage whose input is missing is reported, not crashed (the full demo takes minutes):

    >>> import tempfile
    >>> result = run_demo(tempfile.mkdtemp(), stages=("atlas",), log=lambda line: None)
    >>> result.stages["atlas"].status, result.stages["atlas"].reason
    ('unavailable', "needs the MNIST run (stage 'mnist')")
    """
    started = time.perf_counter()
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    chosen = tuple(STAGES if stages is None else stages)
    for name in chosen:
        if name not in STAGES:
            from kernelscope.errors import suggest

            raise KernelscopeError("stages: " + suggest(name, STAGES, what="demo stage"))
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise KernelscopeError(f"--out {str(out)!r} is a file; give a folder for the demo's outputs")
    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult(out_dir=out, report_path=None)
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

    def skip(name: str, reason: str) -> None:
        result.stages[name] = StageResult(name, "unavailable", 0.0, None, reason)

    mnist_dir, faces_dir = out / "runs" / "mnist", out / "runs" / "faces"
    mnist_run = faces_run = None
    if "mnist" in chosen:
        mnist_run = _stage(result, "mnist", lambda: _train("mnist", mnist_dir, quick=quick, seed=seed,
                                                            progress=progress), strict=strict, log=log)
        if mnist_run is not None:
            last = mnist_run.metrics[-1]
            result.numbers["mnist_test_acc"] = last.get("test_acc")
            result.numbers["mnist_n_test"] = mnist_run.manifest["dataset"].get("n_test")
    atlas_result = None
    if "atlas" in chosen:
        if mnist_run is None:
            skip("atlas", "needs the MNIST run (stage 'mnist')")
        else:
            atlas_result = _stage(result, "atlas", lambda: _atlas(mnist_dir, out, quick=quick), strict=strict,
                                  log=log)
            if atlas_result is not None:
                result.numbers.update(_atlas_numbers(atlas_result))
                result.numbers["strict"] = _strict_numbers(atlas_result)
    visualize_result = None
    if "visualize" in chosen:
        if mnist_run is None:
            skip("visualize", "needs the MNIST run (stage 'mnist')")
        else:
            visualize_result = _stage(result, "visualize", lambda: _visualize(mnist_dir, out, quick=quick, seed=seed),
                                      strict=strict, log=log)
            if visualize_result is not None:
                result.numbers["visualize"] = _visualize_numbers(visualize_result)
    correlation_result = None
    if "correlation" in chosen:
        if mnist_run is None:
            skip("correlation", "needs the MNIST run (stage 'mnist')")
        else:
            correlation_result = _stage(result, "correlation", lambda: _correlation(mnist_dir, out, quick=quick,
                                                                                      seed=seed), strict=strict, log=log)
            if correlation_result is not None:
                result.numbers["correlation"] = _correlation_numbers(correlation_result)
    if "faces" in chosen:
        faces_run = _stage(result, "faces", lambda: _train("faces", faces_dir, quick=quick, seed=seed,
                                                            progress=progress), strict=strict, log=log)
        if faces_run is not None:
            result.numbers["faces_test_acc"] = faces_run.metrics[-1].get("test_acc")
    dissect_result = shift_result = parts_result = None
    if "dissect" in chosen:
        if faces_run is None:
            skip("dissect", "needs the faces run (stage 'faces')")
        else:
            dissect_result = _stage(result, "dissect", lambda: _dissect(faces_dir, out, quick=quick, seed=seed),
                                    strict=strict, log=log)
            if dissect_result is not None:
                result.numbers.update(_dissect_numbers(dissect_result))
                if atlas_result is not None:
                    result.numbers["strict"] = _strict_numbers(atlas_result, dissect_result)
    if "shift" in chosen:
        if faces_run is None:
            skip("shift", "needs the faces run (stage 'faces')")
        else:
            shift_result = _stage(result, "shift", lambda: _shift(faces_dir, out, quick=quick, seed=seed),
                                  strict=strict, log=log)
            if shift_result is not None:
                result.numbers.update(_shift_numbers(shift_result))
    if "parts" in chosen:
        parts_result = _stage(result, "parts", lambda: _parts(out, quick=quick, seed=seed), strict=strict, log=log)
        if parts_result is not None:
            result.numbers.update(_parts_numbers(parts_result))
    facenet_result = None
    if "facenet" in chosen:
        facenet_result = _stage(result, "facenet", lambda: _facenet(out, quick=quick, seed=seed), strict=strict,
                                log=log)
        if facenet_result is not None:
            result.numbers["facenet"] = facenet_result.summary()
    if "report" in chosen:
        from kernelscope.report.story import build_story_report

        runs = []
        if mnist_run is not None:
            runs.append(("mnist", "MNIST digits: the large-kernel net (structure recipe)", mnist_dir,
                         ["training", "kernels", "atlas", "featuremaps"] + (["visualize"] if visualize_result else []),
                         {"atlas": atlas_result, "visualize": visualize_result}))
        if faces_run is not None:
            runs.append(("faces", "Faces: face vs. non-face (TinyVGG)", faces_dir,
                         ["training", "kernels", "featuremaps", "patches", "receptive", "dissect", "shift"],
                         {"dissect": dissect_result, "shift": shift_result}))
        report_path = _stage(result, "report", lambda: build_story_report(
            out / "report.html", runs, parts=parts_result, facenet=facenet_result, correlation=correlation_result,
            numbers=result.numbers,
            stages=result.stages, strict=strict, progress=progress, figures_dir=out / "figures"),
            strict=strict, log=log)
        result.report_path = report_path
    result.seconds = time.perf_counter() - started
    from kernelscope._io import write_bytes

    write_bytes(out / "summary.txt", (result.summary() + "\n").encode("utf-8"))
    return result
