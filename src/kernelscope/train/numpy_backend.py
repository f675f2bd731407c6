"""The NumPy back end of ``kernelscope train --backend numpy``: the steps in kernelscope's own engine.

:func:`~kernelscope.train.loop.train` does the set-up both back ends share (data, probe,
the seeded zoo model, the manifest, the resume point) and runs the epochs;
:class:`NumpyBackend` copies the zoo model into a :class:`~kernelscope.npnet.network.Sequential`
and trains that in NumPy (:mod:`kernelscope.npnet.step`: forward with the engine, backward
with :mod:`kernelscope.ops.backward`, SGD/Adam/AdamW with PyTorch's update rules). The
weights go back into the torch model's state dict for every checkpoint, so
``load_run(out).model()`` and every analysis read the run as usual. Torch is used only at
the edges (the initial model, the checkpoint files).

If the loss or a parameter becomes NaN or infinite, training stops with a message naming
the step; the checkpoints of the completed epochs stay and the manifest says ``"failed"``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from kernelscope._progress import progress
from kernelscope.errors import KernelscopeError
from kernelscope.npnet import step as npstep
from kernelscope.npnet.network import Sequential

if TYPE_CHECKING:
    from kernelscope.train.config import TrainConfig
    from kernelscope.train.loop import Prepared, TrainState

__all__ = ["NumpyBackend"]


class NumpyBackend:
    """Training steps in NumPy on a copy of the prepared zoo model (the same initialisation as torch's)."""

    def __init__(self, config: TrainConfig, prepared: Prepared) -> None:
        from kernelscope.npnet.torch_bridge import from_torch

        self.config = config
        self.dataset = prepared.dataset
        self.x_train, self.y_train = prepared.x_train, prepared.y_train  # raw (N, C, H, W), (N,)
        self.x_test = self.dataset.normalise(self.dataset.x_test)  # (N_test, C, H, W)
        self.probe_images = prepared.probe_images  # (P, C, H, W) normalised
        self.conv_layers = prepared.conv_layers
        self.model = self.raw_model = net = from_torch(prepared.model, dtype=np.float32)
        self.optimizer = npstep.make_optimizer(config.optimizer, net.parameters(), lr=config.lr,
                                               momentum=config.momentum, weight_decay=config.weight_decay)
        self.generator = np.random.default_rng(config.seed)
        if prepared.checkpoint is not None:  # weights, optimiser state and generator of the committed epoch
            checkpoint = prepared.checkpoint
            net.load_state_dict({k: v.numpy() for k, v in checkpoint["model"].items()})
            self.optimizer.load_state_dict(_to_numpy(checkpoint["optimizer"]))
            _set_rng_state(self.generator, checkpoint["rng"]["numpy"])

    def run_epoch(self, state: TrainState, epoch: int, step_end: Callable[[], None]) -> tuple[float, int, int]:
        """Train one epoch; return (loss sum, correct, count)."""
        config, rng, net = self.config, self.generator, self.model
        n, batch = len(self.y_train), config.batch_size
        order = rng.permutation(n)  # (N,)
        loss_sum, correct = 0.0, 0
        bar = progress(total=(n + batch - 1) // batch, desc=f"epoch {epoch}/{config.epochs} (numpy)", unit="batch",
                       disable=None if config.progress else True)
        for start in range(0, n, batch):
            index = order[start:start + batch]  # (B,)
            xb = npstep.augment(self.x_train[index], shift=config.shift, hflip=config.hflip, rng=rng)  # raw
            xb = self.dataset.normalise(xb)  # (B, C, H, W)
            yb = self.y_train[index]  # (B,)
            loss, logits = npstep.train_step(net, self.optimizer, xb, yb, step=state.step + 1, epoch=epoch)
            state.step += 1
            loss_sum += loss * len(yb)
            correct += int((logits.argmax(axis=1) == yb).sum())
            state.last_loss, state.last_acc = loss_sum / (start + len(yb)), correct / (start + len(yb))
            step_end()
            bar.update(1)
        bar.close()
        return loss_sum, correct, n

    def evaluate(self) -> tuple[float, float]:
        return npstep.evaluate_numpy(self.model, self.x_test, self.dataset.y_test)

    def kernels(self) -> dict[str, np.ndarray]:
        params = self.model.parameters()
        return {name: params[f"{name}.weight"] for name in self.conv_layers}

    def feature_maps(self) -> dict[str, np.ndarray]:
        return _feature_maps(self.model, self.conv_layers, self.probe_images)

    def checkpoint(self, state: TrainState) -> dict[str, Any]:
        from kernelscope.npnet.torch_bridge import state_dict_to_torch

        return {"model": state_dict_to_torch(self.model.state_dict()), "epoch": state.epoch, "step": state.step,
                "config": self.config.to_dict(), "backend": "numpy",
                "optimizer": _optimizer_state_to_torch(self.optimizer.state_dict()),
                "rng": {"numpy": _rng_state(self.generator)}}


def _feature_maps(net: Sequential, layers: list[str], images: np.ndarray) -> dict[str, np.ndarray]:
    """The probe images' output of every conv layer ``(P, O, H', W')``."""
    maps = {}
    x = images
    for name, layer in net.layers:
        x = layer.forward(x)
        if name in layers:
            maps[name] = np.asarray(x, dtype=np.float32).copy()
    return maps


def _optimizer_state_to_torch(state: dict[str, Any]) -> dict[str, Any]:
    """Optimizer state with arrays as tensors (so ``torch.load(weights_only=True)`` reads it)."""
    import torch

    def convert(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(value)).clone()
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    return convert(state)


def _to_numpy(value: Any) -> Any:
    """The inverse of :func:`_optimizer_state_to_torch`: tensors back to arrays."""
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        return value.numpy()
    if isinstance(value, dict):
        return {k: _to_numpy(v) for k, v in value.items()}
    return value


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The generator's state as plain ints and strings (readable with weights_only=True)."""
    state = rng.bit_generator.state
    return {"bit_generator": state["bit_generator"], "state": int(state["state"]["state"]),
            "inc": int(state["state"]["inc"]), "has_uint32": int(state["has_uint32"]),
            "uinteger": int(state["uinteger"])}


def _set_rng_state(rng: np.random.Generator, saved: dict[str, Any]) -> None:
    if saved.get("bit_generator") != rng.bit_generator.state["bit_generator"]:
        raise KernelscopeError(f"cannot resume: the checkpoint's generator is {saved.get('bit_generator')!r}")
    rng.bit_generator.state = {"bit_generator": saved["bit_generator"],
                               "state": {"state": int(saved["state"]), "inc": int(saved["inc"])},
                               "has_uint32": int(saved.get("has_uint32", 0)),
                               "uinteger": int(saved.get("uinteger", 0))}
