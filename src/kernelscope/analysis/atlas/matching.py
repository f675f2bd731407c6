"""Match kernels to the classical bank: best absolute cosine similarity, with the sign kept.

Each kernel is reduced to its spatial profile (for a multi-channel kernel: the
leading singular vector of its ``(C, kh * kw)`` matrix, signed so that its channel
weights sum to a positive number), mean-removed and scaled to unit norm; every
template of :func:`~kernelscope.analysis.atlas.templates.template_bank` is too. One
matrix product ``(N, kh*kw) @ (kh*kw, M)`` gives every cosine; the best absolute
value per family is the score, and the sign of that cosine says whether the kernel
is the template or its negative (which matters with a ReLU after the layer).

Blobs are matched with the mean kept (kernel and Gaussian both unit-norm, not
mean-removed): removing the mean of a low-pass kernel removes what makes it one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernelscope.analysis.atlas.templates import TemplateBank, template_bank
from kernelscope.errors import KernelscopeError

__all__ = ["as_kernel_stack", "spatial_profiles", "match_bank", "BankMatch", "MATCH_FAMILIES"]

MATCH_FAMILIES = ("gabor", "edge", "centre-surround", "blob")


def as_kernel_stack(kernels: np.ndarray, *, name: str = "kernels") -> np.ndarray:
    """Return ``kernels`` as float64 ``(N, C, kh, kw)``; ``(kh, kw)`` and ``(N, kh, kw)`` are accepted.

    Examples
    --------
    >>> as_kernel_stack(np.zeros((3, 3))).shape
    (1, 1, 3, 3)
    >>> as_kernel_stack(np.zeros((5, 3, 3))).shape
    (5, 1, 3, 3)
    """
    array = np.asarray(kernels)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise KernelscopeError(f"{name} must be a numeric array, got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[None, None]
    elif array.ndim == 3:
        array = array[:, None]
    elif array.ndim != 4:
        raise KernelscopeError(
            f"{name} must have shape (O, C, kh, kw), (O, kh, kw) or (kh, kw), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise KernelscopeError(f"{name} is empty: shape {array.shape}")
    if array.shape[2] < 2 or array.shape[3] < 2:
        raise KernelscopeError(
            f"{name} must be at least 2x2 spatially to compare with classical kernels, got {array.shape[2]}x{array.shape[3]}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise KernelscopeError(f"{name} contains NaN or infinite values")
    return array


def spatial_profiles(kernels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leading spatial profile of each kernel and the share of energy it carries.

    Parameters
    ----------
    kernels : ndarray of shape (N, C, kh, kw)

    Returns
    -------
    profiles : ndarray of shape (N, kh, kw)
        ``sigma_1 * v_1`` of the SVD of each ``(C, kh*kw)`` kernel matrix (the kernel
        itself when ``C == 1``), signed so that the channel weights ``u_1`` sum >= 0.
    rank1_fraction : ndarray of shape (N,)
        ``sigma_1**2 / sum(sigma**2)``: 1 for a kernel that is one spatial pattern
        scaled per channel (1.0 when ``C == 1``; NaN for an all-zero kernel).

    Examples
    --------
    >>> k = np.stack([np.eye(3), 2 * np.eye(3), -np.eye(3)])[None]  # (1, 3, 3, 3)
    >>> p, r = spatial_profiles(k)
    >>> bool(np.allclose(p[0], np.sqrt(6) * np.eye(3))), round(float(r[0]), 6)
    (True, 1.0)
    """
    n, c, kh, kw = kernels.shape
    if c == 1:
        energy = np.sum(kernels**2, axis=(1, 2, 3))
        ratio = np.where(energy > 0, 1.0, np.nan)
        return kernels[:, 0].copy(), ratio
    matrices = kernels.reshape(n, c, kh * kw)
    u, s, vt = np.linalg.svd(matrices, full_matrices=False)  # (N, C, r), (N, r), (N, r, kh*kw)
    sign = np.where(u[:, :, 0].sum(axis=1) < 0, -1.0, 1.0)  # (N,)
    profiles = (sign * s[:, 0])[:, None] * vt[:, 0, :]  # (N, kh*kw)
    total = np.sum(s**2, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(total > 0, s[:, 0] ** 2 / np.where(total > 0, total, 1.0), np.nan)
    return profiles.reshape(n, kh, kw), ratio


def _unit_rows(rows: np.ndarray, *, centre: bool) -> tuple[np.ndarray, np.ndarray]:
    if centre:
        rows = rows - rows.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(rows, axis=1)
    scale = np.sqrt(rows.shape[1])
    ok = norm > 1e-12 * scale * max(1.0, float(np.abs(rows).max(initial=0.0)))
    unit = np.divide(rows, norm[:, None], out=np.zeros_like(rows), where=ok[:, None])
    return unit, ok


@dataclass(frozen=True)
class BankMatch:
    """Best matches of N kernels against a :class:`TemplateBank`.

    Attributes
    ----------
    bank : TemplateBank
    score : dict of str to ndarray of shape (N,)
        Best absolute cosine per family (``"gabor"``, ``"edge"``, ``"centre-surround"``,
        ``"blob"``, and ``"named"`` when the bank has unclassified named kernels),
        NaN for a constant kernel.
    index : dict of str to ndarray of int, shape (N,)
        Which template gave that score.
    sign : dict of str to ndarray, shape (N,)
        +1 when the kernel matches the template, -1 when it matches its negative.
    best_score, best_index, best_sign : ndarray of shape (N,)
        The best match over all families (blobs compared with their mean kept).
    """

    bank: TemplateBank
    score: dict[str, np.ndarray]
    index: dict[str, np.ndarray]
    sign: dict[str, np.ndarray]
    best_score: np.ndarray
    best_index: np.ndarray
    best_sign: np.ndarray

    def describe(self, i: int) -> dict:
        """The best overall match of kernel ``i`` as a JSON-ready dict."""
        j = int(self.best_index[i])
        return {
            "family": str(self.bank.family[j]),
            "name": str(self.bank.name[j]),
            "params": self.bank.params[j],
            "transform": str(self.bank.transform[j]),
            "shift": [int(v) for v in self.bank.shift[j]],
            "sign": int(self.best_sign[i]),
            "score": float(self.best_score[i]),
        }


def match_bank(kernels: np.ndarray, bank: TemplateBank | None = None, *, chunk: int = 512) -> BankMatch:
    """Best absolute cosine of every kernel against every template family.

    Parameters
    ----------
    kernels : ndarray of shape (N, C, kh, kw), (N, kh, kw) or (kh, kw)
    bank : TemplateBank, optional
        Default: ``template_bank((kh, kw))``.
    chunk : int
        Kernels per matrix product (bounds the memory of the cosine matrix).

    Returns
    -------
    BankMatch

    Examples
    --------
    >>> from kernelscope.analysis.atlas.templates import gabor_template
    >>> g = gabor_template((7, 7), frequency=0.2, theta=0.5, phase=1.0, sigma_u=1.5, sigma_v=2.0)
    >>> m = match_bank(g, template_bank((7, 7), named=False))
    >>> bool(m.score["gabor"][0] > 0.9), m.describe(0)["family"]
    (True, 'gabor')
    """
    stack = as_kernel_stack(kernels)
    n, _, kh, kw = stack.shape
    if bank is None:
        bank = template_bank((kh, kw))
    if bank.shape != (kh, kw):
        raise KernelscopeError(f"bank shape {bank.shape} does not match kernel size {(kh, kw)}")
    profiles, _ = spatial_profiles(stack)
    rows = profiles.reshape(n, kh * kw)
    centred, ok = _unit_rows(rows, centre=True)
    raw, raw_ok = _unit_rows(rows, centre=False)
    families = [f for f in (*MATCH_FAMILIES, "named") if np.any(bank.family == f)]
    members = {f: bank.members(f) for f in families}
    # float32 products: ample for choosing the best template; scores are recomputed in float64.
    templates = bank.matrix.astype(np.float32)
    blob_rows = members.get("blob", slice(0, 0))
    blob_templates = bank.raw[blob_rows].astype(np.float32)
    score = {f: np.full(n, np.nan) for f in families}
    index = {f: np.zeros(n, dtype=int) for f in families}
    sign = {f: np.ones(n) for f in families}
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        cos = centred[start:stop].astype(np.float32) @ templates.T  # (n_chunk, M)
        for family in families:
            rows = members[family]
            if family == "blob":
                values = raw[start:stop].astype(np.float32) @ blob_templates.T  # (n_chunk, M_blob)
            else:
                values = cos[:, rows]  # a view: families are contiguous
            index[family][start:stop] = rows.start + np.argmax(np.abs(values), axis=1)
    best_score = np.full(n, -1.0)
    best_index = np.zeros(n, dtype=int)
    best_sign = np.ones(n)
    for family in families:
        j = index[family]
        if family == "blob":
            picked = np.sum(raw * bank.raw[j], axis=1)  # exact float64 cosines of the winners
            valid = raw_ok
        else:
            picked = np.sum(centred * bank.matrix[j], axis=1)
            valid = ok
        score[family] = np.where(valid, np.abs(picked), np.nan)
        sign[family] = np.where(picked < 0, -1.0, 1.0)
        better = valid & (np.abs(picked) > best_score)
        best_score = np.where(better, np.abs(picked), best_score)
        best_index = np.where(better, j, best_index)
        best_sign = np.where(better, sign[family], best_sign)
    best_score = np.where(best_score >= 0, best_score, np.nan)
    return BankMatch(bank=bank, score=score, index=index, sign=sign, best_score=best_score,
                     best_index=best_index, best_sign=best_sign)
