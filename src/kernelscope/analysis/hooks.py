"""Recording the outputs of named layers of any ``nn.Module``, with hooks that are always removed.

Every channel analysis (feature maps, top patches, dissection, shift) reads layer
outputs through :func:`capture`. The hooks are registered on entry and removed in
``finally``: an exception inside the ``with`` block (or inside a callback) never
leaves a hook behind on the user's model.

Layers are addressed by dotted name (``features.0``, ``layer2.1.conv1``) through
:mod:`kernelscope.models.layers`, so an unknown name fails with the list of valid ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from kernelscope.errors import KernelscopeError
from kernelscope.models.layers import get_layer

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["capture", "forward_until", "layer_outputs", "iter_batches", "count_hooks", "model_device",
           "AT_CHOICES", "read_point"]

#: Where an activation analysis reads a conv layer: its own output ("conv", before any
#: nonlinearity) or the output of the nonlinearity that follows it ("activation").
AT_CHOICES = ("conv", "activation")

#: Module types that are activation functions, and those allowed between a conv and its activation.
_ACTIVATIONS = ("ReLU", "ReLU6", "PReLU", "LeakyReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish", "Tanh",
                "Sigmoid", "Hardswish", "Hardsigmoid", "Hardtanh", "Softplus")
_BETWEEN = ("BatchNorm2d", "GroupNorm", "InstanceNorm2d", "LayerNorm", "Identity", "Affine")  # Affine: dlib's bn


def read_point(model: nn.Module, layer: str, at: str = "activation") -> tuple[str, str]:
    """The sub-module whose output an activation analysis reads for ``layer``, and what it is.

    ``at="conv"`` reads the conv layer's own output (signed, before any nonlinearity).
    ``at="activation"`` reads the activation module that follows the conv: the next
    module registered in the same parent, with normalisation layers allowed in between
    (``conv, bn, relu`` as in torchvision and the zoo; in a residual block the module
    registered after the second conv may run after the shortcut is added, and then the
    block's output is read; a shared activation module is read at its first call, see
    :func:`capture`). Where no activation *module*
    follows (a functional ``F.relu`` in ``forward``, or the conv is last), the conv's
    own output is read and the description says so. A ``layer`` that is not a conv is
    read as it is.

    Returns
    -------
    name : str
        Dotted name of the module to hook.
    where : str
        What is read, for results and printed lines (``"features.1 (ReLU after
        features.0)"``, ``"features.0 (conv output, pre-activation)"``).

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Conv2d(2, 2, 3))
    >>> read_point(net, "0")
    ('2', '2 (ReLU after conv 0)')
    >>> read_point(net, "0", at="conv")
    ('0', '0 (conv output, pre-activation)')
    >>> read_point(net, "3")
    ('3', '3 (conv output: no activation module follows it)')
    """
    from torch import nn

    if at not in AT_CHOICES:
        raise KernelscopeError(f"at must be one of {', '.join(AT_CHOICES)}, got {at!r}")
    module = get_layer(model, layer)
    if not isinstance(module, nn.Conv2d):
        return layer, f"{layer} ({type(module).__name__} output)"
    if at == "conv":
        return layer, f"{layer} (conv output, pre-activation)"
    parent_name, _, own = layer.rpartition(".")
    parent = get_layer(model, parent_name) if parent_name else model
    siblings = list(parent.named_children())
    index = next(i for i, (name, _) in enumerate(siblings) if name == own)
    for name, child in siblings[index + 1:]:
        kind = type(child).__name__
        if kind in _ACTIVATIONS:
            full = f"{parent_name}.{name}" if parent_name else name
            return full, f"{full} ({kind} after conv {layer})"
        if kind not in _BETWEEN:
            break
    return layer, f"{layer} (conv output: no activation module follows it)"


@contextmanager
def capture(
    model: nn.Module,
    layer_names: str | Sequence[str],
    *,
    callback: Callable[[str, torch.Tensor], Any] | None = None,
    detach: bool = True,
    finite: bool = True,
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the layers ``layer_names`` while the block runs.

    A module that runs more than once in one forward pass (torchvision's ResNet blocks
    apply one ReLU module twice) is read at its first call in each pass.

    Parameters
    ----------
    model : nn.Module
        Any PyTorch module.
    layer_names : str or sequence of str
        Dotted names of sub-modules (``"features.0"``). Unknown names raise
        :class:`~kernelscope.errors.KernelscopeError` listing the valid ones.
    callback : callable, optional
        ``callback(name, output)`` is called on every forward pass instead of
        storing the output: use it to keep per-batch summaries (a running top-k)
        rather than the activations themselves. The dict then stays empty.
    detach : bool
        Store/pass ``output.detach()`` (default) so no autograd graph is kept.
    finite : bool
        Refuse non-finite outputs (default): a layer output with NaN or infinity raises
        :class:`~kernelscope.errors.KernelscopeError` naming the layer, how many values,
        and the model's non-finite parameters if any (a diverged checkpoint). Every
        activation analysis reads layers here, so none measures NaNs silently.

    Yields
    ------
    dict of str to Tensor
        ``name -> output`` of the last forward pass (filled as the model runs).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    >>> with capture(net, ["0", "1"]) as out:
    ...     _ = net(torch.zeros(1, 1, 5, 5))
    >>> sorted(out), tuple(out["0"].shape)
    (['0', '1'], (1, 2, 3, 3))
    >>> count_hooks(net)
    0
    """
    names = [layer_names] if isinstance(layer_names, str) else list(layer_names)
    if not names:
        raise KernelscopeError("layer_names is empty; give at least one layer name")
    layers = {name: get_layer(model, name) for name in names}  # validates before any hook exists
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    seen: set[str] = set()  # names already read in the current forward pass

    def new_pass(module, inputs):
        seen.clear()

    def make_hook(name: str):
        def hook(module, inputs, output):
            if name in seen:  # a module that runs again in the same pass (a shared ReLU): read its first call
                return
            seen.add(name)
            if not hasattr(output, "detach"):
                raise KernelscopeError(
                    f"layer {name!r} ({type(module).__name__}) returned {type(output).__name__}, "
                    "not a tensor; choose a layer whose output is a tensor"
                )
            value = output.detach() if detach else output
            if finite and value.is_floating_point() and not bool(value.isfinite().all()):
                raise _non_finite(model, name, value)
            if callback is not None:
                callback(name, value)
            else:
                outputs[name] = value

        return hook

    try:
        try:
            handles.append(model.register_forward_pre_hook(new_pass))
            for name, layer in layers.items():
                handles.append(layer.register_forward_hook(make_hook(name)))
        except RuntimeError as error:  # torch: "register_forward_hook is not supported on ScriptModules"
            raise scripted_hook_error(error, names) from None
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def _non_finite(model: nn.Module, name: str, value: torch.Tensor) -> KernelscopeError:
    """One line for a layer output with NaN or infinity: how many, and which parameters are not finite."""
    bad = int((~value.isfinite()).sum())
    params = [n for n, p in model.named_parameters() if p.is_floating_point() and not bool(p.isfinite().all())]
    if params:
        shown = ", ".join(params[:3]) + (f" and {len(params) - 3} more" if len(params) > 3 else "")
        cause = (f"the model's weights are not finite ({len(params)} parameter tensor(s) hold NaN or inf: "
                 f"{shown}; a diverged or damaged checkpoint?)")
    else:
        cause = "the weights are finite, so the inputs or the arithmetic overflowed (check the images and --mean/--std)"
    return KernelscopeError(f"layer {name!r} gave {bad} non-finite value(s) (NaN or inf) of {value.numel()}: "
                            f"{cause}; nothing is measured on NaNs")


