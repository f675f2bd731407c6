"""The runs the explorer serves: opened once at start, addressed by index, read lazily, cached.

Only the run directories given when the server starts are ever read; a request
names a run by its index (``/api/runs/0/...``), never by a path. Layers and
epochs in requests are checked against the run's manifest and recorded snapshots.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kernelscope._io import finite_or_none
from kernelscope.errors import KernelscopeError, suggest

__all__ = ["RunStore", "UnknownRun", "flat", "MAX_KERNEL_VALUES"]

#: Kernel values sent per request; larger layers are sent as their mean over input channels.
MAX_KERNEL_VALUES = 1 << 18


class UnknownRun(KernelscopeError):
    """A run index that was not given on the command line (answered with 404)."""


def flat(array: np.ndarray, *, digits: int = 5) -> dict[str, Any]:
    """An array as ``{"shape", "data", "vmin", "vmax"}`` with ``data`` in C order.

    Examples
    --------
    >>> flat(np.array([[1.0, -2.0], [0.5, 0.25]]))
    {'shape': [2, 2], 'data': [1.0, -2.0, 0.5, 0.25], 'vmin': -2.0, 'vmax': 1.0}
    """
    a = np.asarray(array, dtype=np.float64)
    finite = a[np.isfinite(a)]
    a = np.where(np.isfinite(a), a, 0.0)
    return {"shape": list(a.shape), "data": np.round(a.ravel(), digits).tolist(),
            "vmin": float(finite.min()) if finite.size else 0.0,
            "vmax": float(finite.max()) if finite.size else 0.0}


class _Cache:
    """A small thread-safe LRU cache; ``get(key, compute)`` computes each key once."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[Any, Any] = OrderedDict()
        self.lock = threading.Lock()
        self.key_locks: dict[Any, threading.Lock] = {}

    def get(self, key: Any, compute) -> Any:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
            key_lock = self.key_locks.setdefault(key, threading.Lock())
        with key_lock:  # one computation per key, even when requests arrive together
            with self.lock:
                if key in self.items:
                    return self.items[key]
            value = compute()
            with self.lock:
                self.items[key] = value
                while len(self.items) > self.size:
                    self.items.popitem(last=False)
                self.key_locks.pop(key, None)
            return value


