"""A ``Source``: anything a user can name as SOURCE, opened once, with what every analysis needs.

:func:`open_source` is the one place that turns what the user named into a model:

=============================  ===============================================================
SOURCE                         becomes
=============================  ===============================================================
a run directory                the run's zoo model at an epoch (default: the last); its input
                               spec, classes, image sets (``test``, ``train``, ``probe``) and its
                               recorded epoch 0 as the initialisation control
``.pt``/``.pth`` state dict    an architecture (``arch``; a kernelscope checkpoint names its
or kernelscope checkpoint      own) loaded strictly, read with ``torch.load(weights_only=True)``;
                               without one, every 4-D weight as a conv layer (weight analyses
                               only: running it asks for ``arch``)
``.safetensors``               the same, with ``arch``
TorchScript                    read as data, never run: the zoo model it is a copy of (same
                               module tree and tensors), else its conv weights only (weight
                               analyses work; running it needs ``trust_code=True``, which runs
                               the file's own code with your permissions)
``.onnx``                      converted to torch (:mod:`kernelscope.models.onnx_import`)
an ``nn.Module``               itself
``onet``                       MTCNN's pretrained ONet, its output the face/non-face logits,
                               on 48x48 RGB input normalised as ONet expects
=============================  ===============================================================

Adding a model format means adding a branch to :func:`open_source` and nothing else.

A :class:`Source` carries the module (eval mode), its conv layers, its input spec
(channels, size, normalisation, and how raw images are brought to the model's size),
its image sets, its classes, and its initialisation control (:meth:`Source.init_model`,
:meth:`Source.init_kernels`: one implementation, :mod:`kernelscope.models.init`). Its
``model``'s forward returns logits (ONet is wrapped so that it does).

Image sets (:meth:`Source.images`):

- ``test``, ``train``: the run's own split (test: held out); ``probe``: the run's probe images;
- ``test:CLASS``/``train:CLASS``: only the images of one class of the run's dataset;
- ``faces``, ``nonfaces``: the 100 + 100 ``lfw_subset`` crops;
- ``objects``: 660 held-out non-face patches (:func:`kernelscope.data.faces.held_out_patches`):
  cut at new positions and scales (seed 1000) from the bundled natural images whose patches
  are the ``faces`` data set's non-faces, none identical to a training patch (of the run's
  ``split_seed``; seed 0 otherwise). They are the faces net's own negative class, held out,
  not a novel domain;
- a path to ``.npy`` (N, C, H, W) / (N, H, W) or ``.npz`` (key ``images``) with values in [0, 1].

A folder of image files, however large, is not an image set held in memory: :meth:`Source.image_folder`
lists it at the model's input spec and :func:`kernelscope.data.folder.load_batches` streams it in batches
(worker processes decode and resize; unreadable files are skipped and reported).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kernelscope.data.folder import resize_images
from kernelscope.errors import KernelscopeError, suggest

if TYPE_CHECKING:
    from torch import nn

    from kernelscope.data.folder import ImageFolder
    from kernelscope.train.rundir import Run

__all__ = ["Source", "InputSpec", "open_source", "load_model", "NAMED_SETS"]

NAMED_SETS = ("test", "train", "probe", "faces", "nonfaces", "objects")


@dataclass
class InputSpec:
    """What a model takes: ``shape`` (C, H, W) when known, per-channel ``mean``/``std`` for
    ``(x - mean) / std`` of images in [0, 1] (None: no normalisation), and ``prepare``, which
    brings raw images in [0, 1] to the model's size (None: taken as they are)."""

    shape: tuple[int, int, int] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    prepare: Callable[[np.ndarray], np.ndarray] | None = None


