"""The candidate bank: classical kernels drawn at the size of the kernels under study.

Four parametric families are generated here, on a grid that is closed under the
8 rotations/flips of the square (orientations every 15 degrees, centres shifted
symmetrically), so that a transformed template is itself in the grid:

============== =================================================================
family         templates
============== =================================================================
gabor          cosine and sine Gabors: 5 frequencies x 12 orientations x 2 phases
               x 3 envelope widths x the centre shifts
edge           first derivatives of a Gaussian: 12 orientations x 3 widths x
               2 elongations x the centre shifts
centre-surround differences of Gaussians (2 ratios) and Laplacians of Gaussian at
               3 widths x the centre shifts
blob           Gaussians at 4 widths and a box, x the centre shifts
============== =================================================================

The named kernels of :mod:`kernelscope.kernels` (Sobel, Prewitt, Laplacian, ...)
are added when that module is available: drawn at the size when the kernel
supports a ``size``, otherwise both embedded at the centre (with the same shifts)
and resampled to the size; each under its 8 transforms.

Every template is stored mean-removed and unit-norm (``matrix``), and also
unit-norm with its mean kept (``raw``): blobs and low-pass kernels are matched with
their mean, because for them the mean *is* the signal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

__all__ = ["TemplateBank", "template_bank", "centre_shifts", "FAMILIES", "gabor_template",
           "DIHEDRAL"]

FAMILIES = ("gabor", "edge", "centre-surround", "blob", "named")

# The 8 symmetries of the square, as functions of a 2-D array.
DIHEDRAL = {
    "identity": lambda a: a,
    "rot90": lambda a: np.rot90(a, 1),
    "rot180": lambda a: np.rot90(a, 2),
    "rot270": lambda a: np.rot90(a, 3),
    "flip_lr": lambda a: a[:, ::-1],
    "flip_ud": lambda a: a[::-1, :],
    "transpose": lambda a: a.T,
    "anti_transpose": lambda a: np.rot90(a, 2).T,
}


@dataclass(frozen=True)
class TemplateBank:
    """Candidate kernels at one size, as matrices ready for one matrix product.

    Attributes
    ----------
    shape : tuple of int
        ``(kh, kw)``.
    matrix : ndarray of shape (M, kh * kw)
        Mean-removed, unit-norm templates (rows of zeros for templates that are
        constant, which never match).
    raw : ndarray of shape (M, kh * kw)
        Unit-norm templates with their mean kept.
    family, name, transform : ndarray of str, shape (M,)
    shift : ndarray of int, shape (M, 2)
        ``(dy, dx)`` offset of the template's centre from the kernel's centre.
    params : list of str
        A short description of each template's parameters.
    """

    shape: tuple[int, int]
    matrix: np.ndarray
    raw: np.ndarray
    family: np.ndarray
    name: np.ndarray
    transform: np.ndarray
    shift: np.ndarray
    params: list[str] = field(repr=False)

    def __len__(self) -> int:
        return self.matrix.shape[0]

    def members(self, family: str) -> slice:
        """The rows of ``family`` (families are stored contiguously)."""
        rows = np.flatnonzero(self.family == family)
        return slice(int(rows[0]), int(rows[-1]) + 1) if rows.size else slice(0, 0)

    def template(self, index: int) -> np.ndarray:
        """The mean-removed unit-norm template ``index`` as a ``(kh, kw)`` array."""
        return self.matrix[index].reshape(self.shape)


def centre_shifts(shape: tuple[int, int]) -> list[tuple[int, int]]:
    """Small centre offsets searched for a kernel of ``shape``.

    None for 3x3 (the centre is the only one that fits), one pixel each way up to
    8x8, two pixels each way from 9x9.

    Examples
    --------
    >>> centre_shifts((3, 3))
    [(0, 0)]
    >>> len(centre_shifts((7, 7))), len(centre_shifts((11, 11)))
    (9, 25)
    """
    size = min(shape)
    reach = 0 if size <= 4 else (1 if size <= 8 else 2)
    return [(dy, dx) for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)]


def _grid(shape: tuple[int, int], shift: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    kh, kw = shape
    y, x = np.mgrid[0:kh, 0:kw].astype(float)
    return x - (kw - 1) / 2 - shift[1], y - (kh - 1) / 2 - shift[0]


def gabor_template(shape: tuple[int, int], *, frequency: float, theta: float, phase: float,
                   sigma_u: float, sigma_v: float, centre: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """A 2-D Gabor drawn on a ``(kh, kw)`` grid (x right, y down, origin at the centre).

    ``theta`` is the direction of the wave vector; ``sigma_u`` the envelope width
    along it and ``sigma_v`` across it; ``centre`` is ``(dx, dy)`` from the middle.

    Examples
    --------
    >>> g = gabor_template((5, 5), frequency=0.25, theta=0.0, phase=0.0, sigma_u=2.0, sigma_v=2.0)
    >>> g.shape, bool(np.allclose(g, g[::-1, :]))
    ((5, 5), True)
    """
    kh, kw = shape
    y, x = np.mgrid[0:kh, 0:kw].astype(float)
    x = x - (kw - 1) / 2 - centre[0]
    y = y - (kh - 1) / 2 - centre[1]
    u = x * np.cos(theta) + y * np.sin(theta)
    v = -x * np.sin(theta) + y * np.cos(theta)
    envelope = np.exp(-0.5 * (u**2 / sigma_u**2 + v**2 / sigma_v**2))
    return envelope * np.cos(2 * np.pi * frequency * u + phase)


def _gabor_family(shape, shifts):
    size = min(shape)
    frequencies = np.geomspace(1.0 / size, 0.4, 5)
    thetas = np.arange(12) * np.pi / 12
    widths = (size / 8, size / 5, size / 3.5)
    for shift in shifts:
        for f in frequencies:
            for theta in thetas:
                for phase in (0.0, np.pi / 2):
                    for sigma in widths:
                        t = gabor_template(shape, frequency=f, theta=theta, phase=phase, sigma_u=sigma,
                                           sigma_v=sigma, centre=(shift[1], shift[0]))
                        yield "gabor", "gabor", f"f={f:.3f} theta={np.degrees(theta):.0f} " \
                            f"phase={np.degrees(phase):.0f} sigma={sigma:.2f}", shift, t


def _edge_family(shape, shifts):
    size = min(shape)
    for shift in shifts:
        x, y = _grid(shape, shift)
        for theta in np.arange(12) * np.pi / 12:
            u = x * np.cos(theta) + y * np.sin(theta)
            v = -x * np.sin(theta) + y * np.cos(theta)
            for sigma in (size / 9, size / 6, size / 4):
                for elongation in (1.0, 2.0):
                    t = -u * np.exp(-0.5 * (u**2 + (v / elongation) ** 2) / sigma**2)
                    yield "edge", "gaussian_derivative", f"theta={np.degrees(theta):.0f} " \
                        f"sigma={sigma:.2f} elongation={elongation:g}", shift, t


def _centre_surround_family(shape, shifts):
    size = min(shape)
    for shift in shifts:
        x, y = _grid(shape, shift)
        r2 = x**2 + y**2
        for sigma in (size / 10, size / 7, size / 5):
            for ratio in (1.6, 3.0):
                t = np.exp(-r2 / (2 * sigma**2)) / sigma**2 - np.exp(-r2 / (2 * (ratio * sigma) ** 2)) / (
                    ratio * sigma) ** 2
                yield "centre-surround", "difference_of_gaussians", f"sigma={sigma:.2f} ratio={ratio:g}", shift, t
            t = (r2 / (2 * sigma**2) - 1) * np.exp(-r2 / (2 * sigma**2))
            yield "centre-surround", "laplacian_of_gaussian", f"sigma={sigma:.2f}", shift, -t


def _blob_family(shape, shifts):
    size = min(shape)
    for shift in shifts:
        x, y = _grid(shape, shift)
        for sigma in (size / 10, size / 6, size / 4, size / 2.5):
            yield "blob", "gaussian", f"sigma={sigma:.2f}", shift, np.exp(-(x**2 + y**2) / (2 * sigma**2))
    yield "blob", "box", "", (0, 0), np.ones(shape)


def _resample(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from scipy.ndimage import zoom

    factors = (shape[0] / kernel.shape[0], shape[1] / kernel.shape[1])
    out = zoom(kernel, factors, order=1, mode="nearest", grid_mode=True)
    return out[: shape[0], : shape[1]]


def _embed(kernel: np.ndarray, shape: tuple[int, int], shift: tuple[int, int]) -> np.ndarray | None:
    kh, kw = kernel.shape
    top = (shape[0] - kh) // 2 + shift[0]
    left = (shape[1] - kw) // 2 + shift[1]
    if top < 0 or left < 0 or top + kh > shape[0] or left + kw > shape[1]:
        return None
    out = np.zeros(shape)
    out[top : top + kh, left : left + kw] = kernel
    return out


# kernelscope.kernels family -> atlas family ("other": identity, sharpen, emboss: best match only).
_NAMED_FAMILY = {"edge": "edge", "smoothing": "blob", "laplacian": "centre-surround",
                 "centre-surround": "centre-surround", "gabor": "gabor"}


def _named_kernels(shape, shifts):
    """Kernels of the classical bank (kernelscope.kernels)."""
    from kernelscope.kernels import get_kernel, kernel_info, kernel_names

    for name in kernel_names():
        info = kernel_info(name)
        family = _NAMED_FAMILY.get(info.family, "named")
        drawn = []
        if shape[0] == shape[1] and info.resizable:
            try:
                k = np.asarray(get_kernel(name, size=shape[0]), dtype=float)
                if k.shape == shape:
                    drawn.append(("size", [(0, 0)], k))
            except (TypeError, ValueError):
                pass
        if not drawn:
            try:
                k = np.asarray(get_kernel(name), dtype=float)
            except (TypeError, ValueError):
                continue
            if k.ndim != 2:
                continue
            if k.shape[0] <= shape[0] and k.shape[1] <= shape[1]:
                drawn.append(("embedded", shifts, k))
            if k.shape != shape:
                drawn.append(("resampled", [(0, 0)], k))
        for how, how_shifts, k in drawn:
            for shift in how_shifts:
                base = _embed(k, shape, shift) if how == "embedded" else (
                    _resample(k, shape) if how == "resampled" else k)
                if base is None:
                    continue
                for transform, fn in DIHEDRAL.items():
                    t = fn(base)
                    if t.shape != shape:
                        continue
                    yield family, name, how, shift, t, transform


@lru_cache(maxsize=16)
def template_bank(shape: tuple[int, int], *, named: bool = True) -> TemplateBank:
    """All candidate templates for kernels of ``shape`` (cached per shape).

    Parameters
    ----------
    shape : tuple of int
        ``(kh, kw)`` of the kernels to match.
    named : bool
        Include the named kernels of :mod:`kernelscope.kernels` when available.

    Returns
    -------
    TemplateBank

    Examples
    --------
    >>> bank = template_bank((7, 7), named=False)
    >>> bank.matrix.shape[1], sorted(set(bank.family.tolist()))
    (49, ['blob', 'centre-surround', 'edge', 'gabor'])
    >>> norms = np.linalg.norm(bank.matrix, axis=1)  # the box is constant: zero once mean-removed
    >>> bool(np.allclose(norms[bank.name != "box"], 1.0)), float(norms[bank.name == "box"][0])
    (True, 0.0)
    """
    shape = (int(shape[0]), int(shape[1]))
    shifts = centre_shifts(shape)
    rows, family, names, transform, shift, params = [], [], [], [], [], []
    for generator in (_gabor_family, _edge_family, _centre_surround_family, _blob_family):
        for fam, name, param, sh, t in generator(shape, shifts):
            rows.append(t.ravel())
            family.append(fam)
            names.append(name)
            transform.append("identity")
            shift.append(sh)
            params.append(param)
    if named:
        for fam, name, how, sh, t, tr in _named_kernels(shape, shifts):
            rows.append(t.ravel())
            family.append(fam)
            names.append(name)
            transform.append(tr)
            shift.append(sh)
            params.append(how)
    # Families stored contiguously, in FAMILIES order, so that each is a slice of the matrix.
    order = sorted(range(len(rows)), key=lambda i: FAMILIES.index(family[i]))
    rows, family, names, transform, shift, params = ([seq[i] for i in order] for seq in
                                                     (rows, family, names, transform, shift, params))
    raw_rows = np.asarray(rows, dtype=float)
    centred = raw_rows - raw_rows.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(centred, axis=1, keepdims=True)
    matrix = np.divide(centred, norm, out=np.zeros_like(centred), where=norm > 1e-9 * np.sqrt(raw_rows.shape[1]))
    raw_norm = np.linalg.norm(raw_rows, axis=1, keepdims=True)
    raw_unit = np.divide(raw_rows, raw_norm, out=np.zeros_like(raw_rows), where=raw_norm > 0)
    return TemplateBank(shape=shape, matrix=matrix, raw=raw_unit, family=np.asarray(family),
                        name=np.asarray(names), transform=np.asarray(transform),
                        shift=np.asarray(shift, dtype=int).reshape(-1, 2), params=params)
