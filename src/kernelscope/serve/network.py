"""The network view's sources: every conv layer's feature maps for one image, a cell explained, a channel's analyses.

A *network* is anything the server was started with: each run directory (a run's
checkpoints give the epochs) and each other SOURCE (a model file, a pretrained name
of ``kernelscope models``), all opened with :func:`kernelscope.sources.open_source`
and addressed by index (``/api/network/0/...``), never by path.

The image is named in the request: ``probe:I`` (a run's probe image), ``sample:NAME``
(a bundled sample image) or ``upload:ID`` (an image posted to ``/api/network/upload``,
at most :data:`MAX_UPLOAD_PIXELS` pixels within the server's body limit; kept in memory
downscaled to :data:`UPLOAD_KEPT` px, the last :data:`MAX_UPLOADS`). It is brought to the model's input with ``Source.fit``
and ``Source.normalise``, as every analysis does.

Feature maps are the convs' own outputs (pre-activation; what a clicked cell's total
is). Wide layers show a sample of channels: ``max_channels`` evenly spaced ones
(every ``C // max_channels``-th, starting at 0), and the answer lists which.

The channel's analyses are slow on CPU; each is computed once per (network, layer,
epoch[, channel]) in a background thread and cached; until it is ready a request
answers ``{"status": "computing"}`` and the page asks again.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kernelscope._io import finite_or_none
from kernelscope.errors import KernelscopeError, suggest
from kernelscope.serve.runs import UnknownRun, _Cache

__all__ = ["NetworkStore", "MAX_UPLOAD_PIXELS", "MAX_UPLOADS", "CHANNEL_PARTS", "VIS_STEPS"]

MAX_UPLOAD_PIXELS = 2048 * 2048  #: width x height of an uploaded image (its bytes: the server's body limit)
MAX_UPLOADS = 16  #: uploaded images kept in memory (oldest dropped)
UPLOAD_KEPT = 512  #: an upload is kept downscaled to this longer side (networks take 224 px or less)
UPLOAD_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
SIZE_WITHOUT_SPEC = 128  #: side of the input of a model that does not state its input size
CHANNEL_PARTS = ("atlas", "patches", "template", "visualization")
VIS_STEPS = 48  #: optimisation steps of an on-request visualisation (the CLI's default is 128: minutes on CPU)
MAX_IMAGES = 300  #: data-set images for top patches and templates
VIS_IMAGES = 100  #: of which a visualisation's data-set maximum (its ratio's denominator) is taken over


def as_bytes_b64(array: np.ndarray, lo: float, hi: float) -> str:
    """``array`` mapped linearly from ``[lo, hi]`` to 0..255 (uint8, C order), base64.

    Examples
    --------
    >>> base64.b64decode(as_bytes_b64(np.array([-1.0, 0.0, 1.0]), -1.0, 1.0))
    b'\\x00\\x80\\xff'
    """
    span = hi - lo if hi > lo else 1.0
    q = np.clip(np.round((np.asarray(array, np.float64) - lo) / span * 255), 0, 255).astype(np.uint8)
    return base64.b64encode(q.tobytes()).decode("ascii")


class _Jobs:
    """Background computations by key: ``status(key, compute)`` starts one once, then reports it."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self.items: OrderedDict[Any, dict[str, Any]] = OrderedDict()
        self.lock = threading.Lock()

    def status(self, key: Any, compute) -> dict[str, Any]:
        with self.lock:
            job = self.items.get(key)
            if job is None:
                job = {"status": "computing", "started": time.perf_counter(), "result": None, "message": ""}
                self.items[key] = job
                while len(self.items) > self.size:
                    self.items.popitem(last=False)
                # not a daemon: the interpreter waits for a running computation at exit; a daemon thread
                # still inside torch when Python exits aborts the process ('terminate called ...')
                threading.Thread(target=self._run, args=(job, compute), daemon=False).start()
            return dict(job)

    @staticmethod
    def _run(job: dict[str, Any], compute) -> None:
        try:
            result = compute()
            job.update(result=result, status="done", seconds=time.perf_counter() - job["started"])
        except KernelscopeError as error:
            job.update(status="error", message=str(error).splitlines()[0] if str(error) else "failed")
        except Exception as error:  # noqa: BLE001 - a bug; reported as one line, logged by the thread
            job.update(status="error", message=f"internal error ({type(error).__name__}: {error})"[:300])


