"""What the channel commands (maps, patches, rf, dissect, shift) share: opening a model and its data.

A SOURCE is a run directory (``kernelscope train --out RUN``), a model file with
``--arch`` (anything :func:`kernelscope.models.load_model` reads), or ``onet``: MTCNN's
pretrained ONet (:mod:`kernelscope.models.onet`), whose output here is its face/non-face
logits (``dense6_1``, before the softmax) and whose images are upscaled to 48x48 RGB
(grey repeated) and normalised as ONet expects. Image sets are named:

- ``test``, ``train``: the run's own split (test: held out); ``probe``: the run's probe images;
- ``faces``, ``nonfaces``: the 100 + 100 ``lfw_subset`` crops;
- ``objects``: 660 held-out non-face patches (:func:`kernelscope.data.faces.held_out_patches`):
  cut at new positions and scales (seed 1000) from the bundled natural images whose patches
  are the ``faces`` data set's non-faces, none identical to a training patch (of the run's
  ``split_seed``; seed 0 for a model file). They are the faces net's own negative class,
  held out, not a novel domain: a net trained to call them non-face is confident on them;
- ``test:CLASS``/``train:CLASS``: only the images of one class of the run's dataset;
- a path to ``.npy`` (N, C, H, W) / (N, H, W) or ``.npz`` (key ``images``) with values in [0, 1].

Images are normalised as the model was trained (the run's mean/std, or ``--mean/--std``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from kernelscope.errors import KernelscopeError, suggest

NAMED_SETS = ("test", "train", "probe", "faces", "nonfaces", "objects")


@dataclass
class Source:
    model: Any
    run: Any | None
    input_shape: tuple[int, int, int] | None
    mean: list[float] | None
    std: list[float] | None
    label: str
    prepare: Callable[[np.ndarray], np.ndarray] | None = None  # raw images -> the model's size (ONet), in [0, 1]

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float32)
        if self.mean is None:
            return raw
        mean = np.asarray(self.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(1, -1, 1, 1)
        return ((raw - mean) / std).astype(np.float32)

    def init_model(self, seed: int = 0):
        """The network at initialisation: recorded (a run) or re-initialised (a model file)."""
        from kernelscope.analysis.hooks import reinitialised

        if self.run is not None:
            if 0 in self.run.checkpoint_epochs:
                return self.run.model(0)
            model = reinitialised(self.model, seed=int(self.run.manifest.get("seed", seed)))
            if 0 in self.run.epochs:  # the recorded initial kernels replace the conv weights exactly
                import torch

                from kernelscope.models.layers import get_layer

                with torch.no_grad():
                    for name, kernel in self.run.kernels(0).items():
                        get_layer(model, name).weight.copy_(torch.from_numpy(kernel))
            return model
        return reinitialised(self.model, seed=seed)


def source_options(function):
    """``SOURCE`` argument with ``--arch``, ``--epoch``, ``--mean``, ``--std``."""
    function = click.option("--std", type=float, multiple=True,
                            help="Per-channel std to normalise images (model files).")(function)
    function = click.option("--mean", type=float, multiple=True,
                            help="Per-channel mean to normalise images (model files).")(function)
    function = click.option("--epoch", type=int, default=None,
                            help="Epoch of a run to analyse (default: the last).")(function)
    function = click.option("--arch", default=None, help="Architecture of a state-dict model file.")(function)
    function = click.argument("source")(function)
    return function


def open_source(source: str, *, arch: str | None = None, epoch: int | None = None,
                mean: tuple[float, ...] = (), std: tuple[float, ...] = ()) -> Source:
    path = Path(source)
    if path.is_dir():
        from kernelscope.train.rundir import load_run

        run = load_run(path)
        model = run.model(epoch).eval()
        info = run.manifest.get("dataset", {})
        shape = tuple(int(v) for v in info["image_shape"]) if info.get("image_shape") else None
        return Source(model, run, shape, list(info.get("mean") or []) or None,
                      list(info.get("std") or []) or None, f"run {path.name}")
    if source.lower() == "onet" and not path.exists():
        return _onet_source(epoch, mean, std)
    if not path.exists():
        raise KernelscopeError(f"source {source!r} is neither a run directory nor a model file")
    if epoch is not None:
        raise KernelscopeError("--epoch needs a run directory as SOURCE")
    from kernelscope.models import load_model

    model = load_model(str(path), arch=arch).eval()
    if bool(mean) != bool(std) or len(mean) != len(std):
        raise KernelscopeError(f"give --mean and --std the same number of times, got {len(mean)} and {len(std)}")
    return Source(model, None, None, list(mean) or None, list(std) or None, f"model {path.name}")


def _onet_source(epoch: int | None, mean: tuple[float, ...], std: tuple[float, ...]) -> Source:
    """MTCNN's ONet as a face/non-face classifier (logits out) on 48x48 RGB images."""
    from torch import nn

    from kernelscope.models.onet import (
        ONET_INPUT_SHAPE,
        ONET_MEAN,
        ONET_STD,
        ONet,
        load_onet,
        preprocess_faces,
    )

    if epoch is not None:
        raise KernelscopeError("--epoch needs a run directory as SOURCE")
    if mean or std:
        raise KernelscopeError("onet brings its own normalisation, (x * 255 - 127.5) / 128; drop --mean and --std")

    class ONetLogits(ONet):
        """ONet whose forward returns the face/non-face logits (N, 2) (the softmax is an identity)."""

        def forward(self, x):
            return super().forward(x)[2]  # (N, 2): [non-face, face]

    model = ONetLogits()
    model.load_state_dict(load_onet().state_dict())
    model.softmax6_1 = nn.Identity()

    def prepare(raw: np.ndarray) -> np.ndarray:  # (N, 1|3, H, W) in [0, 1] -> (N, 3, 48, 48) in [0, 1]
        x = preprocess_faces(raw) * np.float32(ONET_STD[0]) + np.float32(ONET_MEAN[0])
        return np.clip(x, 0.0, 1.0)

    return Source(model.eval(), None, ONET_INPUT_SHAPE, list(ONET_MEAN), list(ONET_STD),
                  "MTCNN ONet (pretrained)", prepare)


