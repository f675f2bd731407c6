"""``kernelscope filter IMAGE --kernels ... --out FIG.png``: kernels beside their feature maps."""

from __future__ import annotations

import click

from kernelscope.errors import KernelscopeError

__all__ = ["filter_command", "split_kernel_list"]

DEFAULT_KERNELS = "sobel_x,sobel_y,laplacian,gabor"


def split_kernel_list(text: str) -> list[str]:
    """``"sobel_x, gabor:theta=45deg"`` -> ``["sobel_x", "gabor:theta=45deg"]`` (no empties)."""
    specs = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not spec for spec in specs):
        raise KernelscopeError(f"--kernels must be a comma-separated list of kernel names, got {text!r}")
    if len(specs) > 16:
        raise KernelscopeError(f"--kernels: at most 16 kernels in one figure, got {len(specs)}")
    return specs


@click.command("filter")
@click.argument("image")
@click.option("--kernels", "kernel_list", default=DEFAULT_KERNELS, show_default=True,
              help="Comma-separated names or specs (gabor:theta=45deg:wavelength=6); see `kernelscope kernels list`.")
@click.option("--out", required=True, metavar="FIG.png", help="The figure to write (png, pdf, svg, jpg).")
@click.option("--magnitude", is_flag=True,
              help="Add sqrt(x^2 + y^2) for each x/y pair among the kernels (sobel_x + sobel_y, ...).")
@click.option("--padding-mode", default="reflect", show_default=True,
              type=click.Choice(["reflect", "zeros", "constant", "replicate", "circular", "symmetric"]),
              help="Border handling; 'symmetric' is scikit-image's 'reflect'.")
@click.option("--pad-value", default=0.0, show_default=True, type=float,
              help="Fill value for --padding-mode constant.")
@click.option("--color", default="luminance", show_default=True, type=click.Choice(["luminance", "per-channel"]),
              help="Colour images: filter the luminance (BT.709) or each channel.")
@click.option("--mode", default="correlate", show_default=True, type=click.Choice(["correlate", "convolve"]),
              help="Cross-correlation (what CNN layers compute) or true convolution.")
@click.option("--scale", default="family", show_default=True, type=click.Choice(["family", "shared", "each"]),
              help="Signed maps diverge around zero with one symmetric limit per kernel family, "
                   "one for all, or one each.")
@click.option("--save-maps", default=None, metavar="MAPS.npz", help="Also save the feature maps (one array per kernel).")
def filter_command(image: str, kernel_list: str, out: str, magnitude: bool, padding_mode: str,
                   pad_value: float, color: str, mode: str, scale: str, save_maps: str | None) -> None:
    """Filter IMAGE (a file or sample:NAME) with classical kernels and draw each beside its map."""
    import numpy as np

    from kernelscope._io import write_npz
    from kernelscope.cli.kernels import check_figure_path
    from kernelscope.data.images import load_image
    from kernelscope.kernels import filter_image
    from kernelscope.kernels.registry import kernel_info, parse_kernel_spec, resolve_kernel
    from kernelscope.report.figures.common import save_figure
    from kernelscope.report.figures.kernels import draw_filter_responses

    # Validate everything before any work or any write.
    path = check_figure_path(out)
    if save_maps is not None and not save_maps.endswith(".npz"):
        raise KernelscopeError(f"--save-maps must name a .npz file, got {save_maps!r}")
    specs = split_kernel_list(kernel_list)
    kernels = [resolve_kernel(spec) for spec in specs]  # (kernel, label); unknown names fail here
    parsed = [parse_kernel_spec(spec) for spec in specs]
    pairs = []
    if magnitude:
        for i, (name, params) in enumerate(parsed):
            if name.endswith("_x"):
                for j, (other, other_params) in enumerate(parsed):
                    if other == name[:-2] + "_y" and other_params == params:
                        pairs.append((name[:-2], i, j))
                        break
        if not pairs:
            raise KernelscopeError(
                "--magnitude needs an x/y pair among --kernels (like sobel_x,sobel_y or scharr_x,scharr_y); "
                f"got {', '.join(specs)}"
            )
    picture = load_image(image)
    height, width = picture.shape[:2]
    for kernel, label in kernels:
        if kernel.shape[0] > height or kernel.shape[1] > width:
            raise KernelscopeError(
                f"image {image!r} of {height}x{width} pixels is smaller than the "
                f"{kernel.shape[0]}x{kernel.shape[1]} kernel {label}"
            )

    maps = [filter_image(picture, kernel, padding_mode=padding_mode, pad_value=pad_value, color=color, mode=mode)
            for kernel, _ in kernels]
    shown = [k[::-1, ::-1] if mode == "convolve" else k for k, _ in kernels]  # what was correlated
    families = [kernel_info(name).family for name, _ in parsed]
    responses = [(label, kernel, fmap, family)
                 for (_, label), kernel, fmap, family in zip(kernels, shown, maps, families, strict=True)]
    magnitudes = [(stem, np.hypot(maps[i], maps[j])) for stem, i, j in pairs]
    title = f"{image} ({height}x{width}{', colour' if picture.ndim == 3 else ''}), {mode}, padding {padding_mode}"
    figure = draw_filter_responses(picture, responses, magnitudes, scale=scale, image_title=title)
    save_figure(figure, path)
    for (label, _, fmap, _) in responses:
        click.echo(f"{label:<28} min {fmap.min():+.4g}  max {fmap.max():+.4g}")
    for stem, fmap in magnitudes:
        click.echo(f"{stem + ' magnitude':<28} max {fmap.max():.4g}")
    if save_maps is not None:
        arrays = {label: fmap.astype(np.float32) for label, _, fmap, _ in responses}
        arrays.update({f"{stem}_magnitude": fmap.astype(np.float32) for stem, fmap in magnitudes})
        write_npz(save_maps, **arrays)
        click.echo(f"wrote {save_maps}")
    click.echo(f"wrote {path}")
