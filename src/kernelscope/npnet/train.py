"""Train the NumPy network and record it in the same run directory as ``kernelscope train``.

``train_numpy(config, out_dir)`` is what ``kernelscope train --backend numpy`` runs.
It builds the zoo model named by the config exactly as the torch back end does (same
seed, same initialisation, same ``init_scale``), copies it into a
:class:`~kernelscope.npnet.network.Sequential`, and trains that in NumPy: forward with
the engine, backward with :mod:`kernelscope.ops.backward`, SGD/Adam/AdamW with
PyTorch's update rules. The weights go back into the torch model's state dict for every
checkpoint, so ``load_run(out).model()`` and every analysis read the run as usual.
Torch is used only at the edges (building the initial model, writing checkpoints).

If the loss or a parameter becomes NaN or infinite, training stops with a message
naming the step; the checkpoints of the completed epochs stay (the last good one is
``checkpoints/last.pt``) and the manifest says ``"status": "failed"``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from kernelscope._progress import progress
from kernelscope.errors import KernelscopeError
from kernelscope.npnet.layers import NonFiniteError
from kernelscope.npnet.loss import softmax_cross_entropy
from kernelscope.npnet.network import Sequential
from kernelscope.npnet.optim import SGD, Adam

__all__ = ["train_numpy", "train_step", "make_optimizer", "evaluate_numpy", "augment", "NonFiniteError"]


def make_optimizer(name: str, params: dict[str, np.ndarray], *, lr: float, momentum: float = 0.9,
                   weight_decay: float = 0.0) -> SGD | Adam:
    """The NumPy optimiser for a config's ``optimizer`` name ("sgd", "adam", "adamw").

    Examples
    --------
    >>> type(make_optimizer("adamw", {}, lr=1e-3)).__name__
    'Adam'
    >>> make_optimizer("rmsprop", {}, lr=1e-3)
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: unknown optimizer 'rmsprop' (valid: adam, adamw, sgd)
    """
    from kernelscope.errors import suggest

    if name == "sgd":
        return SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name in ("adam", "adamw"):
        return Adam(params, lr=lr, weight_decay=weight_decay, decoupled=name == "adamw")
    raise KernelscopeError(suggest(str(name), ["sgd", "adam", "adamw"], what="optimizer"))


def train_step(net: Sequential, optimizer: SGD | Adam, x: np.ndarray, y: np.ndarray, *,
               step: int | None = None, epoch: int | None = None) -> tuple[float, np.ndarray]:
    """One optimiser step on the batch ``x`` ``(B, C, H, W)``, ``y`` ``(B,)``; returns (loss, logits).

    Raises :class:`NonFiniteError` naming ``step`` (and ``epoch``) when the loss, an
    activation or an updated parameter is not finite.

    Examples
    --------
    >>> from kernelscope.npnet.network import lenet
    >>> net = lenet(input_size=12, seed=0)
    >>> opt = make_optimizer("sgd", net.parameters(), lr=0.1)
    >>> x = np.random.default_rng(0).normal(size=(4, 1, 12, 12)).astype(np.float32)
    >>> loss, logits = train_step(net, opt, x, np.array([0, 1, 2, 3]))
    >>> logits.shape, bool(np.isfinite(loss))
    ((4, 10), True)
    """
    where = (f" at step {step}" if step is not None else "") + (f" (epoch {epoch})" if epoch is not None else "")
    # overflow is not a warning here: every result is checked for NaN/infinity below
    with np.errstate(over="ignore", invalid="ignore"):
        try:
            logits = net.forward(x)  # (B, classes)
        except NonFiniteError as error:
            raise NonFiniteError(f"training diverged{where}: {error}; lower the learning rate") from None
        loss, grad = softmax_cross_entropy(logits, y)  # grad (B, classes)
        if not np.isfinite(loss):
            raise NonFiniteError(f"training diverged{where}: the loss is {loss}; lower the learning rate")
        net.backward(grad)
        optimizer.step(net.gradients())
    for name, value in net.parameters().items():
        if not np.isfinite(value).all():
            raise NonFiniteError(
                f"training diverged{where}: parameter {name!r} became NaN or infinite; lower the learning rate")
    return loss, logits


def evaluate_numpy(net: Sequential, x: np.ndarray, y: np.ndarray, *, batch_size: int = 500) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``net`` on normalised ``x`` ``(N, C, H, W)`` and labels ``y``."""
    total, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        with np.errstate(over="ignore", invalid="ignore"):  # a diverged net shows as a non-finite loss
            try:
                logits = net.forward(x[start:start + batch_size])  # (B, classes)
            except NonFiniteError as error:
                raise NonFiniteError(f"training diverged: evaluating the test images, {error}") from None
            target = y[start:start + batch_size]
            loss, _ = softmax_cross_entropy(logits, target)
        total += loss * len(target)
        correct += int((logits.argmax(axis=1) == target).sum())
    n = max(len(x), 1)
    return total / n, correct / n


