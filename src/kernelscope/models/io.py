"""Loading users' models: ``load_model(source, arch=None)``.

Accepted sources:

- an ``nn.Module`` (returned as is);
- a run directory (the zoo model with its last epoch's weights);
- a ``.pt``/``.pth`` state dict, or a kernelscope checkpoint, plus a zoo architecture
  name (``arch``; a checkpoint names its own) - loaded with ``torch.load(weights_only=True)``;
  a file holding a pickled ``nn.Module`` is refused, since unpickling it could run code;
- a ``.safetensors`` file plus a zoo architecture name;
- TorchScript (``torch.jit.save``), loaded with ``torch.jit.load``;
- ONNX, converted to torch by :mod:`kernelscope.models.onnx_import` (common CNN ops).

For state dicts the zoo builder's shape options (``in_channels``, ``num_classes``,
``input_size``, ``kernel_size``, ``width``, ``depth``) are inferred from the tensors'
shapes unless given as keyword arguments.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from kernelscope.errors import KernelscopeError, suggest

__all__ = ["load_model", "model_from_state_dict", "infer_build_kwargs"]

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


def model_from_state_dict(state: dict[str, Any], arch: str, **build_kwargs: Any):
    """Build the zoo model ``arch`` and load ``state`` into it (strict), in eval mode."""
    from kernelscope.models.zoo import build_model

    kwargs = infer_build_kwargs(arch, state, **build_kwargs)
    model = build_model(arch, **kwargs)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise KernelscopeError(f"state dict does not fit {arch!r}: {str(error).splitlines()[0]}") from None
    return model.eval()


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any("/code/" in n or n.endswith("/constants.pkl") for n in names)


def _torch_load(path: Path) -> Any:
    import pickle

    import torch

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


def _eager_twin(scripted: Any, arch: str | None, build_kwargs: dict[str, Any]):
    """The zoo model that computes exactly what ``scripted`` computes, or None.

    TorchScript sub-modules are not ``nn.Conv2d`` instances and forward hooks on them do
    not fire, so when a zoo architecture has the same tensors *and* gives the same
    outputs on a random input, the eager zoo model is returned instead.
    """
    import torch

    state = {k: v for k, v in scripted.state_dict().items()}
    for name in [arch] if arch else _zoo_names():
        try:
            model = model_from_state_dict(state, name, **build_kwargs)
        except KernelscopeError:
            continue
        kwargs = model.kernelscope_arch["kwargs"]
        x = torch.randn(2, kwargs["in_channels"], *kwargs["input_size"], generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            try:
                same = torch.allclose(model(x), scripted(x), rtol=1e-4, atol=1e-5)
            except RuntimeError:
                same = False
        if same:
            return model
    return None


def load_model(source: Any, *, arch: str | None = None, **build_kwargs: Any):
    """Load a model from ``source`` (see the module docstring); returns an ``nn.Module`` in eval mode.

    Parameters
    ----------
    source : nn.Module, str or Path
    arch : str, optional
        Zoo architecture of a state-dict or safetensors file (a kernelscope
        checkpoint names its own).
    **build_kwargs
        Zoo builder options; those not given are inferred from the tensors' shapes.

    Examples
    --------
    >>> load_model("/nonexistent.pt")
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: model file '/nonexistent.pt' does not exist
    """
    import torch
    from torch import nn

    if isinstance(source, nn.Module):
        return source
    if not isinstance(source, (str, Path)):
        raise KernelscopeError(f"model source must be an nn.Module or a path, got {type(source).__name__}")
    path = Path(source)
    if str(source).lower() == "onet" and not path.exists():  # the pretrained MTCNN ONet (kernelscope.models.onet)
        from kernelscope.models.onet import load_onet

        return load_onet()
    if path.is_dir():
        from kernelscope.train.rundir import load_run

        return load_run(path).model(build_kwargs.pop("epoch", None))
    if not path.is_file():
        raise KernelscopeError(f"model file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from kernelscope.models.onnx_import import load_onnx

        return load_onnx(path).eval()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if arch is None:
            raise KernelscopeError(f"a safetensors file needs an architecture: arch / --arch one of "
                                   f"{', '.join(_zoo_names())}")
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise KernelscopeError(f"cannot read safetensors file {str(path)!r}: {error}") from None
        return model_from_state_dict(state, arch, **build_kwargs)
    if _is_torchscript(path):
        import warnings

        try:
            with warnings.catch_warnings():  # torch 2.9+ deprecates TorchScript; loading it still works
                warnings.filterwarnings("ignore", message=".*torch.jit.load.*", category=DeprecationWarning)
                scripted = torch.jit.load(str(path), map_location="cpu").eval()
        except RuntimeError as error:
            raise KernelscopeError(f"cannot load TorchScript {str(path)!r}: {str(error).splitlines()[0]}") from None
        return _eager_twin(scripted, arch, build_kwargs) or scripted
    obj = _torch_load(path)
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
    if arch is None:
        raise KernelscopeError(f"a state dict needs an architecture: arch / --arch one of {', '.join(_zoo_names())}")
    return model_from_state_dict(state, arch, **build_kwargs)
