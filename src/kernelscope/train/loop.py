"""One readable training loop that records what the kernels learn, for both back ends.

``train(config, out_dir)`` holds the run directory (one writer, an OS lock), does the
set-up both back ends share (data, probe images, the seeded zoo model, the manifest, the
resume point), and runs the epochs with callbacks: the
:class:`~kernelscope.train.recorder.Recorder` (kernels and probe maps), then the
:class:`Checkpointer` (checkpoint + manifest: the commit point of an epoch), then the
caller's own. What differs between back ends, a step and its state, lives in
:class:`TorchBackend` (here) and :class:`~kernelscope.train.numpy_backend.NumpyBackend`.
Same seed -> same kernels, bit for bit, on the same machine; ``resume=True`` continues
from the last committed epoch and ends where an uninterrupted run would have. A loss or
a parameter that becomes NaN or infinite stops training with the manifest ``"failed"``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kernelscope._progress import progress
from kernelscope.errors import KernelscopeError
from kernelscope.npnet.layers import NonFiniteError
from kernelscope.train import distributed, rundir
from kernelscope.train.config import RESUME_MAY_CHANGE, TrainConfig
from kernelscope.train.recorder import Recorder, conv_kernels, probe_feature_maps

__all__ = ["train", "TrainState", "Checkpointer", "Prepared", "prepare", "TorchBackend", "choose_probe",
           "evaluate"]


@dataclass
class TrainState:
    """What callbacks see: the model, where the loop is, and where it writes."""

    config: TrainConfig
    out_dir: Path
    model: Any                       # what is trained (DistributedDataParallel in several processes; npnet net)
    raw_model: Any                   # the zoo model itself (the npnet Sequential with --backend numpy)
    optimizer: Any
    generator: Any                   # torch.Generator (numpy: np.random.Generator) for shuffling, augmentation
    conv_layers: list[str]
    probe_images: Any                # (P, C, H, W) normalised, on the device
    manifest: dict[str, Any]
    context: distributed.Context
    backend: Any = None              # TorchBackend or NumpyBackend: kernels(), feature_maps(), checkpoint()
    epoch: int = 0                   # last completed epoch (0 = initialisation)
    step: int = 0                    # optimiser steps taken
    metrics: list[dict[str, Any]] = field(default_factory=list)
    last_loss: float = float("nan")
    last_acc: float = float("nan")


class Checkpointer:
    """Callback that writes the checkpoint and the manifest: once both are written, the epoch is complete."""

    def on_train_begin(self, state: TrainState) -> None:
        if state.epoch == 0:
            self._commit(state)

    def on_epoch_end(self, state: TrainState) -> None:
        self._commit(state)

    def _commit(self, state: TrainState) -> None:
        rundir.write_checkpoint(state.out_dir, state.epoch, state.backend.checkpoint(state))
        manifest = {**state.manifest, "epochs_completed": state.epoch, "metrics": list(state.metrics)}
        rundir.write_manifest(state.out_dir, manifest)  # the commit point
        state.manifest = manifest


@dataclass
class Prepared:
    """The set-up both back ends share: data, probe images, the initial zoo model, the manifest, where to start."""

    dataset: Any                     # kernelscope.data.Dataset
    x_train: np.ndarray              # (N, C, H, W) raw in [0, 1] (train_limit applied)
    y_train: np.ndarray              # (N,)
    probe_raw: np.ndarray            # (P, C, H, W) raw
    probe_images: np.ndarray         # (P, C, H, W) normalised
    probe_labels: np.ndarray         # (P,)
    model: Any                       # the zoo model: seeded init, conv kernels times init_scale
    conv_layers: list[str]
    manifest: dict[str, Any]
    checkpoint: dict[str, Any] | None = None  # resuming: the last committed epoch's checkpoint
    start_epoch: int = 0
    step: int = 0
    metrics: list[dict[str, Any]] = field(default_factory=list)


def prepare(config: TrainConfig, out_dir: Path, existing: dict[str, Any] | None, *,
            is_main: bool = True) -> Prepared:
    """Load the data, choose the probe, build the seeded model and the manifest (or the resume point)."""
    import torch

    from kernelscope.data import load_dataset
    from kernelscope.models.layers import conv_layer_names
    from kernelscope.models.zoo import build_model

    dataset = load_dataset(config.data, seed=config.split_seed, test_fraction=config.test_fraction)
    x_train, y_train = dataset.x_train, dataset.y_train
    if config.train_limit is not None:
        x_train, y_train = x_train[:config.train_limit], y_train[:config.train_limit]
    probe_idx = choose_probe(dataset.y_test, config.n_probe)
    probe_raw = dataset.x_test[probe_idx]

    # Model: seeded init (both back ends start here); the structure recipe scales every conv kernel down.
    torch.manual_seed(config.seed)
    c, h, w = dataset.image_shape
    model = build_model(config.model, in_channels=c, num_classes=dataset.num_classes, input_size=(h, w),
                        kernel_size=config.kernel_size, width=config.width, depth=config.depth)
    conv_layers = conv_layer_names(model)
    with torch.no_grad():
        for name, module in model.named_modules():
            if name in conv_layers:
                module.weight.mul_(config.init_scale)

    manifest = rundir.new_manifest(config=config.to_dict(), model=dict(model.kernelscope_arch),
                                   dataset={**dataset.summary(), "n_train": int(len(y_train))},
                                   conv_layers=conv_layers, seed=config.seed)
    if config.backend == "numpy":
        manifest["backend"] = "numpy"
    prepared = Prepared(dataset=dataset, x_train=x_train, y_train=y_train, probe_raw=probe_raw,
                        probe_images=dataset.normalise(probe_raw), probe_labels=dataset.y_test[probe_idx],
                        model=model, conv_layers=conv_layers, manifest=manifest)
    if existing is not None:  # resume from the manifest's committed epoch, not from last.pt
        checkpoint = rundir.resume_checkpoint(out_dir, existing)
        prepared.checkpoint = checkpoint
        prepared.start_epoch, prepared.step = int(checkpoint["epoch"]), int(checkpoint.get("step", 0))
        prepared.metrics = list(existing["metrics"])[:prepared.start_epoch]
        prepared.manifest = {**existing, "config": config.to_dict(), "versions": rundir.versions(),
                             "epochs_completed": prepared.start_epoch, "metrics": list(prepared.metrics)}
        prepared.manifest.pop("error", None)
        if is_main:
            rundir.discard_uncommitted(out_dir, prepared.start_epoch, prepared.step)
    prepared.manifest["status"] = "running"
    return prepared


def choose_probe(labels: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` images taking each class in turn (first unused image of each class).

    Examples
    --------
    >>> choose_probe(np.array([1, 1, 0, 2, 0, 1]), 4).tolist()
    [2, 0, 3, 4]
    """
    by_class = [list(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    chosen: list[int] = []
    while len(chosen) < min(n, len(labels)):
        for indices in by_class:
            if indices and len(chosen) < n:
                chosen.append(int(indices.pop(0)))
    return np.asarray(chosen, dtype=np.int64)


def evaluate(model: Any, x: Any, y: Any, *, batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on normalised ``x`` ``(N, C, H, W)`` and ``y`` ``(N,)``."""
    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(x[start:start + batch_size])  # (B, classes)
            target = y[start:start + batch_size]
            loss += float(F.cross_entropy(logits, target, reduction="sum"))
            correct += int((logits.argmax(1) == target).sum())
    model.train(was_training)
    n = max(len(x), 1)
    return loss / n, correct / n


def _augment(x: Any, config: TrainConfig, generator: Any) -> Any:
    """Random shifts (zero padded) and horizontal flips of a raw batch ``(B, C, H, W)``; draws from ``generator``."""
    import torch

    if config.shift:
        s = config.shift
        shifts = torch.randint(-s, s + 1, (len(x), 2), generator=generator)  # (B, 2): dy, dx
        padded = torch.nn.functional.pad(x, (s, s, s, s))  # (B, C, H+2s, W+2s)
        out = torch.empty_like(x)
        h, w = x.shape[-2:]
        for dy, dx in torch.unique(shifts, dim=0).tolist():
            mask = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
            out[mask] = padded[mask, :, s + dy:s + dy + h, s + dx:s + dx + w]
        x = out
    if config.hflip:
        flip = torch.rand(len(x), generator=generator) < 0.5  # (B,)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


def _cosine_lr(config: TrainConfig, step: int, total_steps: int) -> float:
    """Cosine decay from ``config.lr`` at step 0 to 0 after ``total_steps``.

    Examples
    --------
    >>> c = TrainConfig(lr=1.0, lr_schedule="cosine")
    >>> _cosine_lr(c, 0, 10), _cosine_lr(c, 5, 10), _cosine_lr(c, 10, 10)
    (1.0, 0.5, 0.0)
    """
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def _build_optimizer(config: TrainConfig, params: Any) -> Any:
    import torch

    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


class TorchBackend:
    """Training steps in PyTorch: the zoo model itself, one torch.Generator, DDP across processes."""

    def __init__(self, config: TrainConfig, prepared: Prepared, context: distributed.Context) -> None:
        import torch

        self.config, self.context = config, context
        device = self.device = context.device
        self.layout = torch.channels_last if config.channels_last else torch.contiguous_format
        dataset = prepared.dataset
        # Data: raw images in [0, 1] stay on the device; each batch is normalised after augmentation.
        self.mean = torch.tensor(dataset.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(dataset.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.x_train = torch.from_numpy(prepared.x_train).to(device)  # (N, C, H, W) raw
        self.y_train = torch.from_numpy(prepared.y_train).to(device)  # (N,)
        self.x_test = ((torch.from_numpy(dataset.x_test).to(device) - self.mean) / self.std
                       ).contiguous(memory_format=self.layout)  # (N_test, C, H, W)
        self.y_test = torch.from_numpy(dataset.y_test).to(device)
        self.probe_images = torch.from_numpy(prepared.probe_images).to(device)  # (P, C, H, W)
        self.conv_layers = prepared.conv_layers
        model = self.raw_model = prepared.model
        model.to(device=device, memory_format=self.layout)
        self.optimizer = _build_optimizer(config, model.parameters())
        self.generator = torch.Generator().manual_seed(config.seed)
        if prepared.checkpoint is not None:
            checkpoint = prepared.checkpoint
            model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.generator.set_state(checkpoint["rng"]["data"])
            torch.set_rng_state(checkpoint["rng"]["torch"])
        self.model = model
        if context.distributed:
            import warnings

            from torch.nn.parallel import DistributedDataParallel

            # A 1-channel first layer's weight grad has an equivalent but different stride; harmless.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")

            self.model = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        self._buffers: dict[str, np.ndarray] = {}

    def run_epoch(self, state: TrainState, epoch: int, step_end: Callable[[], None]) -> tuple[float, float, float]:
        """Train one epoch; return (loss sum, correct, count) over all processes."""
        import torch
        import torch.nn.functional as F

        config, generator, device = self.config, self.generator, self.device
        n, batch = len(self.y_train), config.batch_size
        total_steps = config.epochs * ((n + batch - 1) // batch)
        world, rank = self.context.world_size, self.context.rank
        self.model.train()
        order = torch.randperm(n, generator=generator)  # the same global order on every rank
        totals = [0.0, 0.0, 0.0]  # loss sum, correct, count (this rank)
        bar = progress(total=(n + batch - 1) // batch, desc=f"epoch {epoch}/{config.epochs}", unit="batch",
                       disable=None if (config.progress and self.context.is_main) else True)
        for start in range(0, n, batch):
            index = order[start:start + batch]  # (B,) the global batch
            xb = _augment(self.x_train[index.to(device)], config, generator)  # (B, C, H, W) raw
            xb, yb = xb[rank::world], self.y_train[index.to(device)][rank::world]  # this rank's slice
            logits = self.model(((xb - self.mean) / self.std).contiguous(memory_format=self.layout))  # (b, classes)
            loss_sum = F.cross_entropy(logits, yb, reduction="sum")
            value = float(loss_sum.detach())
            if not math.isfinite(value):
                raise NonFiniteError(f"training diverged at step {state.step + 1} (epoch {epoch}): the loss is "
                                     f"{value}; lower the learning rate")
            # DDP averages gradients over ranks: scale so the result is the global batch mean.
            loss = loss_sum * (world / len(index))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.lr_schedule == "cosine":  # from the step count alone: nothing to checkpoint
                for group in self.optimizer.param_groups:
                    group["lr"] = _cosine_lr(config, state.step, total_steps)
            self.optimizer.step()
            state.step += 1
            totals[0] += value
            totals[1] += float((logits.argmax(1) == yb).sum())
            totals[2] += len(yb)
            state.last_loss, state.last_acc = totals[0] / totals[2], totals[1] / totals[2]
            step_end()
            bar.update(1)
            if state.step % 10 == 0:
                bar.set_postfix(loss=f"{state.last_loss:.3f}", acc=f"{state.last_acc:.3f}")
        bar.close()
        for name, value in self.raw_model.named_parameters():
            if not bool(torch.isfinite(value).all()):
                raise NonFiniteError(f"training diverged at step {state.step} (epoch {epoch}): parameter "
                                     f"{name!r} became NaN or infinite; lower the learning rate")
        loss_total, correct, count = distributed.all_reduce_sum(self.context, totals)
        return loss_total, correct, count

    def evaluate(self) -> tuple[float, float]:
        return evaluate(self.raw_model, self.x_test, self.y_test)

    def kernels(self) -> dict[str, np.ndarray]:
        return conv_kernels(self.raw_model, self.conv_layers)

    def feature_maps(self) -> dict[str, np.ndarray]:
        return probe_feature_maps(self.raw_model, self.conv_layers, self.probe_images, self._buffers)

    def checkpoint(self, state: TrainState) -> dict[str, Any]:
        import torch

        return {
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": state.epoch,
            "step": state.step,
            "config": state.config.to_dict(),
            "rng": {"data": self.generator.get_state(), "torch": torch.get_rng_state()},
        }


def _check_resume_config(old: dict[str, Any], new: dict[str, Any], out_dir: Path) -> None:
    may_change = set(RESUME_MAY_CHANGE)
    if new.get("lr_schedule", "constant") != "constant":
        may_change.discard("epochs")  # the schedule's length is the run's length
    changed = [k for k in sorted(set(old) | set(new)) if k not in may_change and old.get(k) != new.get(k)]
    if changed:
        details = ", ".join(f"{k}: run has {old.get(k)!r}, now {new.get(k)!r}" for k in changed[:3])
        raise KernelscopeError(f"cannot resume {str(out_dir)!r} with a different config ({details}); "
                               "use the run's settings or --force to start over")


def train(config: TrainConfig, out_dir: str | Path, *, callbacks: Sequence[Any] = (), force: bool = False,
          resume: bool = False) -> rundir.Run:
    """Train ``config`` into the run directory ``out_dir`` and return it as a :class:`~kernelscope.train.rundir.Run`.

    Parameters
    ----------
    config : TrainConfig
        ``backend="numpy"`` trains with kernelscope's own NumPy engine (constant learning rate;
        ``device`` is ignored), writing the same run directory.
    out_dir : str or Path
        Run directory (see ``docs/run-directory.md``). Must be new or empty, unless
        ``force`` (its run files are replaced) or ``resume``. Held with an OS lock while
        training: a second writer is refused.
    callbacks : sequence of objects
        Called after the recorder and the checkpoint of each epoch, with the
        :class:`TrainState`: ``on_train_begin``, ``on_step_end``, ``on_epoch_end``.
    force : bool
        Overwrite a run already in ``out_dir``.
    resume : bool
        Continue the run in ``out_dir`` from its last committed epoch (same config;
        only ``epochs``, ``device``, ``progress`` and ``channels_last`` may change).

    Returns
    -------
    Run

    Raises
    ------
    KernelscopeError
        Bad config, a refused ``out_dir``, or training that diverged (NaN or infinite loss or
        parameters: the manifest says ``"failed"`` and the message names the step and the
        last good checkpoint).
    """
    config = config.validate()
    out_dir = Path(out_dir)
    numpy_backend = config.backend == "numpy"
    if numpy_backend and config.lr_schedule != "constant":
        raise KernelscopeError(f"--backend numpy does not implement lr_schedule {config.lr_schedule!r}; "
                               "use --lr-schedule constant")
    context = distributed.Context() if numpy_backend else distributed.setup(config.device)
    try:
        with rundir.writing(out_dir, force=force, resume=resume, write=context.is_main) as existing:
            if existing is not None:
                _check_resume_config(existing.get("config") or {}, config.to_dict(), out_dir)
            distributed.barrier(context)
            prepared = prepare(config, out_dir, existing, is_main=context.is_main)
            if numpy_backend:
                from kernelscope.train.numpy_backend import NumpyBackend

                backend: Any = NumpyBackend(config, prepared)
            else:
                backend = TorchBackend(config, prepared, context)
            state = TrainState(config=config, out_dir=out_dir, model=backend.model, raw_model=backend.raw_model,
                               optimizer=backend.optimizer, generator=backend.generator,
                               conv_layers=prepared.conv_layers, probe_images=backend.probe_images,
                               manifest=prepared.manifest, context=context, backend=backend,
                               epoch=prepared.start_epoch, step=prepared.step, metrics=list(prepared.metrics))
            writers: list[Any] = []
            if context.is_main:
                if existing is None:
                    rundir.write_probe(out_dir, prepared.probe_images, prepared.probe_raw, prepared.probe_labels)
                writers = [Recorder(every_steps=config.record_every_steps, feature_maps=config.record_feature_maps),
                           Checkpointer()]
                if config.tensorboard is not None:  # a view of each committed epoch, after the checkpoint
                    from kernelscope.train.tensorboard import TensorBoardWriter

                    writers.append(TensorBoardWriter(config.tensorboard))
            _fit(state, [*writers, *callbacks], resumed=existing is not None)
    finally:
        distributed.teardown(context)
    return rundir.load_run(out_dir)


def _fit(state: TrainState, callbacks: list[Any], *, resumed: bool) -> None:
    """The epochs: steps, evaluation, metrics, callbacks; the manifest's status at the end."""
    config, context, backend, out_dir = state.config, state.context, state.backend, state.out_dir

    def call(hook: str) -> None:
        for callback in callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(state)

    if context.is_main and resumed:
        rundir.write_manifest(out_dir, state.manifest)  # "running" (no longer "failed"); a new run's first
        # manifest is the commit of epoch 0
    try:
        call("on_train_begin")
        for epoch in range(state.epoch + 1, config.epochs + 1):
            started = time.perf_counter()
            loss_total, correct, count = backend.run_epoch(state, epoch, lambda: call("on_step_end"))
            test_loss, test_acc = backend.evaluate()
            if not (math.isfinite(loss_total) and math.isfinite(test_loss)):
                raise NonFiniteError(f"training diverged in epoch {epoch}: the test loss is {test_loss}; "
                                     "lower the learning rate")
            state.epoch = epoch
            state.metrics.append({"epoch": epoch, "train_loss": loss_total / count, "train_acc": correct / count,
                                  "test_loss": test_loss, "test_acc": test_acc,
                                  "seconds": round(time.perf_counter() - started, 3)})
            call("on_epoch_end")
        if context.is_main:
            state.manifest = {**state.manifest, "status": "complete", "epochs_completed": state.epoch,
                              "metrics": list(state.metrics)}
            rundir.write_manifest(out_dir, state.manifest)
        distributed.barrier(context)
    except BaseException as error:
        if context.is_main:
            state.manifest = {**state.manifest, "status": "failed"}
            if isinstance(error, NonFiniteError):
                last = state.manifest["epochs_completed"]
                state.manifest["error"] = str(error)
                rundir.write_manifest(out_dir, state.manifest)
                raise NonFiniteError(f"{error}; the last good checkpoint is "
                                     f"{out_dir / 'checkpoints' / f'epoch_{last:03d}.pt'}") from None
            rundir.write_manifest(out_dir, state.manifest)
        raise
