"""Find a layer's kernels (and their initial values) in a run directory or a model.

* a **run directory** (``manifest.json`` inside): the kernels of the chosen epoch
  (default: the last), the epoch-0 snapshot as the init control, every snapshot up
  to that epoch for the evolution, and fresh initialisations of the same layer of
  the same architecture as a large init null;
* a **model**: an ``nn.Module``, or anything :func:`kernelscope.models.load_model`
  reads (state dict ``.pt``/``.safetensors`` with ``arch=``, TorchScript, ONNX). The
  init null is drawn by re-initialising a copy of the layer (``reset_parameters``).

The atlas's scores do not depend on a kernel's scale, so an init scaled by a
constant (the structure recipe's 0.05) has the same null as the unscaled one.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np

from kernelscope.analysis.atlas.core import AtlasResult, atlas
from kernelscope.analysis.atlas.evolution import evolution as evolution_of
from kernelscope.errors import KernelscopeError

__all__ = ["atlas_of", "layer_kernels", "fresh_init_kernels"]


def fresh_init_kernels(layer: Any, n: int, *, seed: int = 0) -> np.ndarray | None:
    """At least ``n`` kernels from re-initialising a copy of ``layer`` (None if it cannot be re-initialised).

    Returns
    -------
    ndarray of shape (n, C, kh, kw) or None

    Examples
    --------
    >>> from torch import nn
    >>> fresh_init_kernels(nn.Conv2d(3, 4, 5), 10).shape
    (10, 3, 5, 5)
    """
    import torch

    if not hasattr(layer, "reset_parameters"):
        return None
    clone = copy.deepcopy(layer).to("cpu", torch.float32)
    out, total, draw = [], 0, 0
    state = torch.random.get_rng_state()
    try:
        while total < n:
            torch.manual_seed(10_000 * seed + draw)
            with torch.no_grad():
                clone.reset_parameters()
            weight = clone.weight.detach().numpy().astype(np.float64).copy()
            out.append(weight)
            total += weight.shape[0]
            draw += 1
    finally:
        torch.random.set_rng_state(state)  # never disturb the caller's random stream
    return np.concatenate(out)[: max(n, 1)]


def _load_model_file(path: Path, arch: str | None) -> Any:
    """load_model, with any reader failure (not only the anticipated ones) as a one-line error."""
    from kernelscope.models import load_model

    try:
        return load_model(str(path), arch=arch)
    except KernelscopeError:
        raise
    except Exception as error:  # a corrupt file can fail deep inside torch/onnx with any exception
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise KernelscopeError(f"cannot read model file {str(path)!r}: {type(error).__name__}: {detail}") from None


def layer_kernels(model: Any, layer: str | None = None) -> tuple[str, np.ndarray, Any]:
    """``(name, kernels (O, C, kh, kw) float64, the layer)`` of a 2-D conv layer of ``model``.

    An unknown name lists the conv layers (not every module).
    """
    from kernelscope.errors import suggest
    from kernelscope.models.layers import conv_layer_names, get_conv_layer

    if layer is not None and layer not in dict(model.named_modules()):
        raise KernelscopeError(suggest(layer, conv_layer_names(model), what="conv layer"))
    name, module = get_conv_layer(model, layer)
    return name, module.weight.detach().cpu().double().numpy(), module


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and (path / "manifest.json").is_file()


def atlas_of(source: Any, *, layer: str | None = None, epoch: int | None = None, arch: str | None = None,
             with_evolution: bool = True, over: str = "epochs", seed: int = 0, n_null: int = 1000,
             **options: Any) -> AtlasResult:
    """The atlas of one conv layer of a run directory or a model.

    Parameters
    ----------
    source : str, Path, Run or torch.nn.Module
        A run directory (or the :class:`~kernelscope.train.rundir.Run` loaded from one), a
        model file, or a model.
    layer : str, optional
        Dotted name of a 2-D conv layer (default: the first).
    epoch : int, optional
        Run directories only: which snapshot (default: the last).
    arch : str, optional
        Architecture for a bare state-dict file (see :func:`kernelscope.models.load_model`).
    with_evolution : bool
        Run directories: also compute the atlas over every epoch up to ``epoch``.
    over : {"epochs", "steps"}
        The evolution's snapshots: recorded epochs, or the optimiser steps recorded by a
        run trained with ``record_every_steps`` (all of them, after the epoch-0 init).
    seed, n_null : int
        See :func:`~kernelscope.analysis.atlas.atlas`.
    **options
        Passed to :func:`~kernelscope.analysis.atlas.atlas` (``percentile``, ``threshold_nulls``, ...).

    Returns
    -------
    AtlasResult

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> result = atlas_of(nn.Sequential(nn.Conv2d(1, 8, 5), nn.ReLU()), n_null=50)
    >>> result.layer, result.shape, result.control_sizes["init"]
    ('0', (8, 1, 5, 5), 50)
    >>> atlas_of(nn.Sequential(nn.Conv2d(1, 8, 5), nn.ReLU()), layer="1")
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: layer '1' is a ReLU, not a convolution (conv layers: 0)
    """
    from kernelscope.train.rundir import Run

    if isinstance(source, Run):  # what train() and load_run() return: analyse its directory
        source = source.path
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise KernelscopeError(f"source {str(source)!r} does not exist (give a run directory or a model file)")
        if _is_run_dir(path):
            return _atlas_of_run(path, layer=layer, epoch=epoch, with_evolution=with_evolution, over=over,
                                 seed=seed, n_null=n_null, **options)
        if path.is_dir():
            raise KernelscopeError(f"directory {str(source)!r} is not a run directory (no manifest.json)")
        if epoch is not None:
            raise KernelscopeError(f"--epoch/epoch={epoch} applies to run directories only, not to model file "
                                   f"{str(source)!r}")
        model = _load_model_file(path, arch)
        label = str(source)
    else:
        if epoch is not None:
            raise KernelscopeError(f"epoch={epoch} applies to run directories only, not to a model object")
        try:
            from torch import nn
        except ImportError:  # pragma: no cover - torch is a dependency
            nn = None
        if nn is None or not isinstance(source, nn.Module):
            raise KernelscopeError(f"source must be a run directory (or its Run), a model file or a torch.nn.Module, got "
                                   f"{type(source).__name__}")
        model, label = source, type(source).__name__
    name, kernels, module = layer_kernels(model, layer)
    init_null = fresh_init_kernels(module, n_null, seed=seed)
    result = atlas(kernels, init_null=init_null, seed=seed, n_null=n_null, layer=name, source=label, **options)
    if init_null is None:
        result.notes.append(f"layer {name!r} cannot be re-initialised: no init control")
    return result


def _atlas_of_run(path: Path, *, layer, epoch, with_evolution, over, seed, n_null, **options) -> AtlasResult:
    from kernelscope.train.rundir import load_run

    if over not in ("epochs", "steps"):
        raise KernelscopeError(f"over must be 'epochs' or 'steps', got {over!r}")
    run = load_run(path)
    if with_evolution and over == "steps" and not run.steps:
        raise KernelscopeError(f"run {str(path)!r} recorded no steps (train with record_every_steps > 0, "
                               f"or look at the evolution over epochs)")
    conv = run.conv_layers
    if layer is None:
        if not conv:
            raise KernelscopeError(f"run {str(path)!r} records no conv layer")
        layer = conv[0]
    fresh = None
    if layer not in conv:
        fresh = _fresh_model(run)
        if fresh is not None:
            layer_kernels(fresh, layer)  # raises the helpful error: unknown, not a conv, Conv1d/3d
        from kernelscope.errors import suggest

        raise KernelscopeError(suggest(layer, conv, what="conv layer"))
    kernels = np.asarray(run.kernels(epoch, layer), dtype=np.float64)
    chosen = run.epochs[-1] if epoch is None or epoch == -1 else int(epoch)
    init_kernels = np.asarray(run.kernels(0, layer), dtype=np.float64) if 0 in run.epochs else None
    fresh = fresh if fresh is not None else _fresh_model(run)
    init_null = None
    if fresh is not None:
        from kernelscope.models.layers import get_conv_layer

        _, module = get_conv_layer(fresh, layer)
        init_null = fresh_init_kernels(module, n_null, seed=seed)
    result = atlas(kernels, init_kernels=init_kernels, init_null=init_null, seed=seed, n_null=n_null,
                   layer=layer, source=str(path), epoch=chosen, **options)
    if init_null is None and init_kernels is not None:
        result.notes.append("the init control is the run's epoch-0 snapshot only (the architecture could not "
                            "be rebuilt for fresh initialisations)")
    if with_evolution and over == "steps":
        snapshots = {0: run.kernels(0, layer)} if 0 in run.epochs else {}
        snapshots.update({s: run.kernels(layer=layer, step=s) for s in run.steps})
        result.evolution = evolution_of(snapshots, thresholds=result.thresholds, unit="step",
                                        min_cycles=options.get("min_cycles", 0.25))
    elif with_evolution:
        epochs = [e for e in run.epochs if e <= chosen]
        if len(epochs) > 1:
            snapshots = {e: run.kernels(e, layer) for e in epochs}
            result.evolution = evolution_of(snapshots, thresholds=result.thresholds,
                                            min_cycles=options.get("min_cycles", 0.25))
    return result


def _fresh_model(run):
    """The run's architecture, freshly initialised (None when it cannot be rebuilt)."""
    import torch

    state = torch.random.get_rng_state()
    try:
        from kernelscope.models.zoo import build_model

        spec = run.manifest["model"]
        kwargs = dict(spec.get("kwargs", {}))
        if isinstance(kwargs.get("input_size"), list):
            kwargs["input_size"] = tuple(kwargs["input_size"])
        return build_model(spec["name"], **kwargs)
    except (KernelscopeError, KeyError, TypeError, ImportError):
        return None
    finally:
        torch.random.set_rng_state(state)  # building initialises weights: leave the caller's stream alone
