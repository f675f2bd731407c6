"""Figures of kernels and of what they do to an image.

* :func:`draw_kernel_grid` — a bank of kernels, ``(O, kh, kw)`` or ``(O, 3, kh, kw)``:
  signed kernels diverge around zero (blue negative, red positive) with one symmetric
  limit shared by all panels, so that panels can be compared; colour kernels are drawn
  as RGB with zero at mid-grey (``0.5 + k / (2 * limit)`` per channel). Small kernels
  get their numbers written in the cells.
* :func:`draw_kernel_card` — one kernel as a textbook figure: its numbers, and the
  magnitude of its frequency response (what it passes and what it removes).
* :func:`draw_filter_responses` — the input image, then for each kernel the kernel
  beside its feature map; signed maps share one symmetric limit and one colour bar.

All functions return a matplotlib ``Figure`` (never pyplot state); save it with
:func:`kernelscope.report.figures.common.save_figure` (atomic).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kernelscope.errors import KernelscopeError
from kernelscope.report.figures.common import (
    imshow_signed,
    imshow_unsigned,
    label_tiles,
    mosaic,
    new_figure,
    symmetric_limit,
)

__all__ = ["draw_kernel", "draw_kernel_grid", "draw_kernel_card", "draw_filter_responses", "rgb_kernel_image"]

_ANNOTATE_MAX_SIDE = 7  # write the numbers into cells of kernels up to 7x7
_MOSAIC_FROM = 33  # from this many grey kernels (never annotated), one image instead of one axes each


def _cell_text(value: float, integers: bool, decimals: int, tiny: float) -> str:
    """Short cell label: integers as such, else ``decimals`` places without the leading zero."""
    if integers:
        return f"{int(round(value))}"
    if abs(value) < tiny:
        return "0"
    text = f"{value:.{decimals}f}"
    return text.replace("0.", ".", 1) if text.startswith(("0.", "-0.")) else text


def draw_kernel(ax, kernel: np.ndarray, *, limit: float | None = None, annotate: bool | None = None,
                title: str | None = None, fontsize: float | None = None):
    """Draw one 2-D kernel on ``ax``: diverging around zero, numbers in the cells when small.

    Parameters
    ----------
    ax : matplotlib Axes
    kernel : ndarray of shape (kh, kw)
    limit : float, optional
        Symmetric colour limit; default the kernel's own largest absolute value.
    annotate : bool, optional
        Write the values in the cells (default: when both sides are <= 7).
    title : str, optional
    fontsize : float, optional
        Of the cell numbers (default scales with the kernel size).

    Returns
    -------
    matplotlib AxesImage
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    limit = symmetric_limit([kernel]) if limit is None else float(limit)
    image = imshow_signed(ax, kernel, limit=limit)
    if annotate is None:
        annotate = max(kernel.shape) <= _ANNOTATE_MAX_SIDE
    if annotate:
        integers = bool(np.allclose(kernel, np.round(kernel)))
        biggest = float(np.abs(kernel).max()) or 1.0
        decimals = max(0, 1 - int(np.floor(np.log10(biggest))))  # two significant digits on the largest
        size = fontsize or max(5.0, 11.0 - 1.2 * max(kernel.shape))
        for (i, j), value in np.ndenumerate(kernel):
            strong = abs(value) > 0.6 * limit
            ax.text(j, i, _cell_text(value, integers, decimals, 0.5 * 10.0**-decimals), ha="center",
                    va="center", fontsize=size, color="white" if strong else "black")
    if title:
        ax.set_title(title, fontsize=9)
    return image


def rgb_kernel_image(kernel: np.ndarray, limit: float) -> np.ndarray:
    """A ``(3, kh, kw)`` colour kernel as an RGB image ``(kh, kw, 3)``: zero is mid-grey.

    Examples
    --------
    >>> rgb_kernel_image(np.zeros((3, 2, 2)), 1.0)[0, 0]
    array([0.5, 0.5, 0.5])
    """
    return np.clip(0.5 + np.moveaxis(np.asarray(kernel, dtype=np.float64), 0, -1) / (2.0 * limit), 0.0, 1.0)


