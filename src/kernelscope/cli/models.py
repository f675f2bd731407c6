"""``kernelscope models``: the pretrained networks installed packages ship, and the architectures kernelscope builds."""

from __future__ import annotations

import json

import click


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def models_command(as_json: bool) -> None:
    """List the pretrained networks (name, architecture, training data, input, licence, file, whether
    installed) and the architectures --arch accepts.
    """
    import importlib.util

    from kernelscope.models.pretrained import PRETRAINED
    from kernelscope.models.standard import standard_names
    from kernelscope.models.zoo import model_names

    def installed(origin: str) -> bool:
        package = origin.split(":")[0].strip()
        if package.startswith("kernelscope/"):
            return True
        return importlib.util.find_spec(package.replace("-", "_")) is not None

    rows = []
    for entry in PRETRAINED.values():
        row = entry.row()
        row["installed"] = "yes" if installed(entry.origin) else f"no ({entry.install})"
        rows.append(row)
    archs = {"zoo": model_names(), "standard (torchvision keys)": standard_names(),
             "your own": ["package.module:callable (runs your code)"]}
    if as_json:
        click.echo(json.dumps({"pretrained": rows, "architectures": archs}, indent=2))
        return
    for row in rows:
        click.echo(row["name"])
        for key in ("architecture", "training data", "input", "licence", "file", "installed"):
            click.echo(f"  {key:<14} {row[key]}")
    click.echo("")
    click.echo("architectures for --arch (state dicts and safetensors):")
    for kind, names in archs.items():
        click.echo(f"  {kind}: {', '.join(names)}")
