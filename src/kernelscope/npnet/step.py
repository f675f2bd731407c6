"""One training step of the NumPy network, its optimiser by name, evaluation and augmentation.

The pieces the NumPy back end of ``kernelscope train``
(:mod:`kernelscope.train.numpy_backend`) is built from, in NumPy only: forward with the
engine, backward with :mod:`kernelscope.ops.backward`, SGD/Adam/AdamW with PyTorch's
update rules. A loss, activation or parameter that becomes NaN or infinite raises
:class:`~kernelscope.npnet.layers.NonFiniteError` naming the step.
"""

from __future__ import annotations

import numpy as np

from kernelscope.errors import KernelscopeError
from kernelscope.npnet.layers import NonFiniteError
from kernelscope.npnet.loss import softmax_cross_entropy
from kernelscope.npnet.network import Sequential
from kernelscope.npnet.optim import SGD, Adam

__all__ = ["train_step", "make_optimizer", "evaluate_numpy", "augment", "NonFiniteError"]


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