class NetworkStore:
    """The networks of the network view: runs first (same indices as ``/api/runs``), then other SOURCEs.

    Parameters
    ----------
    runs : sequence of Run
        The run directories the server serves (already loaded).
    sources : sequence of str
        Other SOURCEs (model files, pretrained names); each is opened now, so a bad one fails at start.
    """

    def __init__(self, runs: Sequence[Any] = (), sources: Sequence[str | Path] = (), *, atlas_n_null: int = 300) -> None:
        from kernelscope.sources import open_source

        self.entries: list[dict[str, Any]] = []
        for run in runs:
            self.entries.append({"kind": "run", "run": run, "path": run.path,
                                 "label": run.path.resolve().name or str(run.path)})
        for source in sources:
            src = open_source(source)
            if not src.runnable:
                raise KernelscopeError(f"source {str(source)!r} cannot be run (its graph is not available); "
                                       "the network view needs a runnable model")
            _ = src.model  # read now: a bad file fails at start, and the first page does not wait for it
            self.entries.append({"kind": src.kind, "source": src, "label": src.label})
        self._models = _Cache(6)
        self._inputs = _Cache(32)
        self._maps = _Cache(16)
        self._layers = _Cache(24)
        self._datasets = _Cache(4)
        self._jobs = _Jobs()
        self.atlas_n_null = int(atlas_n_null)
        # hooks live on the module, so two forward passes of one model at once would read each other's layers:
        # requests answered at once (maps, a cell) take turns on the shared models; background jobs use copies
        self._forward_lock = threading.Lock()
        self.uploads: OrderedDict[str, np.ndarray] = OrderedDict()
        self._upload_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.entries)

    # ---- sources and epochs ----------------------------------------------------------------

    def _entry(self, sid: int) -> dict[str, Any]:
        if not 0 <= sid < len(self.entries):
            given = f"networks 0..{len(self.entries) - 1}" if self.entries else \
                "no network (start `kernelscope serve RUN_OR_SOURCE`)"
            raise UnknownRun(f"network {sid} is not served; this server has {given}")
        return self.entries[sid]

    def epochs(self, sid: int) -> list[int]:
        entry = self._entry(sid)
        return list(entry["run"].checkpoint_epochs) if entry["kind"] == "run" else []

    def _epoch(self, sid: int, epoch: int | None) -> int | None:
        entry = self._entry(sid)
        if entry["kind"] != "run":
            if epoch not in (None, -1):
                raise KernelscopeError(f"network {sid} ({entry['label']}) is not a run: it has no epochs; "
                                       f"omit epoch")
            return None
        available = self.epochs(sid)
        if not available:
            raise KernelscopeError(f"run {sid} has no checkpoint (checkpoints/epoch_*.pt): the network view "
                                   "needs the model's weights; train with checkpoints")
        if epoch is None or epoch == -1:
            return available[-1]
        if epoch not in available:
            raise KernelscopeError(f"epoch {epoch} has no checkpoint in run {sid} (checkpoint epochs: "
                                   f"{', '.join(map(str, available))})")
        return epoch

    def source(self, sid: int, epoch: int | None):
        """The opened Source of network ``sid`` at ``epoch`` (checked; cached)."""
        entry = self._entry(sid)
        epoch = self._epoch(sid, epoch)
        if entry["kind"] != "run":
            return entry["source"]
        from kernelscope.sources import open_source

        return self._models.get((sid, epoch), lambda: open_source(entry["run"], epoch=epoch))

    def layer(self, sid: int, epoch: int | None, layer: str | None) -> str:
        layers = self.source(sid, epoch).conv_layers
        if not layers:
            raise KernelscopeError(f"network {sid} has no conv layer")
        if layer is None:
            return layers[0]
        if layer not in layers:
            raise KernelscopeError(suggest(layer, layers, what="conv layer"))
        return layer

    def info(self, sid: int) -> dict[str, Any]:
        from kernelscope.data.images import sample_image_names

        entry = self._entry(sid)
        epochs = self.epochs(sid)
        src = self.source(sid, epochs[-1] if epochs else None) if (entry["kind"] != "run" or epochs) else None
        probes = 0
        if entry["kind"] == "run":
            probes = int(self._probe(sid)[1].shape[0])
        images = [f"probe:{i}" for i in range(probes)] + [f"sample:{n}" for n in sample_image_names()]
        return {"id": sid, "label": str(entry["label"]), "kind": entry["kind"], "epochs": epochs,
                "conv_layers": src.conv_layers if src is not None else [],
                "input_shape": list(self._shape(src)) if src is not None else [],
                "images": images,
                "note": "" if src is not None else "this run has no checkpoint: the network view needs weights"}

    def _probe(self, sid: int):
        run = self._entry(sid)["run"]
        return self._inputs.get(("probe", sid), run.probe)

    def _shape(self, src) -> tuple[int, int, int]:
        if src.input_shape is not None:
            return tuple(src.input_shape)
        from torch import nn

        first = next((m for m in src.model.modules() if isinstance(m, nn.Conv2d)), None)
        c = first.in_channels if first is not None else 3
        return (c, SIZE_WITHOUT_SPEC, SIZE_WITHOUT_SPEC)

    # ---- the image -------------------------------------------------------------------------

    def add_upload(self, data: bytes) -> dict[str, Any]:
        """Decode an uploaded image (PNG, JPEG, GIF, BMP, WebP; at most MAX_UPLOAD_PIXELS) and keep it."""
        import io

        from PIL import Image, UnidentifiedImageError

        if not data:
            raise KernelscopeError("the upload is empty; send the image file's bytes as the request body")
        problem = None
        try:
            with Image.open(io.BytesIO(data)) as image:
                w, h = image.size
                if image.format not in UPLOAD_FORMATS:
                    problem = f"uploaded image is {image.format}; send one of {', '.join(UPLOAD_FORMATS)}"
                elif w * h > MAX_UPLOAD_PIXELS:
                    problem = (f"uploaded image is {w}x{h} = {w * h} pixels; at most {MAX_UPLOAD_PIXELS} "
                               "(2048x2048) are accepted")
                else:
                    picture = image.convert("RGB")
                    picture.thumbnail((UPLOAD_KEPT, UPLOAD_KEPT), Image.Resampling.LANCZOS)  # memory: <= 3 MB each
                    rgb = np.asarray(picture, dtype=np.float32) / 255.0  # (h, w, 3), longer side <= UPLOAD_KEPT
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
            raise KernelscopeError(f"the upload is not a readable image ({type(error).__name__}); send a PNG or "
                                   "JPEG file") from None
        if problem is not None:
            raise KernelscopeError(problem)
        key = hashlib.sha256(data).hexdigest()[:16]
        with self._upload_lock:
            self.uploads[key] = rgb
            self.uploads.move_to_end(key)
            while len(self.uploads) > MAX_UPLOADS:
                self.uploads.popitem(last=False)
        return {"image": f"upload:{key}", "width": int(w), "height": int(h)}

    def _raw_image(self, sid: int, image: str, src) -> tuple[np.ndarray, str]:
        """``(raw (1, C, H, W) in [0, 1] at the model's input, description)``."""
        from kernelscope.data.images import load_image, sample_image_names

        kind, _, name = image.partition(":")
        c = self._shape(src)[0]
        if kind == "probe":
            entry = self._entry(sid)
            if entry["kind"] != "run":
                raise KernelscopeError(f"image {image!r}: network {sid} is not a run and has no probe images; "
                                       "use sample:NAME or upload one")
            raw = self._probe(sid)[1]  # (P, C, H, W)
            if not name.isdigit() or not 0 <= int(name) < raw.shape[0]:
                raise KernelscopeError(f"image {image!r}: probe must be 0..{raw.shape[0] - 1}")
            return raw[int(name)][None].astype(np.float32), f"probe image {int(name)} of the run"
        if kind == "sample":
            if name not in sample_image_names():
                raise KernelscopeError(suggest(name, sample_image_names(), what="sample image"))
            picture = load_image(f"sample:{name}", gray=(c == 1))  # (H, W) or (H, W, 3)
            what = f"bundled sample image {name!r}"
        elif kind == "upload":
            with self._upload_lock:
                picture = self.uploads.get(name)
            if picture is None:
                raise KernelscopeError(f"image {image!r} is not (or no longer) uploaded; upload it again")
            what = "the uploaded image"
            if c == 1:
                picture = picture @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)  # BT.709 luminance
        else:
            raise KernelscopeError(f"image must be probe:I, sample:NAME or upload:ID; got {image!r}")
        picture = np.asarray(picture, dtype=np.float32)
        chw = picture[None] if picture.ndim == 2 else picture.transpose(2, 0, 1)  # (C, H, W)
        raw = chw[None]  # (1, C, H, W)
        if src.spec.prepare is None and src.spec.shape is None:
            from kernelscope.sources import resize_images

            return resize_images(raw, self._shape(src)), what + f", resized to {SIZE_WITHOUT_SPEC} px"
        return src.fit(raw), what

    def prepared(self, sid: int, epoch: int | None, image: str):
        """``(src, inputs (1, C, H, W), raw (1, C, H, W), description)`` (cached per network and image)."""
        src = self.source(sid, epoch)
        raw, what = self._inputs.get((sid, image), lambda: self._raw_image(sid, image, src))
        return src, src.normalise(raw), raw, what

    # ---- the network view ------------------------------------------------------------------

    def maps(self, sid: int, *, image: str, epoch: int | None = None, max_channels: int = 8) -> dict[str, Any]:
        epoch = self._epoch(sid, epoch)
        return self._maps.get((sid, image, epoch, max_channels),
                              lambda: self._compute_maps(sid, image, epoch, max_channels))

    def _compute_maps(self, sid: int, image: str, epoch: int | None, max_channels: int) -> dict[str, Any]:
        import torch

        from kernelscope.analysis.hooks import capture, read_point

        start = time.perf_counter()
        src, inputs, raw, what = self.prepared(sid, epoch, image)
        model = src.model
        layers = src.conv_layers
        with self._forward_lock, torch.no_grad(), capture(model, layers) as out:
            model(torch.from_numpy(np.ascontiguousarray(inputs)).to(src.device))
        shown = []
        for name in layers:
            if name not in out:  # a conv that does not run on this path
                continue
            value = out[name][0].float().cpu().numpy()  # (C, H', W')
            c = value.shape[0]
            step = max(1, -(-c // max_channels))
            channels = list(range(0, c, step))[:max_channels]
            part = value[channels]  # (c_shown, H', W')
            lo, hi = float(part.min()), float(part.max())
            m = max(abs(lo), abs(hi)) or 1.0
            shown.append({"layer": name, "shape": list(value.shape), "channels": channels,
                          "sample": "all channels" if step == 1 else
                          f"{len(channels)} of {c} channels: every {step}th from 0",
                          "read_at": read_point(model, name, at="activation")[1],
                          "vmin": lo, "vmax": hi, "scale": m, "data": as_bytes_b64(part, -m, m)})
        raw_img = np.clip(raw[0], 0, 1)  # (C, H, W)
        return {"network": sid, "label": str(self._entry(sid)["label"]), "epoch": epoch, "image": image,
                "image_note": what, "input": {"shape": list(raw_img.shape), "data": as_bytes_b64(raw_img, 0.0, 1.0)},
                "layers": shown, "seconds": time.perf_counter() - start,
                "note": "feature maps are each conv's own output (pre-activation), on a diverging scale "
                        "symmetric about 0 per layer; click a cell for its explanation"}

    def cell(self, sid: int, *, image: str, layer: str, channel: int, row: int, col: int,
             epoch: int | None = None) -> dict[str, Any]:
        from kernelscope.analysis.cell import explain_cell

        epoch = self._epoch(sid, epoch)
        layer = self.layer(sid, epoch, layer)
        src, inputs, _, what = self.prepared(sid, epoch, image)
        with self._forward_lock:
            result = explain_cell(src.model, layer, inputs, channel, row, col).to_dict()
        result.update(network=sid, epoch=epoch, image=image, image_note=what)
        for key in ("network_post", "post", "total", "network_total"):
            result[key] = finite_or_none(result[key])
        return result

    # ---- a channel's analyses ------------------------------------------------------------------

    def channel(self, sid: int, *, layer: str, channel: int, part: str, epoch: int | None = None) -> dict[str, Any]:
        if part not in CHANNEL_PARTS:
            raise KernelscopeError(f"part must be one of {', '.join(CHANNEL_PARTS)}; got {part!r}")
        epoch = self._epoch(sid, epoch)
        layer = self.layer(sid, epoch, layer)
        src = self.source(sid, epoch)
        from kernelscope.models.layers import get_layer

        n = get_layer(src.model, layer).out_channels
        if not 0 <= channel < n:
            raise KernelscopeError(f"channel must be 0..{n - 1} for layer {layer!r}; got {channel}")
        key = (sid, layer, epoch, part) + ((channel,) if part == "visualization" else ())
        job = self._jobs.status(key, lambda: self._compute_part(sid, epoch, layer, part, channel))
        out = {"network": sid, "layer": layer, "channel": channel, "epoch": epoch, "part": part,
               "status": job["status"], "message": job["message"], "seconds": job.get("seconds")}
        if job["status"] == "done":
            result = job["result"]
            out["result"] = result if part == "visualization" else result(channel)
        return out

    def _dataset(self, sid: int, epoch: int | None):
        """``(inputs, raw, description)``: a run's test split, else the bundled ``faces``."""
        src = self.source(sid, epoch)
        spec = self._spec(sid)

        def load():
            with self._forward_lock:  # a model of unknown input size is run once on the images
                return src.images(spec, limit=MAX_IMAGES)

        return self._datasets.get((sid, epoch), load)

    def _spec(self, sid: int) -> str:
        """The image set of a network's channel analyses: a run's test split, else the bundled faces (as the CLI)."""
        return "test" if self._entry(sid)["kind"] == "run" else "faces"

    def _top(self, sid: int, epoch: int | None, layer: str):
        from kernelscope.analysis.toppatches import top_patches

        inputs, raw, _ = self._dataset(sid, epoch)
        return self._layers.get(("top", sid, epoch, layer),
                                lambda: top_patches(self._own_model(sid, epoch), layer, inputs, display=raw, k=6))

    def _own_model(self, sid: int, epoch: int | None):
        """A private copy of the model for one background job (its hooks cannot meet another thread's pass)."""
        import copy

        with self._forward_lock:
            return copy.deepcopy(self.source(sid, epoch).model).eval()

    def _compute_part(self, sid: int, epoch: int | None, layer: str, part: str, channel: int):
        src = self.source(sid, epoch)
        if part == "atlas":
            from kernelscope.analysis.atlas import atlas_of

            entry = self._entry(sid)
            target = entry["run"].path if entry["kind"] == "run" else src.model
            n_null = self.atlas_n_null
            result = atlas_of(target, layer=layer, epoch=epoch, with_evolution=False, n_null=n_null) \
                if entry["kind"] == "run" else atlas_of(target, layer=layer, with_evolution=False, n_null=n_null)
            d = result.to_dict()

            def atlas_channel(c: int) -> dict[str, Any]:
                r = d["kernels"][c] if c < len(d["kernels"]) else {}
                best = r.get("best_match") or {}
                return {"kernel_class": str(r.get("class", "?")), "best_family": str(best.get("family", "")),
                        "best_name": str(best.get("name", "")), "best_params": str(best.get("params", "")),
                        "best_score": finite_or_none(best.get("score")),
                        "scores": {str(k): finite_or_none(v) for k, v in (r.get("scores") or {}).items()},
                        "thresholds": {k: finite_or_none(v) for k, v in d["thresholds"].items()},
                        "notes": [str(n) for n in d["notes"]][:3]}

            return atlas_channel
        if part == "patches":
            top = self._top(sid, epoch, layer)
            crops = np.where(np.isfinite(top.crops), top.crops, -1.0)  # (C, k, C_in, rh, rw)

            def patches_channel(c: int) -> dict[str, Any]:
                return {"values": [float(v) for v in top.values[c]], "image_index": top.image_index[c].tolist(),
                        "crops": _flat(crops[c]), "n_images": int(top.n_images),
                        "images": self._dataset(sid, epoch)[2]}

            return patches_channel
        if part == "template":
            from kernelscope.analysis.correlation import linear_templates

            inputs, _, description = self._dataset(sid, epoch)
            result = self._layers.get(("template", sid, epoch, layer),
                                      lambda: linear_templates(self._own_model(sid, epoch), layer, inputs, at="conv"))

            def template_channel(c: int) -> dict[str, Any]:
                return {"template": _flat(result.templates[c]), "r2": finite_or_none(float(result.r2[c])),
                        "read": result.read, "pool": int(result.pool), "images": description,
                        "kernel": _flat(kernel[c])}

            kernel = _kernel(src.model, layer)  # (O, C/groups, kh, kw)

            return template_channel
        # the visualisation, its controls and the projections: visualize_source, the CLI's and the report's path
        from dataclasses import replace

        from kernelscope.analysis.visualize import visualize_source

        private = replace(src, _model=self._own_model(sid, epoch))  # the same Source with its own model copy
        vis = visualize_source(private, layer=layer, channels=[channel], images=self._spec(sid), limit=VIS_IMAGES,
                               steps=VIS_STEPS, random_directions=1, k=6)
        top = vis.top
        crops = np.where(np.isfinite(top.crops[channel]), top.crops[channel], -1.0)  # (k, C_in, rh, rw)
        projections = {}
        for method, proj in vis.projections.items():
            p = proj.crops[0]  # (k, C_in, rh, rw)
            projections[method] = _flat(np.where(np.isfinite(p), p, 0.0))
        return {"image": _flat(np.clip(vis.images[0], 0, 1)), "steps": int(vis.steps),
                "reached": finite_or_none(float(vis.reached[0])), "data_max": finite_or_none(float(vis.data_max[0])),
                "ratio": finite_or_none(float(vis.ratio[0])),
                "init_ratio": None if vis.init_ratio is None else finite_or_none(float(vis.init_ratio[0])),
                "random_ratio": finite_or_none(float(np.nanmean(vis.random_ratio))) if vis.random_ratio.size else None,
                "read": vis.read, "images": getattr(vis, "images_description", ""),
                "patches": _flat(crops), "values": [float(v) for v in top.values[channel]],
                "projections": projections}


def _kernel(model, layer: str) -> np.ndarray:
    from kernelscope.models.layers import get_layer

    return get_layer(model, layer).weight.detach().float().cpu().numpy()  # (O, C/groups, kh, kw)


def _flat(array: np.ndarray) -> dict[str, Any]:
    from kernelscope.serve.runs import flat

    return flat(array, digits=4)
