"""Softmax cross-entropy, the loss of the first-principles network (NumPy only)."""

from __future__ import annotations

import numpy as np

from kernelscope.errors import KernelscopeError

__all__ = ["softmax_cross_entropy"]


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of ``softmax(logits)`` against integer ``labels``, and its gradient.

    The same number as ``torch.nn.functional.cross_entropy`` (reduction "mean"):
    ``loss = mean_n(logsumexp(z_n) - z_n[y_n])``; its gradient with respect to the
    logits is ``(softmax(z) - onehot(y)) / N``.

    Parameters
    ----------
    logits : ndarray of shape (N, K)
    labels : ndarray of shape (N,), integers in ``[0, K)``

    Returns
    -------
    loss : float
    grad : ndarray of shape (N, K), same dtype as ``logits``

    Examples
    --------
    >>> loss, grad = softmax_cross_entropy(np.zeros((2, 4)), np.array([0, 3]))
    >>> round(loss, 6), grad[0]
    (1.386294, array([-0.375,  0.125,  0.125,  0.125]))
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise KernelscopeError(
            f"softmax_cross_entropy needs logits (N, K) and labels (N,); got {tuple(logits.shape)} "
            f"and {tuple(labels.shape)}")
    n, k = logits.shape
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise KernelscopeError(f"labels must lie in [0, {k}); got values {labels.min()}..{labels.max()}")
    shifted = logits - logits.max(axis=1, keepdims=True)  # (N, K), max 0 per row: exp cannot overflow
    exp = np.exp(shifted)  # (N, K)
    sum_exp = exp.sum(axis=1, keepdims=True)  # (N, 1)
    log_probs = shifted - np.log(sum_exp)  # (N, K)
    loss = float(-log_probs[np.arange(n), labels].mean())
    grad = exp / sum_exp  # (N, K): softmax
    grad[np.arange(n), labels] -= 1
    grad /= n
    return loss, grad.astype(logits.dtype, copy=False)