def _as_bank(kernels: np.ndarray) -> np.ndarray:
    """(kh, kw) | (O, kh, kw) | (O, 1, kh, kw) | (O, 3, kh, kw) -> (O, kh, kw) or (O, 3, kh, kw)."""
    kernels = np.asarray(kernels, dtype=np.float64)
    if kernels.ndim == 2:
        kernels = kernels[None]
    if kernels.ndim == 4 and kernels.shape[1] == 1:
        kernels = kernels[:, 0]
    if kernels.ndim == 3 or (kernels.ndim == 4 and kernels.shape[1] == 3):
        if kernels.shape[0] == 0 or min(kernels.shape[-2:]) == 0:
            raise KernelscopeError(f"kernels: nothing to draw (shape {kernels.shape})")
        if not np.isfinite(kernels).all():
            raise KernelscopeError("kernels contain NaN or infinite values")
        return kernels
    raise KernelscopeError(
        f"kernels must have shape (O, kh, kw), (O, 1, kh, kw) or (O, 3, kh, kw), got {kernels.shape}; "
        "for other channel counts pass one channel (kernels[:, c]) or a channel mean"
    )


def draw_kernel_grid(kernels: np.ndarray, titles: Sequence[str] | None = None, *, ncols: int | None = None,
                     limit: float | str = "shared", annotate: bool | None = None, suptitle: str | None = None,
                     colorbar: bool = True, panel_size: float = 1.25, max_kernels: int | None = 256,
                     mosaic_image: bool | None = None):
    """A grid of kernels with an honest colour scale.

    Parameters
    ----------
    kernels : ndarray of shape (O, kh, kw), (O, 1, kh, kw) or (O, 3, kh, kw)
        Grey kernels are drawn diverging around zero; three-channel kernels as RGB
        with zero at mid-grey.
    titles : sequence of str, optional
        One per kernel (default ``0, 1, ...``).
    ncols : int, optional
        Columns of the grid (default: close to square, at most 8).
    limit : "shared", "each" or float
        ``"shared"``: one symmetric limit, the largest absolute value over all
        kernels (panels comparable); ``"each"``: every panel its own limit (shapes
        visible, magnitudes not comparable; the limit is then written under the
        panel); a number: that limit for all.
    annotate : bool, optional
        Write values into the cells (default: grey kernels whose numbers fit, up to 5x5 at the
        default panel size and 7x7 at ``panel_size=1.75``, and at most 32 of them).
    suptitle : str, optional
    colorbar : bool
        One colour bar for the shared limit (grey kernels only).
    panel_size : float
        Inches per panel.
    max_kernels : int or None
        Draw at most this many (the first ones; the title says so), so that a 512-channel
        layer does not make an 80-inch figure. ``None``: all. The shared limit is computed
        over the drawn kernels.
    mosaic_image : bool, optional
        Draw the grey kernels as one image (tiles on one axes, titles above them)
        instead of one axes each: the same colours, about ten times faster for a
        large layer. Needs a single limit and no numbers in the cells. Default: for
        more than 32 grey kernels without numbers.

    Returns
    -------
    matplotlib Figure

    Examples
    --------
    >>> from kernelscope.kernels import get_kernel
    >>> bank = np.stack([get_kernel(n) for n in ("sobel_x", "sobel_y", "laplacian")])
    >>> fig = draw_kernel_grid(bank, ["sobel_x", "sobel_y", "laplacian"])
    >>> len(fig.axes)  # three panels and the colour bar
    4
    >>> len(draw_kernel_grid(np.ones((64, 5, 5)), suptitle="conv1").axes)  # one mosaic and its colour bar
    2
    """
    bank = _as_bank(kernels)
    total = bank.shape[0]
    rgb = bank.ndim == 4
    if titles is not None and len(titles) != total:
        raise KernelscopeError(f"titles: got {len(titles)} titles for {total} kernels")
    if max_kernels is not None:
        if int(max_kernels) < 1:
            raise KernelscopeError(f"max_kernels must be >= 1 or None, got {max_kernels}")
        bank = bank[: int(max_kernels)]
        titles = None if titles is None else list(titles)[: int(max_kernels)]
    count = bank.shape[0]
    if count < total:
        suptitle = f"{suptitle + ': ' if suptitle else ''}first {count} of {total} kernels"
    if isinstance(limit, str) and limit not in ("shared", "each"):
        raise KernelscopeError(f"limit must be 'shared', 'each' or a number, got {limit!r}")
    ncols = min(count, 8, int(np.ceil(np.sqrt(count * 1.5)))) if ncols is None else int(ncols)
    if ncols < 1:
        raise KernelscopeError(f"ncols must be >= 1, got {ncols}")
    nrows = int(np.ceil(count / ncols))
    shared = symmetric_limit([bank]) if limit == "shared" else (None if limit == "each" else float(limit))
    if annotate is None:
        # numbers only where they fit: about 4 cells per inch of panel (never in a mosaic asked for)
        annotate = (not rgb and not mosaic_image and count <= 32
                    and max(bank.shape[-2:]) <= min(_ANNOTATE_MAX_SIDE, int(4 * panel_size)))
    if mosaic_image is None:
        mosaic_image = not rgb and not annotate and shared is not None and count >= _MOSAIC_FROM
    elif mosaic_image and (rgb or annotate or shared is None):
        raise KernelscopeError("mosaic_image=True draws grey kernels with one limit and no numbers; got "
                               f"{'RGB kernels' if rgb else 'limit=each' if shared is None else 'annotate=True'}")
    if mosaic_image:
        return _kernel_mosaic(bank, titles, ncols, shared, suptitle, colorbar, panel_size)
    fig = new_figure(figsize=(panel_size * ncols + (0.9 if colorbar and not rgb else 0.2),
                              panel_size * nrows * 1.15 + (0.4 if suptitle else 0.1)))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    image = None
    for index, ax in enumerate(axes):
        if index >= count:
            ax.set_axis_off()
            continue
        kernel = bank[index]
        own = symmetric_limit([kernel]) if shared is None else shared
        title = titles[index] if titles is not None else str(index)
        if rgb:
            imshow_unsigned(ax, rgb_kernel_image(kernel, own))
            ax.set_title(title, fontsize=8)
        else:
            image = draw_kernel(ax, kernel, limit=own, annotate=annotate, title=None)
            ax.set_title(title, fontsize=8)
        if shared is None:
            ax.set_xlabel(f"|max| {own:.3g}", fontsize=7)
    if colorbar and not rgb and shared is not None and image is not None:
        fig.colorbar(image, ax=list(axes[:count]), shrink=0.8, label="weight")
    if suptitle:
        note = " (RGB, zero = grey)" if rgb else ""
        fig.suptitle(suptitle + note, fontsize=10)
    return fig


