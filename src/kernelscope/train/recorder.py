"""The recorder: a training callback that stores kernels and probe feature maps.

A callback is any object with some of the methods ``on_train_begin(state)``,
``on_step_end(state)`` and ``on_epoch_end(state)`` (minGPT style, not a subclass).
``state`` is the loop's :class:`~kernelscope.train.loop.TrainState`; the recorder asks its
``backend`` (torch or NumPy) for the kernels and the probe images' maps.

The recorder writes, into the run directory:

- ``kernels/epoch_000.npz`` at the start (the initialisation) and ``kernels/epoch_E.npz``
  after each epoch (``kernels/step_S.npz`` every ``every_steps`` steps when asked);
- ``featuremaps/epoch_E.npz``: the probe images' output of every conv layer (torch: taken
  with forward hooks that copy into buffers allocated once, removed in ``finally``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernelscope.train import rundir

__all__ = ["Recorder", "conv_kernels", "probe_feature_maps"]


def conv_kernels(model: Any, layers: list[str]) -> dict[str, np.ndarray]:
    """Copies of the named conv layers' weights, ``(O, C/groups, kh, kw)`` float32 each."""
    modules = dict(model.named_modules())
    return {name: modules[name].weight.detach().to("cpu", copy=True).float().numpy() for name in layers}


def probe_feature_maps(model: Any, layers: list[str], images: Any,
                       buffers: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Run ``images`` ``(P, C, H, W)`` through ``model`` (eval, no grad) and return each conv layer's output.

    Outputs are copied into ``buffers`` (allocated on first use and reused); the hooks
    are removed in ``finally`` even when the forward pass fails. The model's train/eval
    mode is restored.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 3, 3))
    >>> maps = probe_feature_maps(net, ["0", "2"], torch.zeros(4, 1, 8, 8))
    >>> {k: v.shape for k, v in maps.items()}
    {'0': (4, 2, 6, 6), '2': (4, 3, 4, 4)}
    >>> len(net[0]._forward_hooks)
    0
    """
    import torch

    modules = dict(model.named_modules())
    out = buffers if buffers is not None else {}
    handles = []

    def make_hook(name: str):
        def hook(module: Any, inputs: Any, output: torch.Tensor) -> None:
            array = output.detach().float().cpu().numpy()
            if name not in out or out[name].shape != array.shape:
                out[name] = np.empty(array.shape, dtype=np.float32)
            np.copyto(out[name], array)
        return hook

    was_training = model.training
    try:
        for name in layers:
            handles.append(modules[name].register_forward_hook(make_hook(name)))
        model.eval()
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: out[name] for name in layers}


class Recorder:
    """Record every conv layer's kernels (and the probe images' feature maps) into the run directory.

    Parameters
    ----------
    every_steps : int
        Also record the kernels every this many optimiser steps (0 = only per epoch).
    feature_maps : bool
        Record the probe images' feature maps at each epoch.
    """

    def __init__(self, *, every_steps: int = 0, feature_maps: bool = True) -> None:
        self.every_steps = every_steps
        self.feature_maps = feature_maps

    def _record(self, state: Any, epoch: int) -> None:
        rundir.write_kernels(state.out_dir, state.backend.kernels(), epoch=epoch)
        if self.feature_maps:
            rundir.write_feature_maps(state.out_dir, epoch, state.backend.feature_maps())

    def on_train_begin(self, state: Any) -> None:
        if state.epoch == 0:  # a fresh run: the initialisation is epoch 0
            self._record(state, 0)

    def on_step_end(self, state: Any) -> None:
        if self.every_steps and state.step % self.every_steps == 0:
            rundir.write_kernels(state.out_dir, state.backend.kernels(), step=state.step)

    def on_epoch_end(self, state: Any) -> None:
        self._record(state, state.epoch)
