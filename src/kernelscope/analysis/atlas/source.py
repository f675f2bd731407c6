"""Find a layer's kernels (and their initial values) in a run directory or a model.

* a **run directory** (``manifest.json`` inside): the kernels of the chosen epoch
  (default: the last), the epoch-0 snapshot as the init control, every snapshot up
  to that epoch for the evolution, and fresh initialisations of the same layer of
  the same architecture as a large init null;
* a **model**: an ``nn.Module``, or anything :func:`kernelscope.sources.open_source`
  opens (state dict ``.pt``/``.safetensors`` with ``arch=``, TorchScript read as data,
  ONNX, ``onet``). The init null is drawn by re-initialising the layer
  (:meth:`kernelscope.sources.Source.init_kernels`).

The atlas's scores do not depend on a kernel's scale, so an init scaled by a
constant (the structure recipe's 0.05) has the same null as the unscaled one.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from kernelscope.analysis.atlas.core import AtlasResult, atlas
from kernelscope.analysis.atlas.evolution import evolution as evolution_of
from kernelscope.errors import KernelscopeError

__all__ = ["atlas_of", "layer_kernels"]


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


def atlas_of(source: Any, *, layer: str | None = None, epoch: int | None = None, arch: str | None = None,
             with_evolution: bool = True, over: str = "epochs", seed: int = 0, n_null: int = 1000,
             trust_code: bool = False, **options: Any) -> AtlasResult:
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
        Architecture for a bare state-dict file (see :func:`kernelscope.sources.open_source`).
    trust_code : bool
        TorchScript outside the zoo: allowed to run its code (the atlas reads weights only,
        so it never needs to).
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
    from torch import nn

    from kernelscope.sources import open_source
    from kernelscope.train.rundir import Run

    if not isinstance(source, (str, os.PathLike, Run, nn.Module)):
        raise KernelscopeError(f"source must be a run directory (or its Run), a model file or a torch.nn.Module, got "
                               f"{type(source).__name__}")
    src = open_source(source, arch=arch, trust_code=trust_code)  # the kernels of ``epoch`` come from the run's files
    if src.run is None and epoch is not None:
        raise KernelscopeError(f"--epoch/epoch={epoch} applies to run directories only, not to {src.label}")
    if src.run is not None:
        return _atlas_of_run(src, layer=layer, epoch=epoch, with_evolution=with_evolution, over=over,
                             seed=seed, n_null=n_null, **options)
    model = src.model
    label = type(source).__name__ if isinstance(source, nn.Module) else str(source)
    if layer is not None and layer.endswith(".weight") and layer not in dict(model.named_modules()):
        layer = layer[: -len(".weight")]  # a state dict's key names the layer too
    name, kernels, _ = layer_kernels(model, layer)
    init_null, init_control = _init_draws(src, name, n_null, seed)
    result = atlas(kernels, init_null=init_null, init_control=init_control, seed=seed, n_null=n_null, layer=name,
                   source=label, **options)
    if init_null is None:
        result.notes.append(f"layer {name!r} cannot be re-initialised: no init control")
    return result


def _init_draws(src: Any, layer: str, n_null: int, seed: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Fresh initialisations: the first ``n_null`` calibrate (the same draws as before), the next are the control."""
    drawn = src.init_kernels(layer, 2 * n_null, seed=seed)
    if drawn is None:
        return None, None
    return drawn[:n_null], drawn[n_null:2 * n_null]


def _atlas_of_run(src: Any, *, layer, epoch, with_evolution, over, seed, n_null, **options) -> AtlasResult:
    if over not in ("epochs", "steps"):
        raise KernelscopeError(f"over must be 'epochs' or 'steps', got {over!r}")
    run, path = src.run, src.run.path
    if with_evolution and over == "steps" and not run.steps:
        raise KernelscopeError(f"run {str(path)!r} recorded no steps (train with record_every_steps > 0, "
                               f"or look at the evolution over epochs)")
    conv = run.conv_layers
    if layer is None:
        if not conv:
            raise KernelscopeError(f"run {str(path)!r} records no conv layer")
        layer = conv[0]
    if layer not in conv:
        if src.architecture() is not None:
            layer_kernels(src.architecture(), layer)  # raises the helpful error: unknown, not a conv, Conv1d/3d
        from kernelscope.errors import suggest

        raise KernelscopeError(suggest(layer, conv, what="conv layer"))
    kernels = np.asarray(run.kernels(epoch, layer), dtype=np.float64)
    chosen = run.epochs[-1] if epoch is None or epoch == -1 else int(epoch)
    init_kernels = np.asarray(run.kernels(0, layer), dtype=np.float64) if 0 in run.epochs else None
    init_null, init_control = _init_draws(src, layer, n_null, seed)
    result = atlas(kernels, init_kernels=init_kernels, init_null=init_null, init_control=init_control, seed=seed,
                   n_null=n_null,
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