def _kernel_mosaic(bank: np.ndarray, titles: Sequence[str] | None, ncols: int, limit: float,
                   suptitle: str | None, colorbar: bool, panel_size: float):
    """:func:`draw_kernel_grid`'s grey kernels ``(O, kh, kw)`` as one image on one axes."""
    count, kh, kw = bank.shape
    nrows = int(np.ceil(count / ncols))
    fig = new_figure(figsize=(panel_size * ncols + (0.9 if colorbar else 0.2),
                              panel_size * nrows * 1.05 + (0.4 if suptitle else 0.1)))
    ax = fig.add_subplot()
    image = imshow_signed(ax, mosaic(bank, ncols), limit=limit)
    label_tiles(ax, count, ncols, kh, kw, labels=None if titles is None else list(titles))
    ax.set_frame_on(False)
    if colorbar:
        fig.colorbar(image, ax=ax, shrink=0.8, pad=0.02, label="weight")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


def _frequency_response(kernel: np.ndarray, size: int = 64) -> np.ndarray:
    """|DFT| of the kernel zero-padded to ``size x size``, zero frequency at the centre."""
    padded = np.zeros((max(size, kernel.shape[0]), max(size, kernel.shape[1])))
    padded[: kernel.shape[0], : kernel.shape[1]] = kernel
    return np.fft.fftshift(np.abs(np.fft.fft2(padded)))