def pick_layer(src: Source, layer: str | None) -> str:
    """The layer to analyse: ``layer`` checked against the model, or the deepest conv layer."""
    from kernelscope.models.layers import conv_layer_names, get_layer

    if layer is not None:
        get_layer(src.model, layer)
        return layer
    names = conv_layer_names(src.model)
    if not names:
        raise KernelscopeError("the model has no Conv2d layer; give --layer")
    return names[-1]


def load_images(src: Source, spec: str, *, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """``(inputs, raw, description)`` for a named image set (see the module docstring)."""
    raw: np.ndarray
    name, _, cls = spec.partition(":")
    if name in ("test", "train") and not Path(spec).exists():
        if src.run is None:
            raise KernelscopeError(f"image set {spec!r} needs a run directory as SOURCE")
        data = src.run.dataset()
        raw = data.x_test if name == "test" else data.x_train
        labels = data.y_test if name == "test" else data.y_train
        if cls:
            if cls not in data.classes:
                raise KernelscopeError(suggest(cls, data.classes, what="class"))
            raw = raw[labels == data.classes.index(cls)]
        description = f"{data.name} {name}" + (f" ({cls})" if cls else "")
    elif spec == "probe":
        if src.run is None:
            raise KernelscopeError("image set 'probe' needs a run directory as SOURCE")
        _, raw, _ = src.run.probe()
        description = "the run's probe images"
    elif spec in ("faces", "nonfaces"):
        from kernelscope.data import faces

        raw = faces.lfw_faces() if spec == "faces" else faces.lfw_nonfaces()
        description = f"lfw_subset {'faces' if spec == 'faces' else 'non-faces'}"
    elif spec == "objects":
        from kernelscope.data import faces

        raw = faces.held_out_patches(training_seed=_faces_split_seed(src))
        description = (f"held-out non-face patches, seed {faces.HELD_OUT_SEED}, none identical to a training patch: "
                       "the faces net's own negative class, not a novel domain")
    else:
        path = Path(spec)
        if not path.is_file():
            raise KernelscopeError(suggest(spec, NAMED_SETS, what="image set") + "; or a path to .npy/.npz")
        raw = _read_array(path)
        description = str(path)
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim == 3:
        raw = raw[:, None]
    if raw.ndim != 4:
        raise KernelscopeError(f"images {spec!r} must have shape (N, C, H, W) or (N, H, W), got {raw.shape}")
    if raw.shape[0] == 0:
        raise KernelscopeError(f"image set {spec!r} has no images (0 given); give at least one image")
    if limit is not None:
        raw = raw[:limit]
    if src.prepare is not None:
        raw = src.prepare(raw)
    if src.input_shape is not None and tuple(raw.shape[1:]) != tuple(src.input_shape):
        raise KernelscopeError(
            f"images {spec!r} are {tuple(raw.shape[1:])} but the model takes {tuple(src.input_shape)} (C, H, W)"
        )
    return src.normalise(raw), raw, description


def _faces_split_seed(src: Source) -> int:
    """The seed a faces run cut its training patches with (its ``split_seed``); 0, the default, otherwise."""
    if src.run is None:
        return 0
    info = src.run.manifest.get("dataset", {})
    return int(info.get("split_seed", 0)) if info.get("name") == "faces" else 0


def _read_array(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                key = "images" if "images" in data.files else data.files[0]
                return data[key]
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise KernelscopeError(f"cannot read images from {str(path)!r}: {error}") from None
    raise KernelscopeError(f"images file {str(path)!r} must be .npy or .npz")


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows (dicts with the same keys) as CSV, atomically."""
    import csv
    import io

    from kernelscope._io import write_bytes

    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return write_bytes(path, buffer.getvalue().encode("utf-8"))


def out_option(function):
    return click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
                        help="Folder for figures and numbers (created).")(function)