@dataclass
class Source:
    """An opened SOURCE (see the module docstring); make one with :func:`open_source`.

    Attributes
    ----------
    model : nn.Module
        In eval mode; its forward returns the logits (read on first use: ``loader()``).
    label : str
        What it is, for printed lines and figures (``"run faces"``, ``"model net.pt"``).
    kind : {"run", "file", "module", "pretrained"}
    spec : InputSpec
    run : Run or None
        The run directory, for a run.
    classes : list of str or None
    runnable : bool
        False when only the weights were loaded (a TorchScript file outside the zoo opened
        without ``trust_code``, a state dict without ``arch``): weight analyses work, running
        it raises a one-line error saying what to do.
    device : str
        Where the model runs (``"cpu"``, ``"cuda:0"``).
    """

    loader: Callable[[], Any] = field(repr=False)
    label: str
    kind: str
    spec: InputSpec = field(default_factory=InputSpec)
    run: Run | None = None
    classes: list[str] | None = None
    runnable: bool = True
    device: str = "cpu"
    _model: Any = field(default=None, repr=False)

    @property
    def model(self) -> nn.Module:
        """The module, in eval mode, on :attr:`device` (read on first use)."""
        if self._model is None:
            self._model = self.loader().to(self.device)
        return self._model

    def architecture(self) -> nn.Module | None:
        """The model's architecture: for a run rebuilt from its manifest (no checkpoint needed; None when
        the manifest names no architecture kernelscope can build), else the model.

        Weights are not what matters here (layer names, shapes, ``reset_parameters``); the
        caller's random stream is left untouched.
        """
        if self.run is None:
            return self.model
        import torch

        state = torch.random.get_rng_state()
        try:
            return self.run.architecture().eval()
        except (KernelscopeError, TypeError, KeyError):
            return None
        finally:
            torch.random.set_rng_state(state)

    # ------------------------------------------------------------------ what the model is
    @property
    def input_shape(self) -> tuple[int, int, int] | None:
        return self.spec.shape

    @property
    def mean(self) -> list[float] | None:
        return self.spec.mean

    @property
    def std(self) -> list[float] | None:
        return self.spec.std

    @property
    def conv_layers(self) -> list[str]:
        """Dotted names of the model's 2-D conv layers, in definition order."""
        from kernelscope.models.layers import conv_layer_names

        return conv_layer_names(self.model)

    def pick_layer(self, layer: str | None = None) -> str:
        """``layer`` checked against the model, or the deepest conv layer."""
        from kernelscope.models.layers import get_layer

        if layer is not None:
            get_layer(self.model, layer)
            return layer
        names = self.conv_layers
        if not names:
            raise KernelscopeError(f"{self.label} has no Conv2d layer; give --layer")
        return names[-1]

    # ------------------------------------------------------------------ its initialisation control
    def init_model(self, seed: int = 0) -> nn.Module:
        """The network at initialisation: a run's recorded epoch 0, else PyTorch's default init.

        For a run without an epoch-0 checkpoint the network is re-initialised with the
        run's seed and the recorded epoch-0 kernels replace the conv weights exactly.
        """
        import torch

        from kernelscope.models.init import reinitialised
        from kernelscope.models.layers import get_layer

        if self.run is None:
            return reinitialised(self.model, seed=seed)
        if 0 in self.run.checkpoint_epochs:
            return self.run.model(0).to(self.device)
        model = reinitialised(self.model, seed=int(self.run.manifest.get("seed", seed)))
        if 0 in self.run.epochs:
            with torch.no_grad():
                for name, kernel in self.run.kernels(0).items():
                    get_layer(model, name).weight.copy_(torch.from_numpy(kernel))
        return model

    def init_kernels(self, layer: str, n: int, *, seed: int = 0) -> np.ndarray | None:
        """``n`` kernels of ``layer`` from repeated fresh initialisations (the atlas's init null)."""
        from kernelscope.models.init import init_kernels
        from kernelscope.models.layers import get_layer

        architecture = self.architecture()
        return None if architecture is None else init_kernels(get_layer(architecture, layer), n, seed=seed)

    # ------------------------------------------------------------------ its images
    def normalise(self, raw: np.ndarray) -> np.ndarray:
        """``(raw - mean) / std`` per channel, float32 (raw unchanged when there is no normalisation)."""
        raw = np.asarray(raw, dtype=np.float32)
        if self.spec.mean is None:
            return raw
        mean = np.asarray(self.spec.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.spec.std, dtype=np.float32).reshape(1, -1, 1, 1)
        return ((raw - mean) / std).astype(np.float32)

    def fit(self, raw: np.ndarray) -> np.ndarray:
        """Raw images (N, c, h, w) in [0, 1] brought to the model's input: its own ``prepare``, else a
        bilinear resize to the input size and grey <-> RGB (no normalisation)."""
        raw = np.asarray(raw, dtype=np.float32)
        if self.spec.prepare is not None:
            return self.spec.prepare(raw)
        if self.spec.shape is None:
            return raw
        return resize_images(raw, self.spec.shape)

    def images(self, spec: str, *, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
        """``(inputs, raw, description)`` for a named image set (see the module docstring).

        ``raw`` is in [0, 1] at the model's size; ``inputs`` is ``raw`` normalised.
        """
        raw, description = self._raw_images(spec)
        raw = np.asarray(raw, dtype=np.float32)
        if raw.ndim == 3:
            raw = raw[:, None]
        if raw.ndim != 4:
            raise KernelscopeError(f"images {spec!r} must have shape (N, C, H, W) or (N, H, W), got {raw.shape}")
        if raw.shape[0] == 0:
            raise KernelscopeError(f"image set {spec!r} has no images (0 given); give at least one image")
        if limit is not None:
            raw = raw[:limit]
        if self.spec.prepare is not None:
            raw = self.spec.prepare(raw)
        if self.spec.shape is not None and tuple(raw.shape[1:]) != tuple(self.spec.shape):
            raise KernelscopeError(
                f"images {spec!r} are {tuple(raw.shape[1:])} but the model takes {tuple(self.spec.shape)} (C, H, W)"
            )
        inputs = self.normalise(raw)
        if self.spec.shape is None and self.runnable:
            self._check_runs_on(inputs[:1], spec)
        return inputs, raw, description

    def image_folder(self, path: str | os.PathLike) -> ImageFolder:
        """The image files under folder ``path`` as an :class:`~kernelscope.data.folder.ImageFolder` at the
        model's input spec: resized to :attr:`input_shape` (grey <-> RGB), then the source's ``prepare``.
        A model of unknown input size gets the channels of its first conv layer, each image at its
        own size (grey and colour photos can then share a batch; sizes must agree).

        Nothing is decoded here; load batches with :func:`kernelscope.data.folder.load_batches`
        (``normalise=self.normalise`` gives the inputs). Large folders go this way; named sets
        and ``.npy`` files through :meth:`images`.

        Examples
        --------
        >>> import tempfile
        >>> from PIL import Image
        >>> from kernelscope.data.folder import load_batches
        >>> root = tempfile.mkdtemp()
        >>> Image.new("RGB", (64, 48), (255, 255, 255)).save(f"{root}/white.jpg")
        >>> src = open_source("onet")
        >>> ds = src.image_folder(root)
        >>> batch = next(load_batches(ds, range(len(ds)), batch_size=8, normalise=src.normalise))
        >>> batch.raw.shape, batch.inputs.shape
        ((1, 3, 48, 48), (1, 3, 48, 48))
        """
        from kernelscope.data.folder import ImageFolder

        shape: tuple[int, int | None, int | None] | None = self.spec.shape
        if shape is None and self.runnable:
            from torch import nn

            first = next((m for m in self.model.modules() if isinstance(m, nn.Conv2d)), None)
            if first is not None and first.in_channels in (1, 3):
                shape = (first.in_channels, None, None)
        return ImageFolder(path, shape=shape, prepare=self.spec.prepare)

    def _check_runs_on(self, one: np.ndarray, spec: str) -> None:
        """A model whose input size is not known: one forward pass on one image, a failure as one line."""
        import torch

        try:
            with torch.no_grad():
                self.model(torch.from_numpy(np.ascontiguousarray(one)).to(self.device))
        except (RuntimeError, ValueError) as error:
            detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise KernelscopeError(f"{self.label} cannot run on images {spec!r} of shape {tuple(one.shape[1:])} "
                                   f"(C, H, W): {detail}; give images of the size it was built for") from None

    def _raw_images(self, spec: str) -> tuple[np.ndarray, str]:
        from kernelscope.data import faces

        name, _, cls = spec.partition(":")
        if name in ("test", "train") and not Path(spec).exists():
            if self.run is None:
                raise KernelscopeError(f"image set {spec!r} needs a run directory as SOURCE")
            data = self.run.dataset()
            raw = data.x_test if name == "test" else data.x_train
            labels = data.y_test if name == "test" else data.y_train
            if cls:
                if cls not in data.classes:
                    raise KernelscopeError(suggest(cls, data.classes, what="class"))
                raw = raw[labels == data.classes.index(cls)]
            return raw, f"{data.name} {name}" + (f" ({cls})" if cls else "")
        if spec == "probe":
            if self.run is None:
                raise KernelscopeError("image set 'probe' needs a run directory as SOURCE")
            return self.run.probe()[1], "the run's probe images"
        if spec in ("faces", "nonfaces"):
            raw = faces.lfw_faces() if spec == "faces" else faces.lfw_nonfaces()
            return raw, f"lfw_subset {'faces' if spec == 'faces' else 'non-faces'}"
        if spec == "objects":
            return (faces.held_out_patches(training_seed=self._faces_split_seed()),
                    f"held-out non-face patches, seed {faces.HELD_OUT_SEED}, none identical to a training patch: "
                    "the faces net's own negative class, not a novel domain")
        path = Path(spec)
        if not path.is_file():
            raise KernelscopeError(suggest(spec, NAMED_SETS, what="image set") + "; or a path to .npy/.npz")
        from kernelscope.data.formats import read_image_array

        return read_image_array(path), str(path)

    def _faces_split_seed(self) -> int:
        """The seed a faces run cut its training patches with (its ``split_seed``); 0, the default, otherwise."""
        if self.run is None:
            return 0
        info = self.run.manifest.get("dataset", {})
        return int(info.get("split_seed", 0)) if info.get("name") == "faces" else 0


def resize_masks(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of (N, h, w) masks to ``size`` (H, W).

    Examples
    --------
    >>> resize_masks(np.eye(2, dtype=bool)[None], (4, 4))[0].astype(int)
    array([[1, 1, 0, 0],
           [1, 1, 0, 0],
           [0, 0, 1, 1],
           [0, 0, 1, 1]])
    """
    n, h, w = mask.shape
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(int), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(int), w - 1)
    return mask[:, rows][:, :, cols]


# ---------------------------------------------------------------------- opening what the user named


def open_source(source: Any, *, arch: str | None = None, epoch: int | None = None,
                mean: tuple[float, ...] | list[float] = (), std: tuple[float, ...] | list[float] = (),
                trust_code: bool = False, device: str = "cpu", **build_kwargs: Any) -> Source:
    """Open SOURCE: a run directory (or its :class:`~kernelscope.train.rundir.Run`), a model file,
    an ``nn.Module`` or a pretrained name (``onet``).

    Parameters
    ----------
    source : str, PathLike, Run or nn.Module
    arch : str, optional
        Architecture of a state-dict or safetensors file: a zoo name, a standard one with
        torchvision's keys (``resnet18``, ...), or ``package.module:callable`` (imports and runs
        your code); a kernelscope checkpoint names its own.
    epoch : int, optional
        Run directories only: which epoch's weights (default: the last).
    mean, std : sequence of float
        Per-channel normalisation of images in [0, 1] (model files and modules; a run
        and ONet bring their own).
    trust_code : bool
        TorchScript only: allow running the file's own code (``torch.jit.load``) when it
        is not a copy of a zoo model. The code runs with your permissions.
    device : {"cpu", "cuda", "auto"} or "cuda:N"
        Where the model runs (``auto``: CUDA when torch sees a GPU); ``cuda`` without one
        is a one-line error. Analyses move their inputs to the model's device.
    **build_kwargs
        Zoo builder options for state dicts; those not given are inferred from the shapes.

    Examples
    --------
    >>> from torch import nn
    >>> src = open_source(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()), mean=[0.5], std=[0.25])
    >>> src.kind, src.conv_layers, float(src.normalise(np.ones((1, 1, 2, 2)))[0, 0, 0, 0])
    ('module', ['0'], 2.0)
    >>> open_source("/nonexistent.pt")
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: source '/nonexistent.pt' does not exist (give a run directory or a model file)
    """
    from kernelscope.train.distributed import resolve_device

    where = str(resolve_device(device))  # a GPU asked for and absent fails before anything is read
    opened = _open(source, arch, epoch, mean, std, trust_code, build_kwargs)
    opened.device = where
    return opened


def _open(source: Any, arch: str | None, epoch: int | None, mean: Any, std: Any, trust_code: bool,
          build_kwargs: dict[str, Any]) -> Source:
    from torch import nn

    from kernelscope.train.rundir import Run

    if bool(mean) != bool(std) or len(mean) != len(std):
        raise KernelscopeError(f"give --mean and --std the same number of times, got {len(mean)} and {len(std)}")
    if isinstance(source, Run):
        source = source.path
    if isinstance(source, nn.Module):
        _no_epoch(epoch, "an nn.Module")
        model = source.eval()
        return Source(lambda: model, type(source).__name__, "module", _spec(mean, std))
    if not isinstance(source, (str, os.PathLike)):
        raise KernelscopeError(f"SOURCE must be a run directory, a model file, an nn.Module or 'onet', got "
                               f"{type(source).__name__}")
    from kernelscope.models.pretrained import is_pretrained_name

    path = Path(source)
    if is_pretrained_name(str(source)) and not path.exists():
        return _pretrained(str(source), epoch, mean, std)
    if path.is_dir():
        if not (path / "manifest.json").is_file():
            raise KernelscopeError(f"directory {str(path)!r} is not a run directory (no manifest.json)")
        return _run(path, epoch, mean, std)
    if not path.is_file():
        raise KernelscopeError(f"source {str(source)!r} does not exist (give a run directory or a model file)")
    _no_epoch(epoch, f"model file {path.name!r}")
    try:
        model, runnable = _model_file(path, arch, trust_code, build_kwargs)
    except KernelscopeError:
        raise
    except Exception as error:  # a corrupt file can fail deep inside torch/onnx with any exception
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise KernelscopeError(f"cannot read model file {str(path)!r}: {type(error).__name__}: {detail}") from None
    return Source(lambda: model, f"model {path.name}", "file", _spec(mean, std), runnable=runnable)


def load_model(source: Any, *, arch: str | None = None, trust_code: bool = False, **build_kwargs: Any):
    """The model of :func:`open_source` alone (an ``nn.Module`` in eval mode).

    Examples
    --------
    >>> load_model("/nonexistent.pt")
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: source '/nonexistent.pt' does not exist (give a run directory or a model file)
    """
    epoch = build_kwargs.pop("epoch", None)
    return open_source(source, arch=arch, epoch=epoch, trust_code=trust_code, **build_kwargs).model


def _spec(mean: Any, std: Any) -> InputSpec:
    return InputSpec(mean=list(mean) or None, std=list(std) or None)


def _no_epoch(epoch: int | None, what: str) -> None:
    if epoch is not None:
        raise KernelscopeError(f"--epoch/epoch={epoch} applies to run directories only, not to {what}")


def _run(path: Path, epoch: int | None, mean: Any, std: Any) -> Source:
    from kernelscope.train.rundir import load_run

    if mean or std:
        raise KernelscopeError("a run brings its own normalisation (its manifest's mean/std); drop --mean and --std")
    run = load_run(path)
    if epoch is not None:
        run._epoch(epoch, run.checkpoint_epochs, "checkpoints")  # an unrecorded epoch fails now, not on first use
    info = run.manifest.get("dataset", {})
    shape = tuple(int(v) for v in info["image_shape"]) if info.get("image_shape") else None
    spec = InputSpec(shape, list(info.get("mean") or []) or None, list(info.get("std") or []) or None)
    classes = list(info.get("classes") or []) or None
    return Source(lambda: run.model(epoch).eval(), f"run {path.name}", "run", spec, run=run, classes=classes)


def _pretrained(name: str, epoch: int | None, mean: Any, std: Any) -> Source:
    """A network an installed package ships (:mod:`kernelscope.models.pretrained`), with its input spec."""
    from kernelscope.models.pretrained import get_pretrained

    entry = get_pretrained(name)
    _no_epoch(epoch, entry.name)
    if mean or std:
        own = ("(x * 255 - 127.5) / 128" if entry.name == "onet" else
               "its own" if entry.mean is None else f"mean {entry.mean}, std {entry.std}")
        raise KernelscopeError(f"{entry.name} brings its own normalisation, {own}; drop --mean and --std")
    prepare = None
    if entry.name == "onet":  # ONet's own resize of face crops (kernelscope.models.onet.preprocess_faces)
        from kernelscope.models.onet import ONET_MEAN, ONET_STD, preprocess_faces

        def prepare(raw: np.ndarray) -> np.ndarray:  # (N, 1|3, H, W) in [0, 1] -> (N, 3, 48, 48) in [0, 1]
            x = preprocess_faces(raw) * np.float32(ONET_STD[0]) + np.float32(ONET_MEAN[0])
            return np.clip(x, 0.0, 1.0)
    elif entry.shape is not None:
        shape = entry.shape

        def prepare(raw: np.ndarray) -> np.ndarray:  # bilinear resize to the network's input, grey -> RGB
            return resize_images(raw, shape)

    def build() -> Any:
        try:
            return entry.build()
        except ImportError as error:
            raise KernelscopeError(f"{entry.name} needs a package that is not installed ({error}); "
                                   f"{entry.install}, or install kernelscope[pretrained]") from None

    spec = InputSpec(entry.shape, None if entry.mean is None else list(entry.mean),
                     None if entry.std is None else list(entry.std), prepare)
    label = "MTCNN ONet (pretrained)" if entry.name == "onet" else f"{entry.name} (pretrained)"
    return Source(build, label, "pretrained", spec, classes=None if entry.classes is None else list(entry.classes))


def _model_file(path: Path, arch: str | None, trust_code: bool, build_kwargs: dict[str, Any]) -> tuple[Any, bool]:
    """(model, runnable) for a model file; every reader failure becomes one line."""
    import torch

    from kernelscope.models import io
    from kernelscope.models.standard import standard_names
    from kernelscope.models.torchscript import (
        is_torchscript,
        load_torchscript_code,
        read_torchscript,
    )
    from kernelscope.models.zoo import model_names

    architectures = ", ".join([*model_names(), *standard_names(), "package.module:callable"])

    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from kernelscope.models.onnx_import import load_onnx

        return load_onnx(path).eval(), True
    if suffix == ".safetensors":
        if arch is None:
            raise KernelscopeError(f"a safetensors file needs an architecture: arch / --arch one of {architectures}")
        return io.model_from_state_dict(io.read_safetensors(path), arch, **build_kwargs), True
    if is_torchscript(path):
        tree = read_torchscript(path)
        twin = io.zoo_twin(tree.modules, tree.state, arch, **build_kwargs)
        if twin is not None:
            return twin, True
        if trust_code:
            return load_torchscript_code(path), True
        reason = ("it is TorchScript of an architecture outside the zoo, and running it would run the file's own "
                  "code; pass --trust-code (trust_code=True) to allow that, or export it to ONNX, or save a state "
                  "dict of a zoo architecture")
        return io.weights_only_module(tree.modules, tree.state, label=f"TorchScript {path.name!r}",
                                      reason=reason), False
    obj = io.read_weights(path)
    if not isinstance(obj, dict):
        raise KernelscopeError(f"{str(path)!r} holds a {type(obj).__name__}, not a state dict")
    state = obj
    if "model" in obj and isinstance(obj["model"], dict):  # a kernelscope checkpoint
        state = obj["model"]
        config = obj.get("config") or {}
        arch = arch or config.get("model")
        for key in ("kernel_size", "width", "depth"):
            if build_kwargs.get(key) is None and config.get(key) is not None:
                build_kwargs[key] = config[key]
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise KernelscopeError(f"{str(path)!r} is a dict but not a state dict of tensors")
    if arch is None:  # the weights without the computation: enough for the atlas and kernel figures
        modules = {"": "StateDict"}
        for key, value in state.items():
            parts = key.split(".")[:-1]
            for depth in range(1, len(parts)):
                modules.setdefault(".".join(parts[:depth]), "Module")
            if key.endswith(".weight") and value.ndim == 4:
                modules[key[: -len(".weight")]] = "Conv2d"
            elif parts:
                modules.setdefault(".".join(parts), "Module")
        reason = f"a state dict holds weights, not the computation; give --arch (arch=) to run it: {architectures}"
        return io.weights_only_module(modules, state, label=f"state dict {path.name!r}", reason=reason), False
    return io.model_from_state_dict(state, arch, **build_kwargs), True
