"""One readable training loop that records what the kernels learn.

``train(config, out_dir)`` loads the data, builds the zoo model, and trains it with
callbacks: the :class:`~kernelscope.train.recorder.Recorder` (kernels and probe maps),
then the checkpointer (checkpoint + manifest: the commit point of an epoch), then the
caller's own callbacks. Same seed -> same kernels, bit for bit, on the same machine;
``resume=True`` continues from the last complete epoch and ends where an uninterrupted
run would have.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kernelscope._progress import progress
from kernelscope.errors import KernelscopeError
from kernelscope.train import distributed, rundir
from kernelscope.train.config import RESUME_MAY_CHANGE, TrainConfig
from kernelscope.train.recorder import Recorder

__all__ = ["train", "TrainState", "Checkpointer", "choose_probe", "evaluate"]


@dataclass
class TrainState:
    """What callbacks see: the model, where the loop is, and where it writes."""

    config: TrainConfig
    out_dir: Path
    model: Any                       # what is trained (DistributedDataParallel in several processes)
    raw_model: Any                   # the zoo model itself
    optimizer: Any
    generator: Any                   # torch.Generator for shuffling and augmentation
    conv_layers: list[str]
    probe_images: Any                # (P, C, H, W) normalised, on the device
    manifest: dict[str, Any]
    context: distributed.Context
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
        import torch

        checkpoint = {
            "model": state.raw_model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "epoch": state.epoch,
            "step": state.step,
            "config": state.config.to_dict(),
            "rng": {"data": state.generator.get_state(), "torch": torch.get_rng_state()},
        }
        rundir.write_checkpoint(state.out_dir, state.epoch, checkpoint)
        state.manifest["epochs_completed"] = state.epoch
        state.manifest["metrics"] = list(state.metrics)
        rundir.write_manifest(state.out_dir, state.manifest)


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
    out_dir : str or Path
        Run directory (see ``docs/run-directory.md``). Must be new or empty, unless
        ``force`` (its run files are replaced) or ``resume``.
    callbacks : sequence of objects
        Called after the recorder and the checkpoint of each epoch, with the
        :class:`TrainState`: ``on_train_begin``, ``on_step_end``, ``on_epoch_end``.
    force : bool
        Overwrite a run already in ``out_dir``.
    resume : bool
        Continue the run in ``out_dir`` from its last complete epoch (same config;
        only ``epochs``, ``device`` and ``progress`` may change).

    Returns
    -------
    Run
    """
    config = config.validate()
    out_dir = Path(out_dir)
    if config.backend == "numpy":
        if resume:
            raise KernelscopeError("--resume is not supported with --backend numpy")
        if config.lr_schedule != "constant":
            raise KernelscopeError(f"--backend numpy does not implement lr_schedule {config.lr_schedule!r}; "
                                   "use --lr-schedule constant")
        from kernelscope.npnet.train import train_numpy

        train_numpy(config, out_dir, force=force)
        return rundir.load_run(out_dir)

    import torch
    import torch.nn.functional as F

    from kernelscope.data import load_dataset
    from kernelscope.models.layers import conv_layer_names
    from kernelscope.models.zoo import build_model

    context = distributed.setup(config.device)
    try:
        existing = rundir.prepare_run_dir(out_dir, force=force, resume=resume, write=context.is_main)
        if existing is not None:
            _check_resume_config(existing["config"], config.to_dict(), out_dir)
        distributed.barrier(context)
        device = context.device
        layout = torch.channels_last if config.channels_last else torch.contiguous_format

        # Data: raw images in [0, 1] stay on the device; each batch is normalised after augmentation.
        dataset = load_dataset(config.data, seed=config.split_seed, test_fraction=config.test_fraction)
        x_train, y_train = dataset.x_train, dataset.y_train
        if config.train_limit is not None:
            x_train, y_train = x_train[:config.train_limit], y_train[:config.train_limit]
        mean = torch.tensor(dataset.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std = torch.tensor(dataset.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        x_train_t = torch.from_numpy(x_train).to(device)  # (N, C, H, W) raw
        y_train_t = torch.from_numpy(y_train).to(device)  # (N,)
        x_test_t = ((torch.from_numpy(dataset.x_test).to(device) - mean) / std).contiguous(memory_format=layout)
        y_test_t = torch.from_numpy(dataset.y_test).to(device)
        probe_idx = choose_probe(dataset.y_test, config.n_probe)
        probe_raw = dataset.x_test[probe_idx]
        probe_images = dataset.normalise(probe_raw)

        # Model: seeded init; the structure recipe scales every conv kernel down.
        torch.manual_seed(config.seed)
        c, h, w = dataset.image_shape
        model = build_model(config.model, in_channels=c, num_classes=dataset.num_classes, input_size=(h, w),
                            kernel_size=config.kernel_size, width=config.width, depth=config.depth)
        conv_layers = conv_layer_names(model)
        with torch.no_grad():
            for name, module in model.named_modules():
                if name in conv_layers:
                    module.weight.mul_(config.init_scale)
        model.to(device=device, memory_format=layout)
        optimizer = _build_optimizer(config, model.parameters())
        generator = torch.Generator().manual_seed(config.seed)

        manifest = rundir.new_manifest(config=config.to_dict(), model=dict(model.kernelscope_arch),
                                       dataset={**dataset.summary(), "n_train": int(len(y_train))},
                                       conv_layers=conv_layers, seed=config.seed)
        start_epoch, step, metrics = 0, 0, []
        if existing is not None:
            checkpoint = rundir.read_checkpoint(out_dir / "checkpoints" / "last.pt")
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            generator.set_state(checkpoint["rng"]["data"])
            torch.set_rng_state(checkpoint["rng"]["torch"])
            start_epoch, step = int(checkpoint["epoch"]), int(checkpoint.get("step", 0))
            metrics = list(existing.get("metrics", []))[:start_epoch]
            manifest = {**existing, "config": config.to_dict(), "versions": rundir.versions()}
        manifest["status"] = "running"

        trained = model
        if context.distributed:
            import warnings

            from torch.nn.parallel import DistributedDataParallel

            # A 1-channel first layer's weight grad has an equivalent but different stride; harmless.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")

            trained = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

        state = TrainState(config=config, out_dir=out_dir, model=trained, raw_model=model, optimizer=optimizer,
                           generator=generator, conv_layers=conv_layers,
                           probe_images=torch.from_numpy(probe_images).to(device), manifest=manifest,
                           context=context, epoch=start_epoch, step=step, metrics=metrics)
        writers: list[Any] = []
        if context.is_main:
            if existing is None:
                rundir.write_probe(out_dir, probe_images, probe_raw, dataset.y_test[probe_idx])
            writers = [Recorder(every_steps=config.record_every_steps, feature_maps=config.record_feature_maps),
                       Checkpointer()]
        all_callbacks = [*writers, *callbacks]
    except BaseException:
        distributed.teardown(context)
        raise

    def call(hook: str) -> None:
        for callback in all_callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(state)

    try:
        call("on_train_begin")
        n, batch = len(y_train_t), config.batch_size
        total_steps = config.epochs * ((n + batch - 1) // batch)
        world, rank = context.world_size, context.rank
        for epoch in range(start_epoch + 1, config.epochs + 1):
            started = time.perf_counter()
            trained.train()
            order = torch.randperm(n, generator=generator)  # the same global order on every rank
            totals = [0.0, 0.0, 0.0]  # loss sum, correct, count (this rank)
            bar = progress(total=(n + batch - 1) // batch, desc=f"epoch {epoch}/{config.epochs}",
                           disable=None if (config.progress and context.is_main) else True)
            for start in range(0, n, batch):
                index = order[start:start + batch]  # (B,) the global batch
                xb = _augment(x_train_t[index.to(device)], config, generator)  # (B, C, H, W) raw
                xb, yb = xb[rank::world], y_train_t[index.to(device)][rank::world]  # this rank's slice
                logits = trained(((xb - mean) / std).contiguous(memory_format=layout))  # (b, classes)
                loss_sum = F.cross_entropy(logits, yb, reduction="sum")
                # DDP averages gradients over ranks: scale so the result is the global batch mean.
                loss = loss_sum * (world / len(index))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.lr_schedule == "cosine":  # from the step count alone: nothing to checkpoint
                    for group in optimizer.param_groups:
                        group["lr"] = _cosine_lr(config, state.step, total_steps)
                optimizer.step()
                state.step += 1
                totals[0] += float(loss_sum.detach())
                totals[1] += float((logits.argmax(1) == yb).sum())
                totals[2] += len(yb)
                state.last_loss, state.last_acc = totals[0] / totals[2], totals[1] / totals[2]
                call("on_step_end")
                bar.update(1)
                if state.step % 10 == 0:
                    bar.set_postfix(loss=f"{state.last_loss:.3f}", acc=f"{state.last_acc:.3f}")
            bar.close()
            loss_total, correct, count = distributed.all_reduce_sum(context, totals)
            test_loss, test_acc = evaluate(model, x_test_t, y_test_t)
            state.epoch = epoch
            state.metrics.append({"epoch": epoch, "train_loss": loss_total / count, "train_acc": correct / count,
                                  "test_loss": test_loss, "test_acc": test_acc,
                                  "seconds": round(time.perf_counter() - started, 3)})
            call("on_epoch_end")
        if context.is_main:
            state.manifest["status"] = "complete"
            state.manifest["epochs_completed"] = state.epoch
            state.manifest["metrics"] = list(state.metrics)
            rundir.write_manifest(out_dir, state.manifest)
        distributed.barrier(context)
    except BaseException:
        if context.is_main:
            state.manifest["status"] = "failed"
            rundir.write_manifest(out_dir, state.manifest)
        raise
    finally:
        distributed.teardown(context)
    return rundir.load_run(out_dir)