def scripted_hook_error(error: RuntimeError, names: Sequence[str]) -> Exception:
    """One line for torch's refusal to hook a TorchScript model's layers (``error`` itself for anything else)."""
    if "not supported on ScriptModules" not in str(error):
        return error
    return KernelscopeError(
        f"cannot read layer(s) {', '.join(map(repr, names))} of a TorchScript (scripted) model: torch cannot "
        "hook its layers; export the model to ONNX, or save its state dict and open that with --arch "
        "(arch= in Python)")


def layer_outputs(model: nn.Module, x: Any, layer_names: str | Sequence[str]) -> dict[str, np.ndarray]:
    """Run ``model`` on ``x`` (no gradients) and return the named layers' outputs as float32 arrays.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 1, 2, bias=False))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.fill_(1.0)
    >>> layer_outputs(net, np.ones((1, 1, 3, 3), dtype=np.float32), "0")["0"]
    array([[[[4., 4.],
             [4., 4.]]]], dtype=float32)
    """
    import torch

    tensor = _to_tensor(x, model)
    with torch.no_grad(), capture(model, layer_names) as out:
        model(tensor)
    return {name: value.float().cpu().numpy() for name, value in out.items()}


def iter_batches(images: Any, batch_size: int = 64) -> Iterator[np.ndarray]:
    """Yield float32 batches ``(B, C, H, W)`` from an array/tensor or an iterable of batches.

    An array (or tensor) of shape ``(N, C, H, W)`` is cut into chunks of
    ``batch_size``; any other iterable is taken to yield batches already (a
    stream: nothing is materialised). Empty input raises an error.

    Examples
    --------
    >>> [b.shape for b in iter_batches(np.zeros((5, 1, 2, 2)), batch_size=2)]
    [(2, 1, 2, 2), (2, 1, 2, 2), (1, 1, 2, 2)]
    """
    if batch_size < 1:
        raise KernelscopeError(f"batch_size must be >= 1, got {batch_size}")
    if hasattr(images, "shape") and hasattr(images, "__getitem__"):
        array = _as_nchw(images)
        if array.shape[0] == 0:
            raise KernelscopeError("the dataset has no images (0 given); give at least one image")
        for start in range(0, array.shape[0], batch_size):
            yield np.ascontiguousarray(array[start : start + batch_size], dtype=np.float32)
        return
    if not isinstance(images, Iterable):
        raise KernelscopeError(
            f"images must be an array (N, C, H, W) or an iterable of batches, got {type(images).__name__}"
        )
    seen = 0
    for batch in images:
        array = _as_nchw(batch)
        seen += array.shape[0]
        if array.shape[0]:
            yield np.ascontiguousarray(array, dtype=np.float32)
    if seen == 0:
        raise KernelscopeError("the dataset has no images (0 given); give at least one image")