def augment(x: np.ndarray, *, shift: int, hflip: bool, rng: np.random.Generator) -> np.ndarray:
    """Random shifts of +-``shift`` px (zero filled) and random horizontal flips of a raw batch ``(B, C, H, W)``.

    Examples
    --------
    >>> x = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> augment(x, shift=0, hflip=False, rng=np.random.default_rng(0)) is x
    True
    >>> augment(x, shift=1, hflip=False, rng=np.random.default_rng(1)).shape
    (1, 1, 3, 3)
    """
    if shift:
        b, _, h, w = x.shape
        shifts = rng.integers(-shift, shift + 1, size=(b, 2))  # (B, 2): dy, dx
        padded = np.pad(x, ((0, 0), (0, 0), (shift, shift), (shift, shift)))  # (B, C, H+2s, W+2s)
        out = np.empty_like(x)
        for i, (dy, dx) in enumerate(shifts):
            out[i] = padded[i, :, shift + dy:shift + dy + h, shift + dx:shift + dx + w]
        x = out
    if hflip:
        flip = rng.random(len(x)) < 0.5  # (B,)
        x = np.where(flip[:, None, None, None], x[..., ::-1], x)
    return x


def _feature_maps(net: Sequential, layers: list[str], images: np.ndarray) -> dict[str, np.ndarray]:
    """The probe images' output of every conv layer ``(P, O, H', W')``."""
    maps = {}
    x = images
    for name, layer in net.layers:
        x = layer.forward(x)
        if name in layers:
            maps[name] = np.asarray(x, dtype=np.float32).copy()
    return maps