def draw_kernel_card(kernel: np.ndarray, title: str = "", *, description: str = ""):
    """One kernel as a textbook figure: values (numbers in the cells) and frequency response.

    Parameters
    ----------
    kernel : ndarray of shape (kh, kw)
    title : str
    description : str
        One line shown under the title (what the kernel detects).

    Returns
    -------
    matplotlib Figure

    Examples
    --------
    >>> from kernelscope.kernels import get_kernel
    >>> fig = draw_kernel_card(get_kernel("sobel_x"), "sobel_x")
    >>> [ax.get_title() for ax in fig.axes][:2]
    ['weights (cross-correlation)', '|frequency response|']
    """
    kernel = _as_bank(kernel)
    if kernel.ndim != 3 or kernel.shape[0] != 1:
        raise KernelscopeError(f"draw_kernel_card needs one 2-D kernel, got shape {np.shape(kernel)}")
    kernel = kernel[0]
    fig = new_figure(figsize=(8.0, 4.2))
    left, right = fig.subplots(1, 2)
    image = draw_kernel(left, kernel, annotate=max(kernel.shape) <= 9, title="weights (cross-correlation)")
    fig.colorbar(image, ax=left, shrink=0.8)
    response = _frequency_response(kernel)
    extent = (-0.5, 0.5, 0.5, -0.5)  # cycles per pixel, fx right, fy down
    right.imshow(response, cmap="magma", extent=extent, vmin=0, interpolation="nearest")
    right.set_title("|frequency response|", fontsize=9)
    right.set_xlabel("fx (cycles / pixel)", fontsize=8)
    right.set_ylabel("fy (cycles / pixel)", fontsize=8)
    right.tick_params(labelsize=7)
    fig.suptitle(f"{title}\n{description}" if description else title, fontsize=10)
    return fig