def count_hooks(model: nn.Module) -> int:
    """The number of forward (pre-)hooks and backward hooks on ``model`` and all sub-modules."""
    total = 0
    for module in model.modules():
        for attribute in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                          "_backward_pre_hooks"):
            total += len(getattr(module, attribute, {}))
    return total


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameter-less model)."""
    import torch

    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def _as_nchw(images: Any) -> np.ndarray:
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    array = np.asarray(images)
    if array.ndim == 3:  # (N, H, W): one channel
        array = array[:, None]
    if array.ndim != 4:
        raise KernelscopeError(
            f"images must have shape (N, C, H, W) or (N, H, W), got shape {tuple(array.shape)}"
        )
    return array


def _to_tensor(x: Any, model: nn.Module) -> torch.Tensor:
    import torch

    if isinstance(x, torch.Tensor):
        tensor = x
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(_as_nchw(x), dtype=np.float32))
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    return tensor.to(device=model_device(model), dtype=dtype)


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once the wanted layer has run."""


def forward_until(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """Run ``model`` on ``x`` only as far as ``layer`` and return that layer's output (no gradients).

    The forward pass is stopped by an exception raised in the layer's hook (and the
    hook removed in ``finally``), so the layers after ``layer`` cost nothing; this
    needs ``layer`` to run before whatever comes after it, which holds for any model
    whose output depends on the layer.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(27, 2))
    >>> tuple(forward_until(net, "0", torch.zeros(2, 1, 5, 5)).shape)
    (2, 3, 3, 3)
    """
    import torch

    found: list[torch.Tensor] = []

    def stop(name: str, output: torch.Tensor) -> None:
        found.append(output)
        raise _StopForward

    with torch.no_grad(), capture(model, layer, callback=stop):
        try:
            model(x)
        except _StopForward:
            pass
    if not found:
        raise KernelscopeError(f"layer {layer!r} did not run in the forward pass; choose a layer that does")
    return found[0]
