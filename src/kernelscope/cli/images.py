"""``kernelscope images``: the real images that ship with the installed packages."""

from __future__ import annotations

import click

from kernelscope._io import dumps_json

__all__ = ["images_command"]


@click.command("images")
@click.option("--shapes", is_flag=True, help="Also load each image and print its shape (a few seconds).")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def images_command(shapes: bool, as_json: bool) -> None:
    """List the bundled sample images (use them as sample:NAME, e.g. kernelscope filter sample:camera)."""
    from kernelscope.data.images import load_image, sample_image_info, sample_image_names

    rows = [sample_image_info(name) for name in sample_image_names()]
    if shapes:
        for row in rows:
            row["shape"] = list(load_image(f"sample:{row['name']}").shape)
    if as_json:
        click.echo(dumps_json(rows))
        return
    width = max(len(row["name"]) for row in rows) + len("sample:")
    for row in rows:
        shape = "x".join(str(s) for s in row["shape"]) if shapes else ""
        shape_column = f"{shape:<12}  " if shapes else ""
        click.echo(f"{'sample:' + row['name']:<{width}}  {row['source']:<12}  {shape_column}{row['description']}")
    click.echo(f"{len(rows)} images, all offline; any PNG/JPEG/TIFF file path works too.")