def draw_filter_responses(image: np.ndarray, responses: Sequence[tuple], magnitudes: Sequence[tuple[str, np.ndarray]] = (),
                          *, scale: str = "family", image_title: str = "input", panel_height: float = 2.6):
    """The input, then each kernel beside its feature map, on an honest colour scale.

    Parameters
    ----------
    image : ndarray of shape (H, W) or (H, W, 3), values in [0, 1]
    responses : sequence of (label, kernel (kh, kw), map (H, W) or (H, W, 3)[, group])
        Maps of colour images filtered per channel show one panel per channel. ``group``
        (default: the label) names the kernels whose maps are comparable, such as a family.
    magnitudes : sequence of (label, map (H, W) or (H, W, 3))
        Edge magnitudes (>= 0), drawn in grey from 0 to their shared maximum.
    scale : {"family", "shared", "each"}
        Signed maps always diverge around zero with symmetric limits. ``"family"``: one
        limit and colour bar per group (kernels of one family, normalised alike, are
        compared on one scale; a Gabor is not drowned by a Sobel whose weights are 30
        times larger); ``"shared"``: one limit for all signed maps; ``"each"``: every
        map its own. The largest absolute value of each map is in its title either way.
        Maps of non-negative kernels (smoothing) are drawn in grey like the input.

    Returns
    -------
    matplotlib Figure

    Examples
    --------
    >>> from kernelscope.kernels import filter_image, get_kernel
    >>> img = np.zeros((16, 16)); img[:, 8:] = 1.0
    >>> rows = [(n, get_kernel(n), filter_image(img, n)) for n in ("sobel_x", "gaussian")]
    >>> fig = draw_filter_responses(img, rows)
    >>> [ax.get_title() for ax in fig.axes][:2]
    ['', 'input']
    """
    if scale not in ("family", "shared", "each"):
        raise KernelscopeError(f"scale must be 'family', 'shared' or 'each', got {scale!r}")
    image = np.asarray(image, dtype=np.float64)
    height, width = image.shape[:2]
    rows_in = []
    for index, entry in enumerate(responses):
        label, kernel, fmap = entry[:3]
        kernel, fmap = np.asarray(kernel, dtype=np.float64), np.asarray(fmap, dtype=np.float64)
        signed = bool((kernel < 0).any())
        group = {"family": entry[3] if len(entry) > 3 else label, "shared": "all", "each": index}[scale]
        rows_in.append((label, kernel, fmap, signed, group))
    limits: dict[object, float] = {}
    for _, _, fmap, signed, group in rows_in:
        if signed:
            limits[group] = max(limits.get(group, 0.0), symmetric_limit([fmap]))
    channels = max([1] + [m.shape[-1] for _, _, m, _, _ in rows_in if m.ndim == 3]
                   + [np.asarray(m).shape[-1] for _, m in magnitudes if np.asarray(m).ndim == 3])
    mag_max = max([float(np.max(m)) for _, m in magnitudes] + [1e-12])
    rows = 1 + len(rows_in) + len(magnitudes)
    aspect = width / height
    fig = new_figure(figsize=(panel_height * 0.9 + channels * panel_height * aspect + 1.4,
                              rows * panel_height + 0.3))
    grid = fig.add_gridspec(rows, 1 + channels, width_ratios=[0.9] + [aspect] * channels)
    left = fig.add_subplot(grid[0, 0])
    left.set_axis_off()
    ax = fig.add_subplot(grid[0, 1:])
    imshow_unsigned(ax, image, vmin=0.0, vmax=1.0)
    ax.set_title(image_title, fontsize=9)
    names = ("R", "G", "B")
    group_axes: dict[object, list] = {}
    group_image: dict[object, object] = {}
    for row, (label, kernel, fmap, signed, group) in enumerate(rows_in, start=1):
        draw_kernel(fig.add_subplot(grid[row, 0]), kernel, title=label, annotate=max(kernel.shape) <= 5)
        planes = [fmap] if fmap.ndim == 2 else [fmap[..., c] for c in range(fmap.shape[-1])]
        for c, plane in enumerate(planes):
            ax = fig.add_subplot(grid[row, 1 + c])
            peak = float(np.abs(plane).max())
            suffix = f" {names[c]}" if len(planes) == 3 else ""
            if signed:
                group_image[group] = imshow_signed(ax, plane, limit=limits[group])
                group_axes.setdefault(group, []).append(ax)
            else:
                imshow_unsigned(ax, plane, vmin=0.0, vmax=max(1.0, peak))
            ax.set_title(f"{label}{suffix}: max |r| {peak:.3g}", fontsize=8)
    for row, (label, fmap) in enumerate(magnitudes, start=1 + len(rows_in)):
        fmap = np.asarray(fmap, dtype=np.float64)
        left = fig.add_subplot(grid[row, 0])
        left.set_axis_off()
        left.text(0.5, 0.5, f"{label}\nsqrt(x^2 + y^2)", ha="center", va="center", fontsize=8,
                  transform=left.transAxes)
        planes = [fmap] if fmap.ndim == 2 else [fmap[..., c] for c in range(fmap.shape[-1])]
        for c, plane in enumerate(planes):
            ax = fig.add_subplot(grid[row, 1 + c])
            imshow_unsigned(ax, plane, vmin=0.0, vmax=mag_max)
            suffix = f" {names[c]}" if len(planes) == 3 else ""
            ax.set_title(f"{label} magnitude{suffix}: max {float(plane.max()):.3g}", fontsize=8)
    for group, axes in group_axes.items():
        label = "response" if scale == "each" else f"response ({'all' if scale == 'shared' else group})"
        fig.colorbar(group_image[group], ax=axes, shrink=0.8, label=label)
    return fig