def train_numpy(config: Any, out_dir: str | Path, *, force: bool = False, resume: bool = False) -> Path:
    """Train ``config`` (a :class:`~kernelscope.train.TrainConfig`) with the NumPy network into ``out_dir``.

    Parameters
    ----------
    config : TrainConfig
        ``model`` must be a plain sequence of Conv2d/ReLU/pooling/Flatten/Linear layers
        (``lenet5``, ``tinyvgg``, ``large-kernel``); ``device`` is ignored (NumPy runs on the CPU).
    out_dir : str or Path
        The run directory (new or empty; ``force`` replaces a run already there).
    force : bool
        Overwrite a run already in ``out_dir``.
    resume : bool
        Continue the NumPy run in ``out_dir`` from its last complete epoch (same config;
        only ``epochs``, ``device`` and ``progress`` may change). Parameters, optimiser
        state and the data-order generator are restored, so the result equals an
        uninterrupted run.

    Returns
    -------
    Path
        ``out_dir``, holding the same files as a torch run (``docs/run-directory.md``).
    """
    import torch

    from kernelscope.data import load_dataset
    from kernelscope.models.layers import conv_layer_names
    from kernelscope.models.zoo import build_model
    from kernelscope.npnet.torch_bridge import from_torch, state_dict_to_torch
    from kernelscope.train import rundir
    from kernelscope.train.loop import choose_probe

    config = config.validate()
    out_dir = Path(out_dir)
    existing = None
    if resume:
        existing = rundir.prepare_run_dir(out_dir, force=force, resume=True)
        _check_resume(existing, config.to_dict(), out_dir)
    elif force or (out_dir / "manifest.json").exists():
        rundir.prepare_run_dir(out_dir, force=force)  # refuses to overwrite a run unless force
    else:  # new, or already prepared by kernelscope.train.train (which checked it)
        out_dir.mkdir(parents=True, exist_ok=True)

    dataset = load_dataset(config.data, seed=config.split_seed, test_fraction=config.test_fraction)
    x_train, y_train = dataset.x_train, dataset.y_train
    if config.train_limit is not None:
        x_train, y_train = x_train[:config.train_limit], y_train[:config.train_limit]
    x_test = dataset.normalise(dataset.x_test)  # (N_test, C, H, W)
    probe_idx = choose_probe(dataset.y_test, config.n_probe)
    probe_raw = dataset.x_test[probe_idx]
    probe_images = dataset.normalise(probe_raw)

    # The same initialisation as the torch back end: seeded zoo model, conv kernels scaled.
    torch.manual_seed(config.seed)
    c, h, w = dataset.image_shape
    model = build_model(config.model, in_channels=c, num_classes=dataset.num_classes, input_size=(h, w),
                        kernel_size=config.kernel_size, width=config.width, depth=config.depth)
    conv_layers = conv_layer_names(model)
    with torch.no_grad():
        for name, module in model.named_modules():
            if name in conv_layers:
                module.weight.mul_(config.init_scale)
    net = from_torch(model, dtype=np.float32)
    optimizer = make_optimizer(config.optimizer, net.parameters(), lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)

    manifest = rundir.new_manifest(config=config.to_dict(), model=dict(model.kernelscope_arch),
                                   dataset={**dataset.summary(), "n_train": int(len(y_train))},
                                   conv_layers=conv_layers, seed=config.seed)
    manifest["backend"] = "numpy"
    metrics: list[dict[str, Any]] = []
    step = start_epoch = 0
    if existing is None:
        rundir.write_probe(out_dir, probe_images, probe_raw, dataset.y_test[probe_idx])
    else:  # resume: weights, optimiser state and generator from the last complete epoch
        checkpoint = rundir.read_checkpoint(out_dir / "checkpoints" / "last.pt")
        net.load_state_dict({k: v.numpy() for k, v in checkpoint["model"].items()})
        optimizer.load_state_dict(_to_numpy(checkpoint["optimizer"]))
        _set_rng_state(rng, checkpoint["rng"]["numpy"])
        start_epoch, step = int(checkpoint["epoch"]), int(checkpoint["step"])
        metrics = list(existing.get("metrics", []))[:start_epoch]
        manifest = {**existing, "config": config.to_dict(), "versions": rundir.versions(), "metrics": metrics,
                    "epochs_completed": start_epoch}
        manifest.pop("error", None)
    manifest["status"] = "running"

    def record(epoch: int) -> None:
        params = net.parameters()
        rundir.write_kernels(out_dir, {name: params[f"{name}.weight"] for name in conv_layers}, epoch=epoch)
        if config.record_feature_maps:
            rundir.write_feature_maps(out_dir, epoch, _feature_maps(net, conv_layers, probe_images))
        checkpoint = {"model": state_dict_to_torch(net.state_dict()), "epoch": epoch, "step": step,
                      "config": config.to_dict(), "backend": "numpy",
                      "optimizer": _optimizer_state_to_torch(optimizer.state_dict()),
                      "rng": {"numpy": _rng_state(rng)}}
        rundir.write_checkpoint(out_dir, epoch, checkpoint)
        manifest["epochs_completed"] = epoch
        manifest["metrics"] = list(metrics)
        rundir.write_manifest(out_dir, manifest)

    try:
        if existing is None:
            record(0)
        else:
            rundir.write_manifest(out_dir, manifest)
        n, batch = len(y_train), config.batch_size
        for epoch in range(start_epoch + 1, config.epochs + 1):
            started = time.perf_counter()
            order = rng.permutation(n)  # (N,)
            loss_sum, correct = 0.0, 0
            bar = progress(total=(n + batch - 1) // batch, desc=f"epoch {epoch}/{config.epochs} (numpy)",
                           disable=None if config.progress else True)
            for start in range(0, n, batch):
                index = order[start:start + batch]  # (B,)
                xb = augment(x_train[index], shift=config.shift, hflip=config.hflip, rng=rng)  # raw
                xb = dataset.normalise(xb)  # (B, C, H, W)
                yb = y_train[index]  # (B,)
                step += 1
                loss, logits = train_step(net, optimizer, xb, yb, step=step, epoch=epoch)
                loss_sum += loss * len(yb)
                correct += int((logits.argmax(axis=1) == yb).sum())
                if config.record_every_steps and step % config.record_every_steps == 0:
                    params = net.parameters()
                    rundir.write_kernels(out_dir, {name: params[f"{name}.weight"] for name in conv_layers},
                                         step=step)
                bar.update(1)
            bar.close()
            test_loss, test_acc = evaluate_numpy(net, x_test, dataset.y_test)
            metrics.append({"epoch": epoch, "train_loss": loss_sum / n, "train_acc": correct / n,
                            "test_loss": test_loss, "test_acc": test_acc,
                            "seconds": round(time.perf_counter() - started, 3)})
            record(epoch)
        manifest["status"] = "complete"
        rundir.write_manifest(out_dir, manifest)
    except BaseException as error:
        manifest["status"] = "failed"
        if isinstance(error, NonFiniteError):
            last = manifest["epochs_completed"]
            manifest["error"] = str(error)
            rundir.write_manifest(out_dir, manifest)
            raise NonFiniteError(f"{error}; the last good checkpoint is "
                                 f"{out_dir / 'checkpoints' / f'epoch_{last:03d}.pt'}") from None
        rundir.write_manifest(out_dir, manifest)
        raise
    return out_dir


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


def _check_resume(existing: dict[str, Any], new: dict[str, Any], out_dir: Path) -> None:
    """Resuming needs a NumPy run and the same settings (except epochs, device and progress)."""
    from kernelscope.train.config import RESUME_MAY_CHANGE

    if existing.get("backend") != "numpy":
        raise KernelscopeError(f"cannot resume {str(out_dir)!r} with --backend numpy: it was trained with "
                               "the torch back end; resume it without --backend numpy")
    old = existing.get("config", {})
    changed = [k for k in sorted(set(old) | set(new)) if k not in RESUME_MAY_CHANGE and old.get(k) != new.get(k)]
    if changed:
        details = ", ".join(f"{k}: run has {old.get(k)!r}, now {new.get(k)!r}" for k in changed[:3])
        raise KernelscopeError(f"cannot resume {str(out_dir)!r} with a different config ({details}); "
                               "use the run's settings or --force to start over")