class RunStore:
    """The run directories given to ``kernelscope serve``, by index.

    Parameters
    ----------
    paths : sequence of path
        Run directories (each is opened and checked now: a bad one raises KernelscopeError).
    atlas_n_null : int
        Null kernels per control for the atlas (fewer than the atlas' default 1000, so
        that hovering answers within seconds; the percentile thresholds are coarser).
    """

    def __init__(self, paths: Sequence[str | Path] = (), *, atlas_n_null: int = 300) -> None:
        from kernelscope.train.rundir import load_run

        self.runs = [load_run(p) for p in paths]
        self.atlas_n_null = int(atlas_n_null)
        self._arrays = _Cache(24)  # kernels, probe and feature maps per epoch: a few MB each
        self._atlas = _Cache(32)
        self._patches = _Cache(16)
        self._datasets = _Cache(4)

    def __len__(self) -> int:
        return len(self.runs)

    def get(self, run_id: int):
        if not 0 <= run_id < len(self.runs):
            given = f"runs 0..{len(self.runs) - 1}" if self.runs else "no run (start `kernelscope serve RUN`)"
            raise UnknownRun(f"run {run_id} is not served; this server has {given}")
        return self.runs[run_id]

    def _name(self, run_id: int) -> str:
        run = self.runs[run_id]
        return run.path.resolve().name or str(run_id)

    def info(self, run_id: int) -> dict[str, Any]:
        run = self.get(run_id)
        m = run.manifest
        return {"id": run_id, "name": self._name(run_id), "model": str(m.get("model", {}).get("name", "?")),
                "dataset": str(m.get("dataset", {}).get("name", "?")), "status": str(m.get("status", "?")),
                "epochs": run.epochs, "conv_layers": run.conv_layers}

    def summary(self, run_id: int) -> dict[str, Any]:
        """The run's summary, with its manifest read again (a run still training shows its new epochs)."""
        from kernelscope.train.rundir import read_manifest

        run = self.get(run_id)
        try:
            run.manifest = read_manifest(run.path)
        except KernelscopeError:  # mid-write or removed: keep what was read before
            pass
        out = self.info(run_id)
        metrics = []
        for row in run.metrics:
            metrics.append({str(k): (int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                     else finite_or_none(v) if isinstance(v, (float, np.floating)) else None)
                            for k, v in row.items()})
        shapes = {}
        if run.epochs:
            shapes = {k: list(v.shape) for k, v in self._kernels(run_id, run.epochs[-1]).items()}
        out.update(feature_map_epochs=run.feature_map_epochs, metrics=metrics, layer_shapes=shapes,
                   classes=[str(c) for c in run.manifest.get("dataset", {}).get("classes", [])])
        return out

    # ---- arrays --------------------------------------------------------------------------

    def _kernels(self, run_id: int, epoch: int) -> dict[str, np.ndarray]:
        run = self.runs[run_id]
        return self._arrays.get(("kernels", run_id, epoch), lambda: run.kernels(epoch))

    def _layer(self, run_id: int, layer: str | None) -> str:
        layers = self.runs[run_id].conv_layers
        if layer is None:
            if not layers:
                raise KernelscopeError(f"run {run_id} records no conv layer")
            return layers[0]
        if layer not in layers:
            raise KernelscopeError(suggest(layer, layers, what="conv layer"))
        return layer

    def _epoch(self, run_id: int, epoch: int | None, available: list[int], what: str) -> int:
        if not available:
            raise KernelscopeError(f"run {run_id} has no recorded {what}")
        if epoch is None or epoch == -1:
            return available[-1]
        if epoch not in available:
            raise KernelscopeError(f"epoch {epoch} is not recorded in run {run_id} "
                                   f"({what}: {', '.join(map(str, available))})")
        return epoch

    def kernels(self, run_id: int, *, layer: str | None = None, epoch: int | None = None) -> dict[str, Any]:
        run = self.get(run_id)
        layer = self._layer(run_id, layer)
        epoch = self._epoch(run_id, epoch, run.epochs, "kernel epochs")
        arrays = self._kernels(run_id, epoch)
        if layer not in arrays:
            raise KernelscopeError(f"layer {layer!r} is missing from run {run_id}'s epoch {epoch} snapshot")
        k = arrays[layer]  # (O, C, kh, kw)
        note = ""
        if k.size > MAX_KERNEL_VALUES and k.shape[1] > 1:
            note = (f"mean over the {k.shape[1]} input channels: the layer's {k.size} values are more than "
                    f"{MAX_KERNEL_VALUES} sent at once")
            k = k.mean(axis=1, keepdims=True)  # (O, 1, kh, kw)
        return {"run_id": run_id, "layer": layer, "epoch": epoch, "kernels": flat(k), "note": note}

    def probe(self, run_id: int) -> dict[str, Any]:
        run = self.get(run_id)
        _, raw, labels = self._probe(run_id)
        classes = [str(c) for c in run.manifest.get("dataset", {}).get("classes", [])]
        names = [classes[int(v)] if 0 <= int(v) < len(classes) else str(int(v)) for v in labels]
        return {"run_id": run_id, "images": flat(raw, digits=4), "labels": [int(v) for v in labels],
                "label_names": names}

    def _probe(self, run_id: int):
        return self._arrays.get(("probe", run_id), self.runs[run_id].probe)

    def feature_maps(self, run_id: int, *, layer: str | None = None, epoch: int | None = None,
                     probe: int = 0) -> dict[str, Any]:
        run = self.get(run_id)
        layer = self._layer(run_id, layer)
        epoch = self._epoch(run_id, epoch, run.feature_map_epochs, "feature-map epochs")
        maps = self._arrays.get(("maps", run_id, epoch), lambda: run.feature_maps(epoch))
        if layer not in maps:
            raise KernelscopeError(f"layer {layer!r} has no feature maps in run {run_id} at epoch {epoch}")
        _, raw, labels = self._probe(run_id)
        layer_maps = maps[layer]  # (P, O, H', W')
        if not 0 <= probe < layer_maps.shape[0]:
            raise KernelscopeError(f"probe must be 0..{layer_maps.shape[0] - 1} (run {run_id} records "
                                   f"{layer_maps.shape[0]} probe images); got {probe}")
        classes = [str(c) for c in run.manifest.get("dataset", {}).get("classes", [])]
        label = int(labels[probe])
        return {"run_id": run_id, "layer": layer, "epoch": epoch, "probe": probe, "label": label,
                "label_name": classes[label] if 0 <= label < len(classes) else str(label),
                "image": flat(raw[probe], digits=4), "maps": flat(layer_maps[probe], digits=4)}

    # ---- atlas -----------------------------------------------------------------------------

    def atlas(self, run_id: int, *, layer: str | None = None, epoch: int | None = None) -> dict[str, Any]:
        run = self.get(run_id)
        layer = self._layer(run_id, layer)
        epoch = self._epoch(run_id, epoch, run.epochs, "kernel epochs")
        return self._atlas.get((run_id, layer, epoch), lambda: self._compute_atlas(run_id, layer, epoch))

    def _compute_atlas(self, run_id: int, layer: str, epoch: int) -> dict[str, Any]:
        from kernelscope.analysis.atlas import atlas_of

        start = time.perf_counter()
        result = atlas_of(self.runs[run_id].path, layer=layer, epoch=epoch, with_evolution=False,
                          n_null=self.atlas_n_null)
        d = result.to_dict()
        kernels = []
        for r in d["kernels"]:
            best = r.get("best_match") or {}
            kernels.append({
                "index": int(r["index"]), "kernel_class": str(r["class"]),
                "best_family": str(best.get("family", "")), "best_name": str(best.get("name", "")),
                "best_params": str(best.get("params", "")), "best_score": finite_or_none(best.get("score")),
                "scores": {str(k): finite_or_none(v) for k, v in (r.get("scores") or {}).items()},
                "margin": finite_or_none(r.get("margin")),
            })
        return {"run_id": run_id, "layer": layer, "epoch": epoch,
                "thresholds": {k: finite_or_none(v) for k, v in d["thresholds"].items()},
                "percentile": float(d["percentile"]),
                "fractions": {k: float(v) for k, v in d["fractions"].items()},
                "control_fractions": {n: {k: float(v) for k, v in f.items()}
                                      for n, f in d["control_fractions"].items()},
                "kernels": kernels, "notes": [str(n) for n in d["notes"]], "n_null": self.atlas_n_null,
                "seconds": time.perf_counter() - start}

    # ---- top patches -----------------------------------------------------------------------

    def patches(self, run_id: int, *, layer: str | None = None, epoch: int | None = None, k: int = 6,
                max_images: int = 2000) -> dict[str, Any]:
        """Each channel's ``k`` most activating test images, cropped to the receptive field (cached)."""
        run = self.get(run_id)
        layer = self._layer(run_id, layer)
        epoch = self._epoch(run_id, epoch, run.epochs, "kernel epochs")
        if epoch not in run.checkpoint_epochs:
            raise KernelscopeError(
                f"run {run_id} has no checkpoint at epoch {epoch}; top patches need the model's weights "
                f"(checkpoint epochs: {', '.join(map(str, run.checkpoint_epochs)) or 'none'})")
        return self._patches.get((run_id, layer, epoch, k),
                                 lambda: self._compute_patches(run_id, layer, epoch, k, max_images))

    def _compute_patches(self, run_id: int, layer: str, epoch: int, k: int, max_images: int) -> dict[str, Any]:
        from kernelscope.analysis.toppatches import top_patches
        from kernelscope.sources import open_source

        start = time.perf_counter()
        run = self.runs[run_id]
        data = self._datasets.get(run_id, run.dataset)
        raw = data.x_test[:max_images]  # (N, C, H, W) in [0, 1]
        result = top_patches(open_source(run, epoch=epoch).model, layer, data.normalise(raw), display=raw, k=k)
        crops = np.where(np.isfinite(result.crops), result.crops, -1.0)  # (C, k, C_in, rh, rw); -1: outside
        return {"run_id": run_id, "layer": layer, "epoch": epoch, "k": int(result.k), "n_images": int(result.n_images),
                "split": "test", "values": np.round(result.values, 5).tolist(),
                "image_index": result.image_index.tolist(), "crops": flat(crops, digits=4),
                "seconds": time.perf_counter() - start}
